"""The dashboard's search box: a job's records and dead letters, by its job id or its RQ job's id.

A job id (the envelope's jobId) is looked up in job_runs and dead_letters by their indexes. An
RQ job id is looked up in RQ itself, whose job names the job ids of its batch in its arguments,
for as long as RQ keeps the job: while it waits or runs, JOB_RESULT_TTL after it succeeds,
JOB_FAILURE_TTL after it fails. job_runs.rq_job_id has no index, so the records are not scanned
for an RQ job RQ has forgotten (a full scan of a table that holds JOB_RECORD_RETENTION_DAYS).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django_rq.settings import get_queues_map
from rq.exceptions import DeserializationError, NoSuchJobError
from rq.job import JOB_ID_PATTERN, Job

from supworker.enqueue import RUN_BATCH, redis_connection
from supworker.models import DeadLetter, JobRun

SHOWN = 50  # records of each kind listed; an RQ batch can hold more jobs than a page should


@dataclass
class RqJob:
    id: str
    queue: str
    queue_index: int | None  # django-rq's, for the link to its page of the job
    status: str
    job_ids: list[str]


@dataclass
class Found:
    text: str
    runs: list[JobRun] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    rq_job: RqJob | None = None  # when the text is the id of an RQ job RQ still holds


def rq_job(rq_job_id: str) -> RqJob | None:
    """The RQ batch job with this id, if RQ still holds it, with the job ids it carries."""
    if not JOB_ID_PATTERN.fullmatch(rq_job_id):
        return None  # not an RQ job id (RQ would read "a:b" as the job "a")
    try:
        job = Job.fetch(rq_job_id, connection=redis_connection())
        items = job.args[0] if job.func_name == RUN_BATCH and job.args else []
    except (NoSuchJobError, DeserializationError):
        return None
    job_ids = [item["job_id"] for item in items]
    return RqJob(
        id=job.id,
        queue=job.origin,
        queue_index=get_queues_map().get(job.origin),
        status=job.get_status(refresh=False).value,
        job_ids=job_ids,
    )


def find(text: str) -> Found:
    text = text.strip()
    found = Found(text=text)
    if not text:
        return found
    job_ids = [text]
    found.runs = list(JobRun.objects.filter(job_id=text))
    if not found.runs:
        found.rq_job = rq_job(text)
        if found.rq_job:
            job_ids = found.rq_job.job_ids[:SHOWN]
            found.runs = list(JobRun.objects.filter(job_id__in=job_ids).order_by("enqueued_at"))
    found.dead_letters = list(DeadLetter.objects.filter(job_id__in=job_ids).order_by("-failed_at")[:SHOWN])
    return found
