"""RQ entry points: `cleanup.<name>` jobs, and the cron table's scheduled runs."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils import timezone

from cleanup.base import Options
from cleanup.registry import CLEANUPS
from supworker.enqueue import Submission, enqueue, redis_connection
from supworker.envelope import Envelope
from supworker.handlers import handles
from supworker.policy import POLICIES
from supworker.runner import run_batch

PART = ":part"


def continue_later(envelope: Envelope) -> str:
    """Enqueue the rest of a cleanup that ran out of its time budget; returns the new job id."""
    root, _, number = envelope.job_id.partition(PART)
    job_id = f"{root}{PART}{int(number or 1) + 1}"
    follow_up = Envelope(job_id=job_id, job_type=envelope.job_type, payload=envelope.payload)
    queue = POLICIES[envelope.job_type].queue
    enqueue(redis_connection(), [Submission(follow_up, f"id:{job_id}", settings.CONFIG.job_dedup_ttl)], {job_id: queue})
    return job_id


def _handler(name: str):
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
    """What a cron entry runs: the cleanup as a job of its own, one job id per tick.

    Going through the runner gives a scheduled run the same job record, retries and dead
    letters as any job; a tick run twice (two schedulers) is recognised by its job id.
    """
    tick = timezone.now().strftime("%Y%m%dT%H%M")
    envelope = Envelope(job_id=f"cron:{name}:{tick}", job_type=f"cleanup.{name}", payload={"type": name})
    return run_batch([envelope.to_dict()])
