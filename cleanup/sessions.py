"""user_sessions not active for SESSION_INACTIVE_DAYS (30) are removed."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from cleanup.base import Cleanup, Run, count

# Two conditions, each with its own (column, id) index, rather than one OR that uses neither.
INACTIVE = [
    ("last_active_at < %s", "last_active_at, id"),
    ("last_active_at IS NULL AND created_at < %s", "created_at, id"),
]


class Sessions(Cleanup):
    name = "sessions"
    progress_counts = ("sessions_removed",)

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(days=settings.CONFIG.cleanup.session_inactive_days)

    def work(self, run: Run) -> None:
        if run.dry_run:
            run.counts["sessions_to_remove"] = self.expected(run)
            return
        cutoff = self.cutoff(run)
        for where, order in INACTIVE:
            run.delete_all("user_sessions", where, [cutoff], order, "sessions_removed")

    def expected(self, run: Run) -> int:
        cutoff = self.cutoff(run)
        return sum(count("user_sessions", where, [cutoff]) for where, _ in INACTIVE)
