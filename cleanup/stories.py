"""Stories older than STORY_TTL_HOURS (24) expire: deleted_at is set and their media removed from
storage; rows soft-deleted more than STORY_PURGE_AFTER_DAYS ago are purged."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup.base import Cleanup, Run, after_clause, count
from supworker import storage

EXPIRED = "deleted_at IS NULL AND created_at < %s"
PURGEABLE = "deleted_at < %s"


class Stories(Cleanup):
    name = "stories"
    progress_counts = ("stories_expired", "stories_purged")

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(hours=settings.CONFIG.cleanup.story_ttl_hours)

    def work(self, run: Run) -> None:
        if run.dry_run:
            run.counts.update(self._pending(run))
            return
        now = timezone.now()
        cutoff, purge_before = self._cutoffs(run, now)
        run.walk(lambda after: self._expire(cutoff, now, run.batch_size, after), "stories_expired")
        run.delete_all("stories", PURGEABLE, [purge_before], "deleted_at, id", "stories_purged")

    def expected(self, run: Run) -> int:
        return sum(self._pending(run).values())

    def _cutoffs(self, run: Run, now: datetime) -> tuple[datetime, datetime]:
        """Stories created before the first expire; those deleted before the second are purged."""
        return now - self.older_than(run), now - timedelta(days=settings.CONFIG.cleanup.story_purge_after_days)

    def _pending(self, run: Run) -> dict[str, int]:
        cutoff, purge_before = self._cutoffs(run, timezone.now())
        return {
            "stories_to_expire": count("stories", EXPIRED, [cutoff]),
            "stories_to_purge": count("stories", PURGEABLE, [purge_before]),
        }

    def _expire(
        self, cutoff: datetime, now: datetime, limit: int, after: tuple | None
    ) -> tuple[dict[str, int], tuple | None]:
        resume, resume_params = after_clause("created_at, id", after)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, media_url, thumbnail_url, created_at FROM stories WHERE {EXPIRED}{resume} "  # noqa: S608
                "ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [cutoff, *resume_params, limit],
            )
            rows = cursor.fetchall()
            # Files first, then the rows: a crash in between leaves rows a rerun expires again,
            # never files nothing points to.
            files = storage.delete(storage.key_of(url) for _, *urls, _ in rows for url in urls)
            cursor.execute(
                "UPDATE stories SET deleted_at = %s, media_url = NULL, thumbnail_url = NULL WHERE id = ANY(%s)",
                [now, [row[0] for row in rows]],
            )
        last = (rows[-1][3], rows[-1][0]) if rows else None
        return {"stories_expired": len(rows), "story_files_deleted": files}, last
