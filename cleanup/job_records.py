"""Job records (job_runs) finished more than JOB_RECORD_RETENTION_DAYS (30) ago are removed;
dead letters stay until an operator deletes them."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

from cleanup.base import Cleanup, Run, count

FINISHED = "finished_at < %s"


class JobRecords(Cleanup):
    name = "job_records"
    progress_counts = ("job_records_removed",)

    @property
    def default_older_than(self) -> timedelta:
        return timedelta(days=settings.CONFIG.cleanup.job_record_retention_days)

    def work(self, run: Run) -> None:
        if run.dry_run:
            run.counts["job_records_to_remove"] = self.expected(run)
        else:
            run.delete_all("job_runs", FINISHED, [self.cutoff(run)], "finished_at, id", "job_records_removed")

    def expected(self, run: Run) -> int:
        return count("job_runs", FINISHED, [self.cutoff(run)])
