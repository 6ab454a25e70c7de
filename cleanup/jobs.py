"""RQ entry points: `cleanup.<name>` jobs, one handler per cleanup in the registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings

from cleanup.base import Options
from cleanup.registry import CLEANUPS
from supworker import jobtypes, schedule
from supworker.enqueue import Submission, enqueue, redis_connection
from supworker.envelope import Envelope
from supworker.handlers import handles

PART = ":part"


def continue_later(envelope: Envelope) -> str:
    """Enqueue the rest of a cleanup that ran out of its time budget; returns the new job id."""
    root, _, number = envelope.job_id.partition(PART)
    job_id = f"{root}{PART}{int(number or 1) + 1}"
    follow_up = Envelope(job_id=job_id, job_type=envelope.job_type, payload=envelope.payload)
    queue = jobtypes.job_type(envelope.job_type).queue
    enqueue(redis_connection(), [Submission(follow_up, f"id:{job_id}", settings.CONFIG.job_dedup_ttl)], {job_id: queue})
    return job_id


def _handler(name: str) -> Callable[[Envelope], dict[str, Any]]:
    def handle(envelope: Envelope) -> dict[str, Any]:
        summary = CLEANUPS[name](Options.from_payload(envelope.payload.get("data")))
        if summary.get("more"):
            summary["continued_as"] = continue_later(envelope)
        return summary

    handle.__name__ = f"cleanup_{name}"
    return handle


for _name in CLEANUPS:
    handles(f"cleanup.{_name}")(_handler(_name))


def run_scheduled(name: str) -> dict[str, int]:
    """What cron ticks enqueued before the cron table moved to supworker.schedule still call."""
    return schedule.run_scheduled(name)
