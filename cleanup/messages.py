"""Messages older than MESSAGE_RETENTION_DAYS (365), by MESSAGE_RETENTION_POLICY:
archive (gzipped JSON lines written to storage under archive/, then deleted), delete, or off.
Their media goes with them.

Each batch is the oldest rows in (created_at, id) order, so a batch interrupted after its
archive was written is the same batch next time and overwrites the same archive object.
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.db import connection

from cleanup.base import Cleanup, Run, after_clause, count
from supworker import storage

OLD = "created_at < %s"
COLUMNS = ("id", "sender_id", "chat_id", "content", "media_url", "thumbnail_url", "media_metadata",
           "created_at", "updated_at", "deleted_at")  # fmt: skip


def archive_key(rows: list[dict]) -> str:
    first, last = rows[0], rows[-1]
    return f"archive/messages/{first['created_at']:%Y/%m/%d}/{first['id']}_{last['id']}.jsonl.gz"


class Messages(Cleanup):
    name = "messages"
    progress_counts = ("messages_removed",)

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(days=settings.CONFIG.cleanup.message_retention_days)

    def work(self, run: Run) -> None:
        policy = settings.CONFIG.cleanup.message_policy
        run.counts[f"policy_{policy}"] = 1
        if policy == "off":
            return
        if run.dry_run:
            run.counts["messages_to_remove"] = self.expected(run)
            return
        cutoff = self.cutoff(run)
        run.walk(lambda after: self._remove(cutoff, run.batch_size, policy == "archive", after), "messages_removed")

    def expected(self, run: Run) -> int:
        if settings.CONFIG.cleanup.message_policy == "off":
            return 0
        return count("messages", OLD, [self.cutoff(run)])

    def _remove(
        self, cutoff: datetime, limit: int, archive: bool, after: tuple | None
    ) -> tuple[dict[str, int], tuple | None]:
        resume, resume_params = after_clause("created_at, id", after)
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(COLUMNS)} FROM messages WHERE {OLD}{resume} "  # noqa: S608 - constants
                "ORDER BY created_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                [cutoff, *resume_params, limit],
            )
            rows = [dict(zip(COLUMNS, row, strict=True)) for row in cursor.fetchall()]
            if not rows:
                return {"messages_removed": 0}, None
            counts = {}
            if archive:
                lines = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode()
                storage.replace(archive_key(rows), ContentFile(gzip.compress(lines)))
                counts["archives_written"] = 1
            counts["media_files_deleted"] = storage.delete(
                storage.key_of(row[column]) for row in rows for column in ("media_url", "thumbnail_url")
            )
            cursor.execute("DELETE FROM messages WHERE id = ANY(%s)", [[row["id"] for row in rows]])
        return counts | {"messages_removed": len(rows)}, (rows[-1]["created_at"], rows[-1]["id"])
