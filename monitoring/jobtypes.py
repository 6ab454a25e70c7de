"""The monitoring job type: the cron table's health check, every five minutes by default
(CRON_HEALTH), on the cleanup workers' queue."""

from __future__ import annotations

from supworker.jobtypes import JobType, declare

declare(
    JobType(
        "monitoring.health", queue="cleanup", high_queue="cleanup", priority=0, timeout=60,
        published=False, cron="*/5 * * * *",
    ),
)  # fmt: skip
