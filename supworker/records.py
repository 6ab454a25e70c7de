"""The job records in PostgreSQL: one JobRun per job id, a DeadLetter per job given up on.

Written in bulk, one statement per batch, by the worker that runs the batch. The statements
name every column of `job_runs` with JobRun's defaults (supworker/models/job_records.py): a
column added there without a database default needs its value here too (the runner tests fail first).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from supworker.envelope import Envelope
from supworker.handlers import Outcome
from supworker.masking import mask_payload
from supworker.models import DeadLetter, JobRun
from supworker.models.job_records import JobStatus


def start(envelopes: list[Envelope], queue: str, rq_job_id: str) -> list[Envelope]:
    """Mark the batch's items running; return those not already done (a redelivered job skips them).

    One statement for the whole batch: rows that succeeded earlier are left as they are and not
    returned. (Django's bulk_create spent a quarter of a millisecond per item compiling this.)
    """
    if not envelopes:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO job_runs (id, job_id, job_type, queue, rq_job_id, status, attempts, payload, result,
                                  error, traceback, enqueued_at, started_at, finished_at, duration_ms)
            SELECT gen_random_uuid(), i.job_id, i.job_type, %s, %s, %s, i.attempts, i.payload, NULL,
                   '', '', i.enqueued_at, %s, NULL, NULL
            FROM unnest(%s::text[], %s::text[], %s::int[], %s::jsonb[], %s::timestamptz[])
                 AS i(job_id, job_type, attempts, payload, enqueued_at)
            ON CONFLICT (job_id) DO UPDATE SET
                job_type = EXCLUDED.job_type, queue = EXCLUDED.queue, rq_job_id = EXCLUDED.rq_job_id,
                status = EXCLUDED.status, attempts = EXCLUDED.attempts, payload = EXCLUDED.payload,
                started_at = EXCLUDED.started_at
            WHERE job_runs.status <> %s
            RETURNING job_id
            """,
            [
                queue,
                rq_job_id,
                JobStatus.RUNNING,
                timezone.now(),  # the clock finish() measures durations with
                [e.job_id for e in envelopes],
                [e.job_type for e in envelopes],
                [e.attempt + 1 for e in envelopes],
                [json.dumps(mask_payload(e.payload)) for e in envelopes],
                [datetime.fromtimestamp(e.received_at, UTC) for e in envelopes],
                JobStatus.SUCCEEDED,
            ],
        )
        started = {job_id for (job_id,) in cursor.fetchall()}
    return [e for e in envelopes if e.job_id in started]


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
    """Record each item's outcome; `statuses` maps job id to its new JobStatus. One statement."""
    if not outcomes:
        return
    now = timezone.now()
    duration_ms = int((now - started).total_seconds() * 1000)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO job_runs (id, job_id, job_type, queue, rq_job_id, status, attempts, payload, result,
                                  error, traceback, enqueued_at, started_at, finished_at, duration_ms)
            SELECT gen_random_uuid(), o.job_id, '', '', '', o.status, 0, '{}'::jsonb, o.result,
                   o.error, o.traceback, now(), NULL, %s, %s
            FROM unnest(%s::text[], %s::text[], %s::jsonb[], %s::text[], %s::text[])
                 AS o(job_id, status, result, error, traceback)
            ON CONFLICT (job_id) DO UPDATE SET
                status = EXCLUDED.status, result = EXCLUDED.result, error = EXCLUDED.error,
                traceback = EXCLUDED.traceback, finished_at = EXCLUDED.finished_at,
                duration_ms = EXCLUDED.duration_ms
            """,
            [
                now,
                duration_ms,
                [o.job_id for o in outcomes],
                [statuses[o.job_id] for o in outcomes],
                [json.dumps(o.result) if o.ok and o.result is not None else None for o in outcomes],
                [o.error for o in outcomes],
                [o.traceback for o in outcomes],
            ],
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
