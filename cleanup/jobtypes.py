"""The cleanup job types: one per cleanup in cleanup/registry.py, each with its default cron
schedule (UTC, the Node worker's; `CRON_<NAME>=off` or another expression changes it).

Publishers may ask for the retention cleanups (`cleanup.stories` …) with options in `data`;
the others run by the cron table only.
"""

from __future__ import annotations

from typing import Literal

from supworker.jobtypes import Domain, JobType, QueueSpec, WorkerKind, declare
from supworker.payloads import FreeForm, Message


def _cleanup(name: str, cron: str, *, timeout: int = 120, published: bool = True) -> JobType:
    return JobType(f"cleanup.{name}", "cleanup", "cleanup", 0, timeout, published=published, cron=cron)


JOB_TYPES = (
    _cleanup("stories", "0 * * * *"),
    _cleanup("sessions", "0 0 * * *"),
    _cleanup("messages", "0 1 * * *"),
    _cleanup("temp_files", "0 2 * * *"),
    _cleanup("prekeys", "0 4 * * *"),
    _cleanup("orphaned_media", "0 5 * * 0"),
    # VACUUM cannot be split into short steps: maintenance gets a long timeout.
    _cleanup("maintenance", "0 3 * * *", timeout=1800, published=False),
    _cleanup("statistics", "0 */6 * * *", timeout=600, published=False),
    _cleanup("websockets", "*/15 * * * *", published=False),
    _cleanup("job_records", "30 3 * * *", published=False),
    _cleanup("retention", "45 3 * * *", timeout=600, published=False),
)
PUBLISHED = tuple(job_type.short_name for job_type in JOB_TYPES if job_type.published)


class CleanupJob(Message):
    type: Literal[PUBLISHED]  # type: ignore[valid-type]
    data: FreeForm | None = None


declare(
    WorkerKind("cleanup", (QueueSpec("cleanup", 120),)),
    Domain("cleanup", CleanupJob, rabbit_queue="cleanup", adoptable=True),
    *JOB_TYPES,
)
