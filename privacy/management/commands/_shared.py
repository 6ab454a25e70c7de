"""What erase_user and export_user share: a job run in this process, recorded like a worker's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core.management.base import CommandError, OutputWrapper
from django.utils import timezone

from supworker.envelope import Envelope
from supworker.handlers import one_at_a_time
from supworker.runner import run_here


def run_now(job_type: str, payload: dict[str, Any], work: Callable[[Envelope], dict[str, Any]]) -> dict[str, Any]:
    """Run `work` as a job of `job_type` (a job record; a dead letter an operator can requeue to a
    worker if it fails); its result, or a CommandError with the recorded reason."""
    envelope = Envelope(job_id=f"cli:{job_type}:{timezone.now():%Y%m%dT%H%M%S%f}", job_type=job_type, payload=payload)
    settled = run_here([envelope], one_at_a_time(work))
    outcome = settled[0].outcome
    if not outcome.ok:
        raise CommandError(f"{job_type} failed: {outcome.error}")
    return outcome.result


def print_counts(out: OutputWrapper, counts: dict[str, Any]) -> None:
    """One line a count; None (a dry run's count not known before the run) is shown as unknown."""
    width = max([24, *map(len, counts)])
    for name, value in sorted(counts.items()):
        out.write(f"  {name:<{width}} {'unknown' if value is None else f'{value:,}':>12}")
