"""The one table that decides, per job type, where a job goes and how it is run and retried.

Priorities are the Node worker's (images 2, other media 1, push 3, e-mail and SMS 1); a
priority becomes a queue, because an RQ worker drains its queues in order. Small, frequent
jobs are micro-batched: one RQ job carries up to `batch_size` items, which saves RQ's
per-job cost while retries, idempotency and dead letters still hold item by item.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from django.conf import settings


@dataclass(frozen=True)
class JobPolicy:
    job_type: str
    queue: str  # the queue of normal priority
    high_queue: str  # where a message asking for priority "high" goes
    priority: int  # the Node worker's priority number, for people and metrics
    timeout: int  # seconds one item may take; a batch gets this per item, up to MAX_BATCH_TIMEOUT
    batch_size: int = 1

    def queue_for(self, requested: str | None) -> str:
        """A message may raise or lower its priority within its domain."""
        if requested == "high":
            return self.high_queue
        if requested == "low":
            return self.queue
        return self.high_queue if self.priority >= 2 else self.queue

    def batch_timeout(self, items: int) -> int:
        return min(self.timeout * max(items, 1), max(MAX_BATCH_TIMEOUT, self.timeout))


MAX_BATCH_TIMEOUT = 600

_MEDIA: dict[str, Any] = {"queue": "media", "high_queue": "media_high"}
_NOTIFY: dict[str, Any] = {"queue": "notifications", "high_queue": "notifications_high"}
_CLEANUP: dict[str, Any] = {"queue": "cleanup", "high_queue": "cleanup", "priority": 0, "timeout": 120}
CLEANUP_TYPES = ("stories", "sessions", "messages", "temp_files", "prekeys", "orphaned_media")
# Run by the cron table only; publishers cannot ask for them. VACUUM cannot be split into
# short steps, so maintenance gets a long timeout.
SCHEDULED_ONLY_TIMEOUTS = {"maintenance": 1800, "statistics": 600, "websockets": 120, "health": 60, "job_records": 120}

POLICIES: dict[str, JobPolicy] = {
    policy.job_type: policy
    for policy in [
        JobPolicy("media.image", priority=2, timeout=60, **_MEDIA),
        JobPolicy("media.video", priority=1, timeout=300, **_MEDIA),
        JobPolicy("media.audio", priority=1, timeout=60, **_MEDIA),
        JobPolicy("notification.push", priority=3, timeout=30, batch_size=500, **_NOTIFY),
        JobPolicy("notification.email", priority=1, timeout=30, batch_size=50, **_NOTIFY),
        JobPolicy("notification.sms", priority=1, timeout=30, batch_size=50, **_NOTIFY),
        # A person is waiting at a sign-in screen for this code: it goes with the pushes.
        JobPolicy("otp.email", priority=3, timeout=30, batch_size=50, **_NOTIFY),
        # With the pushes, first in first out: a device registered before a push is known to it.
        JobPolicy("device.register", priority=3, timeout=30, batch_size=100, **_NOTIFY),
        JobPolicy("device.unregister", priority=3, timeout=30, batch_size=100, **_NOTIFY),
        *(JobPolicy(f"cleanup.{name}", **_CLEANUP) for name in CLEANUP_TYPES),
        *(
            JobPolicy(f"cleanup.{name}", **(_CLEANUP | {"timeout": timeout}))
            for name, timeout in SCHEDULED_ONLY_TIMEOUTS.items()
        ),
    ]
}


def retry_delay(retries_done: int, retry_after: float | None = None) -> float:
    """Seconds before the next try: min(BASE * 2^n + up to 30 % jitter, MAX), at least Retry-After."""
    config = settings.CONFIG
    exponential = config.base_delay_ms * 2**retries_done
    jitter = random.uniform(0, 0.3 * exponential)  # noqa: S311 - spreading load, not security
    delay = min(exponential + jitter, config.max_delay_ms) / 1000
    return max(delay, retry_after or 0)
