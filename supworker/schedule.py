"""The cron table, registered with rq-scheduler under stable ids.

Its entries are the job types that declare a `cron` (each app's jobtypes.py), under their
short names (`stories`, `health`), with CRON_<NAME> from the settings; each tick runs its job
type through the runner like any job.

Registering again changes nothing that is already right, replaces an entry whose schedule
changed, and unschedules entries that left the table (or were set to off).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import django_rq
from django.conf import settings
from django.utils import timezone
from rq_scheduler import Scheduler

from supworker import jobtypes
from supworker.envelope import Envelope
from supworker.runner import run_batch

ID_PREFIX = "supworker-cron-"
RUN = "supworker.schedule.run_scheduled"


@dataclass(frozen=True)
class CronEntry:
    name: str
    cron: str

    @property
    def id(self) -> str:
        return ID_PREFIX + self.name


def cron_table() -> list[CronEntry]:
    return [CronEntry(name, cron) for name, cron in settings.CONFIG.cron.items() if cron != "off"]


def scheduled_type(name: str) -> jobtypes.JobType:
    """The job type of the cron entry `name`."""
    return next(job_type for job_type in jobtypes.scheduled() if job_type.short_name == name)


def scheduler() -> Scheduler:
    """rq-scheduler on the queues' Redis (they all share one)."""
    return django_rq.get_scheduler(jobtypes.scheduled()[0].queue)


def run_scheduled(name: str) -> dict[str, int]:
    """What a cron entry runs: its job type as a job of its own, one job id per tick.

    Going through the runner gives a scheduled run the same job record, retries and dead
    letters as any job; a tick run twice (two schedulers) is recognised by its job id.
    """
    tick = timezone.now().strftime("%Y%m%dT%H%M")
    job_type = scheduled_type(name)
    envelope = Envelope(job_id=f"cron:{name}:{tick}", job_type=job_type.name, payload={"type": name})
    return run_batch([envelope.to_dict()])


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
            queue_name=scheduled_type(entry.name).queue,
            timeout=scheduled_type(entry.name).timeout,
            result_ttl=settings.CONFIG.job_result_ttl,
            use_local_timezone=False,
        )
    return report


def next_runs(scheduler: Scheduler) -> list[tuple[CronEntry, datetime | None]]:
    """The table as configured, with each entry's next run as the scheduler knows it."""
    present = registered(scheduler)
    return [(entry, present.get(entry.id, (None, None))[1]) for entry in cron_table()]
