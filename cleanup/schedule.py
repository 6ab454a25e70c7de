"""The cron table, registered with rq-scheduler under stable ids.

Registering again changes nothing that is already right, replaces an entry whose schedule
changed, and unschedules entries that left the table (or were set to off).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from rq_scheduler import Scheduler

from supworker.policy import POLICIES

ID_PREFIX = "supworker-cron-"
RUN = "cleanup.jobs.run_scheduled"


@dataclass(frozen=True)
class CronEntry:
    name: str
    cron: str

    @property
    def id(self) -> str:
        return ID_PREFIX + self.name


def cron_table() -> list[CronEntry]:
    return [CronEntry(name, cron) for name, cron in settings.CONFIG.cleanup.cron.items() if cron != "off"]


def registered(scheduler: Scheduler) -> dict[str, tuple]:
    """Our entries in the scheduler: id -> (job, next run time, aware UTC; rq-scheduler's are naive)."""
    return {
        job.id: (job, when.replace(tzinfo=UTC) if when.tzinfo is None else when)
        for job, when in scheduler.get_jobs(with_times=True)
        if job.id.startswith(ID_PREFIX)
    }


def register(scheduler: Scheduler) -> dict[str, list[str]]:
    wanted = {entry.id: entry for entry in cron_table()}
    present = registered(scheduler)
    report: dict[str, list[str]] = {"added": [], "changed": [], "unchanged": [], "removed": []}
    for job_id, (job, _) in present.items():
        if job_id not in wanted:
            scheduler.cancel(job)
            report["removed"].append(job_id)
    for job_id, entry in wanted.items():
        if job_id in present:
            job = present[job_id][0]
            if job.meta.get("cron_string") == entry.cron and job.func_name == RUN:
                report["unchanged"].append(job_id)
                continue
            scheduler.cancel(job)
            report["changed"].append(job_id)
        else:
            report["added"].append(job_id)
        scheduler.cron(
            entry.cron,
            func=RUN,
            args=[entry.name],
            id=entry.id,
            queue_name=POLICIES[f"cleanup.{entry.name}"].queue,
            timeout=POLICIES[f"cleanup.{entry.name}"].timeout,
            result_ttl=settings.CONFIG.job_result_ttl,
            use_local_timezone=False,
        )
    return report


def next_runs(scheduler: Scheduler) -> list[tuple[CronEntry, datetime | None]]:
    """The table as configured, with each entry's next run as the scheduler knows it."""
    present = registered(scheduler)
    return [(entry, present.get(entry.id, (None, None))[1]) for entry in cron_table()]
