"""Stories older than STORY_TTL_HOURS (24) expire: deleted_at is set and their media removed from
storage; rows soft-deleted more than STORY_PURGE_AFTER_DAYS ago are purged."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from cleanup import storage
from cleanup.base import Cleanup, Run, count, delete_batch

EXPIRED = "deleted_at IS NULL AND created_at < %s"


class Stories(Cleanup):
    name = "stories"

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(hours=settings.CONFIG.cleanup.story_ttl_hours)

    def work(self, run: Run) -> None:
        now = timezone.now()
        cutoff = now - self.older_than(run)
        purge_before = now - timedelta(days=settings.CONFIG.cleanup.story_purge_after_days)
        if run.dry_run:
            run.counts["stories_to_expire"] = count("stories", EXPIRED, [cutoff])
            run.counts["stories_to_purge"] = count("stories", "deleted_at < %s", [purge_before])
            return
        run.repeat(lambda: self._expire(cutoff, now, run.batch_size), "stories_expired")
        run.repeat(
            lambda: {"stories_purged": delete_batch("stories", "deleted_at < %s", [purge_before], run.batch_size)},
            "stories_purged",
        )

    def _expire(self, cutoff, now, limit: int) -> dict[str, int]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT id, media_url, thumbnail_url FROM stories WHERE {EXPIRED} "  # noqa: S608 - constant
                "ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED",
                [cutoff, limit],
            )
            rows = cursor.fetchall()
            # Files first, then the rows: a crash in between leaves rows a rerun expires again,
            # never files nothing points to.
            files = storage.delete(storage.key_of(url) for _, *urls in rows for url in urls)
            cursor.execute(
                "UPDATE stories SET deleted_at = %s, media_url = NULL, thumbnail_url = NULL WHERE id = ANY(%s)",
                [now, [row[0] for row in rows]],
            )
        return {"stories_expired": len(rows), "story_files_deleted": files}
