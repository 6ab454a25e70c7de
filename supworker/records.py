"""The job records in PostgreSQL: one JobRun per job id, a DeadLetter per job given up on.

Written in bulk, one statement per batch, by the worker that runs the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db.models import Q
from django.utils import timezone

from supworker.envelope import Envelope
from supworker.handlers import Outcome
from supworker.masking import mask_payload
from supworker.models import DeadLetter, JobRun
from supworker.models.job_records import JobStatus

_START_FIELDS = ["job_type", "queue", "rq_job_id", "status", "attempts", "payload", "started_at"]
_FINISH_FIELDS = ["status", "result", "error", "traceback", "finished_at", "duration_ms"]


def start(envelopes: list[Envelope], queue: str, rq_job_id: str) -> list[Envelope]:
    """Mark the batch's items running; return those not already done (a redelivered job skips them)."""
    done = set(
        JobRun.objects.filter(job_id__in=[e.job_id for e in envelopes], status=JobStatus.SUCCEEDED).values_list(
            "job_id", flat=True
        )
    )
    pending = [e for e in envelopes if e.job_id not in done]
    now = timezone.now()
    JobRun.objects.bulk_create(
        [
            JobRun(
                job_id=e.job_id,
                job_type=e.job_type,
                queue=queue,
                rq_job_id=rq_job_id,
                status=JobStatus.RUNNING,
                attempts=e.attempt + 1,
                payload=mask_payload(e.payload),
                enqueued_at=datetime.fromtimestamp(e.received_at, UTC),
                started_at=now,
            )
            for e in pending
        ],
        update_conflicts=True,
        unique_fields=["job_id"],
        update_fields=_START_FIELDS,
    )
    return pending


def unfinished(envelopes: list[Envelope], rq_job_id: str) -> list[Envelope]:
    """Those of RQ job `rq_job_id` whose record is not settled: neither succeeded nor failed, nor
    handed by that job to a retry job of their own."""
    settled = set(
        JobRun.objects.filter(job_id__in=[e.job_id for e in envelopes])
        .filter(
            Q(status__in=[JobStatus.SUCCEEDED, JobStatus.FAILED]) | Q(status=JobStatus.RETRYING, rq_job_id=rq_job_id)
        )
        .values_list("job_id", flat=True)
    )
    return [e for e in envelopes if e.job_id not in settled]


def finish(outcomes: list[Outcome], statuses: dict[str, str], started: datetime) -> None:
    """Record each item's outcome; `statuses` maps job id to its new JobStatus."""
    now = timezone.now()
    duration_ms = int((now - started).total_seconds() * 1000)
    JobRun.objects.bulk_create(
        [
            JobRun(
                job_id=o.job_id,
                status=statuses[o.job_id],
                result=o.result if o.ok else None,
                error=o.error,
                traceback=o.traceback,
                finished_at=now,
                duration_ms=duration_ms,
            )
            for o in outcomes
        ],
        update_conflicts=True,
        unique_fields=["job_id"],
        update_fields=_FINISH_FIELDS,
    )


def dead_letter(envelope: Envelope, error: str, first_attempt_at: datetime | None = None) -> None:
    """Keep a job the worker gave up on, once per job id, with what an operator needs to requeue it."""
    DeadLetter.objects.update_or_create(
        job_id=envelope.job_id,
        source=DeadLetter.Source.WORKER,
        defaults={
            "job_type": envelope.job_type,
            "routing_key": envelope.routing_key,
            "payload": mask_payload(envelope.payload),
            "envelope": envelope.to_dict(),
            "error": error,
            "attempts": envelope.attempt + 1,
            "first_attempt_at": first_attempt_at or datetime.fromtimestamp(envelope.received_at, UTC),
            "failed_at": timezone.now(),
            "requeued_at": None,
        },
    )
