"""Every table supworker writes keeps its rows for a while, then loses them: the retentions the
apps declare (supworker/retention.py: dead letters, the notification log, health check
results, statistics snapshots), each deleted in batches like the other cleanups.

`--older-than` replaces every table's age limit for one run; a table set to keep its rows
forever (0 days) is never touched.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from cleanup.base import Cleanup, Run, count
from supworker.retention import Retention, retentions


def _where(retention: Retention) -> str:
    covered = f" AND ({retention.where})" if retention.where else ""
    return f"{retention.column} < %s{covered}"


class Retentions(Cleanup):
    name = "retention"

    @property
    def progress_counts(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(f"{retention.name}_removed" for retention in retentions())

    def _due(self, run: Run) -> list[tuple[Retention, timedelta]]:
        """The retentions that remove rows, with the age each keeps."""
        due = []
        for retention in retentions():
            days = retention.days()
            if days > 0:
                due.append((retention, run.options.older_than or timedelta(days=days)))
        return due

    def work(self, run: Run) -> None:
        now = timezone.now()
        for retention, age in self._due(run):
            params = [now - age]
            if run.dry_run:
                run.counts[f"{retention.name}_to_remove"] = count(retention.table, _where(retention), params)
                continue
            order = f"{retention.column}, id"
            run.delete_all(retention.table, _where(retention), params, order, f"{retention.name}_removed")
            if run.more:
                return  # out of time: the follow-up job starts again from the first table
        run.details["kept_days"] = {r.name: r.days() for r in retentions()}

    def expected(self, run: Run) -> int:
        now = timezone.now()
        return sum(count(r.table, _where(r), [now - age]) for r, age in self._due(run))
