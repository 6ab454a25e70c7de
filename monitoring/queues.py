"""GET /metrics/queues: per RQ queue, what waits, runs, is scheduled, finished and failed; its
workers; the age of the oldest waiting job; and how long the backlog takes to drain at the
pace of the last five minutes (an estimate, as Zulip reports its queues)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone
from rq import Queue, Worker

from supworker import jobtypes
from supworker.enqueue import redis_connection
from supworker.models import JobRun

PACE_WINDOW = timedelta(minutes=5)


def _oldest_waiting_age(queue: Queue) -> float | None:
    job_ids = queue.get_job_ids(0, 1)  # offset 0, length 1: the head of the queue
    if not job_ids:
        return None
    job = queue.fetch_job(job_ids[0])
    if job is None or job.enqueued_at is None:
        return None
    enqueued = job.enqueued_at if job.enqueued_at.tzinfo else job.enqueued_at.replace(tzinfo=UTC)
    return round((datetime.now(UTC) - enqueued).total_seconds(), 3)


def _jobs_per_second() -> dict[str, float]:
    """RQ jobs (batches) finished per second in the pace window, per queue, from the job records."""
    since = timezone.now() - PACE_WINDOW
    rows = (
        JobRun.objects.filter(finished_at__gte=since)
        .exclude(rq_job_id="")
        .values("queue")
        .annotate(jobs=Count("rq_job_id", distinct=True))
    )
    return {row["queue"]: row["jobs"] / PACE_WINDOW.total_seconds() for row in rows}


def report() -> dict[str, Any]:
    connection = redis_connection()
    workers = Worker.all(connection=connection)
    pace = _jobs_per_second()
    queues = {}
    for spec in jobtypes.queues():
        queue = Queue(spec.name, connection=connection)
        waiting = queue.count
        rate = pace.get(spec.name, 0.0)
        queues[spec.name] = {
            "waiting": waiting,
            "active": queue.started_job_registry.count,
            "scheduled": queue.scheduled_job_registry.count,
            "deferred": queue.deferred_job_registry.count,
            "completed": queue.finished_job_registry.count,
            "failed": queue.failed_job_registry.count,
            "workers": sum(1 for w in workers if spec.name in w.queue_names()),
            "oldest_waiting_seconds": _oldest_waiting_age(queue),
            "jobs_per_second": round(rate, 4),
            "drain_seconds": round(waiting / rate, 1) if rate and waiting else (0.0 if not waiting else None),
        }
    return {"queues": queues, "workers": len(workers)}
