"""user_sessions not active for SESSION_INACTIVE_DAYS (30) are removed."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from cleanup.base import Cleanup, Run, count, delete_batch

# Two conditions, each served by its own index, rather than one OR that uses neither.
INACTIVE = [
    "last_active_at < %s",
    "last_active_at IS NULL AND created_at < %s",
]


class Sessions(Cleanup):
    name = "sessions"

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(days=settings.CONFIG.cleanup.session_inactive_days)

    def work(self, run: Run) -> None:
        cutoff = timezone.now() - self.older_than(run)
        for where in INACTIVE:
            if run.dry_run:
                run.counts["sessions_to_remove"] += count("user_sessions", where, [cutoff])
                continue
            run.repeat(
                lambda w=where: {"sessions_removed": delete_batch("user_sessions", w, [cutoff], run.batch_size)},
                "sessions_removed",
            )
