"""temporary_files rows older than TEMP_FILE_TTL_HOURS (24): the file goes, then the row. Files
that crashed jobs left in TEMP_DIR are swept too.

A row's file_path may be a storage key or a local path; a local path is deleted only inside
TEMP_DIR or MEDIA_ROOT, whatever a row says.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection

from cleanup.base import Cleanup, Run, after_clause, count
from supworker import storage

OLD = "created_at < %s"


def _inside(path: Path, *roots: Path) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(root.resolve()) and resolved != root.resolve() for root in roots)


def remove_path(file_path: str) -> bool:
    """Delete the file a row names; True if something was deleted."""
    path = Path(file_path)
    if path.is_absolute():
        if not _inside(path, settings.CONFIG.temp_dir, Path(settings.MEDIA_ROOT)) or not path.exists():
            return False
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        return True
    key = storage.key_of(file_path)
    return bool(key) and storage.delete([key]) > 0


class TempFiles(Cleanup):
    name = "temp_files"
    progress_counts = ("rows_removed",)  # the leftovers in TEMP_DIR are swept after, in one go

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(hours=settings.CONFIG.cleanup.temp_file_ttl_hours)

    def work(self, run: Run) -> None:
        cutoff = self.cutoff(run)
        if run.dry_run:
            run.counts["rows_to_remove"] = self.expected(run)
            run.counts["leftovers_to_sweep"] = len(self._leftovers(cutoff))
            return
        run.walk(lambda after: self._remove(cutoff, run.batch_size, after), "rows_removed")
        for leftover in self._leftovers(cutoff):
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
            run.counts["leftovers_swept"] += 1

    def expected(self, run: Run) -> int:
        return count("temporary_files", OLD, [self.cutoff(run)])

    def _remove(self, cutoff: datetime, limit: int, after: tuple | None) -> tuple[dict[str, int], tuple | None]:
        resume, resume_params = after_clause("created_at, id", after)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, file_path, created_at FROM temporary_files WHERE {OLD}{resume} "  # noqa: S608
                "ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [cutoff, *resume_params, limit],
            )
            rows = cursor.fetchall()
            files = sum(remove_path(path) for _, path, _ in rows)
            cursor.execute("DELETE FROM temporary_files WHERE id = ANY(%s)", [[row[0] for row in rows]])
        last = (rows[-1][2], rows[-1][0]) if rows else None
        return {"rows_removed": len(rows), "files_removed": files}, last

    def _leftovers(self, cutoff: datetime) -> list[Path]:
        """Entries of TEMP_DIR (per-job directories) untouched since the cutoff."""
        temp_dir = settings.CONFIG.temp_dir
        if not temp_dir.is_dir():
            return []
        return [p for p in temp_dir.iterdir() if p.stat().st_mtime < cutoff.timestamp()]
