"""The RQ queues and their defaults.

Priority is expressed the way RQ does it best: a worker listens to a high queue before the
normal one (`rqworker media_high media`), so under a backlog a high-priority job starts before
every waiting normal one, and each queue stays first in, first out.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueSpec:
    name: str
    default_timeout: int  # seconds; a job type may ask for more when it is enqueued


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("media_high", 60),
    QueueSpec("media", 60),
    QueueSpec("notifications_high", 30),
    QueueSpec("notifications", 30),
    QueueSpec("cleanup", 120),
)

# What each kind of worker listens to, highest priority first.
WORKER_QUEUES: dict[str, list[str]] = {
    "media": ["media_high", "media"],
    "notifications": ["notifications_high", "notifications"],
    "cleanup": ["cleanup"],
}


def rq_queues_setting(redis_url: str) -> dict[str, dict[str, object]]:
    """django-rq's RQ_QUEUES: every queue on the same Redis, with its default timeout."""
    return {spec.name: {"URL": redis_url, "DEFAULT_TIMEOUT": spec.default_timeout} for spec in QUEUES}
