"""The batch runner: per-item success, permanent failure, retries with backoff, dead letters.

Real RQ (SimpleWorker, in this process), real Redis and PostgreSQL. The job types here are
test types whose handlers count their calls; the runner under test treats them like any other.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from supworker import handlers, jobtypes
from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope
from supworker.handlers import PermanentError, TransientError
from supworker.models import DeadLetter, JobRun
from supworker.stats import job_counts
from tests.helpers import drain_queue

# Run again through PgBouncer in transaction mode by `make test`.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.pgbouncer]
QUEUE = "cleanup"
calls: Counter[str] = Counter()
failures_left: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def test_job_types(monkeypatch, rabbit_names):
    """Job types whose behaviour each test chooses, registered like a domain app's jobs.py does."""
    calls.clear()
    failures_left.clear()
    # Registrations last for this test only: the table (every app's handlers loaded first) is
    # restored whole afterwards.
    handlers.load_handlers()
    monkeypatch.setattr(handlers, "_HANDLERS", dict(handlers._HANDLERS))
    for name in ("test.item", "test.batch"):
        monkeypatch.setitem(
            jobtypes._JOB_TYPES,
            name,
            jobtypes.JobType(name, queue=QUEUE, high_queue=QUEUE, priority=0, timeout=10, batch_size=10),
        )

    @handlers.handles("test.item")
    def item(envelope: Envelope) -> dict:
        calls[envelope.job_id] += 1
        behaviour = envelope.payload["behaviour"]
        if behaviour == "broken":
            raise PermanentError("the file is not an image")
        if behaviour == "flaky" and failures_left[envelope.job_id] > 0:
            failures_left[envelope.job_id] -= 1
            raise TransientError("upstream answered 503", retry_after=envelope.payload.get("retryAfter"))
        if behaviour == "down":
            raise ConnectionError("connection refused")
        return {"done": envelope.job_id}


def submit(redis_conn, *specs: tuple[str, str], job_type: str = "test.item", **payload) -> list[Envelope]:
    envelopes = [
        Envelope(job_id=job_id, job_type=job_type, payload={"behaviour": behaviour, "secretToken": "tok"} | payload)
        for job_id, behaviour in specs
    ]
    enqueue(redis_conn, [Submission(e, f"id:{e.job_id}", 600) for e in envelopes], {e.job_id: QUEUE for e in envelopes})
    return envelopes


def work(redis_conn, rounds: int = 1) -> None:
    drain_queue(redis_conn, QUEUE, rounds)


def test_items_of_a_batch_succeed_fail_and_retry_each_on_their_own(redis_conn):
    failures_left["flaky-1"] = 2
    submit(redis_conn, ("ok-1", "ok"), ("broken-1", "broken"), ("flaky-1", "flaky"))
    work(redis_conn, rounds=4)

    runs = {run.job_id: run for run in JobRun.objects.all()}
    assert runs["ok-1"].status == "succeeded" and runs["ok-1"].result == {"done": "ok-1"}
    assert runs["broken-1"].status == "failed" and "not an image" in runs["broken-1"].error
    assert 'raise PermanentError("the file is not an image")' in runs["broken-1"].traceback
    assert runs["ok-1"].traceback == ""
    assert runs["flaky-1"].status == "succeeded" and runs["flaky-1"].attempts == 3
    assert calls == Counter({"ok-1": 1, "broken-1": 1, "flaky-1": 3}), "a permanent failure is never retried"
    assert runs["ok-1"].payload["secretToken"] == "***", "records keep payloads masked"

    letter = DeadLetter.objects.get()
    assert (letter.job_id, letter.source, letter.attempts) == ("broken-1", "worker", 1)
    assert letter.envelope["payload"]["secretToken"] == "tok"
    counts = job_counts(redis_conn)
    assert counts["test.item:succeeded"] == 2 and counts["test.item:failed"] == 1 and counts["test.item:retried"] == 2

    failed = FailedJobRegistry(queue=Queue(QUEUE, connection=redis_conn))
    (parked_id,) = failed.get_job_ids()
    parked = Job.fetch(parked_id, connection=redis_conn)
    assert [item["job_id"] for item in parked.args[0]] == ["broken-1"], "only the dead item is parked for requeue"
    assert "broken-1: PermanentError: the file is not an image" in parked.latest_result().exc_string


def test_transient_failures_are_retried_until_max_retries_then_dead_lettered(redis_conn):
    submit(redis_conn, ("down-1", "down"))
    work(redis_conn, rounds=6)
    run = JobRun.objects.get(job_id="down-1")
    assert run.status == "failed" and run.attempts == 4, "one try and MAX_RETRIES=3 retries"
    assert calls["down-1"] == 4
    letter = DeadLetter.objects.get(job_id="down-1")
    assert letter.attempts == 4 and "ConnectionError: connection refused" in letter.error


def test_a_retry_waits_for_the_backoff_or_the_providers_retry_after(redis_conn):
    failures_left["quota-1"] = failures_left["net-1"] = 1
    submit(redis_conn, ("quota-1", "flaky"), retryAfter=120)
    submit(redis_conn, ("net-1", "flaky"))
    before = datetime.now(UTC).timestamp()
    SimpleWorker([Queue(QUEUE, connection=redis_conn)], connection=redis_conn).work(burst=True)
    scheduled = ScheduledJobRegistry(queue=Queue(QUEUE, connection=redis_conn))
    when = {
        job.args[0][0]["job_id"]: scheduled.get_scheduled_time(job).timestamp()
        for job in (Queue(QUEUE, connection=redis_conn).fetch_job(i) for i in scheduled.get_job_ids())
    }
    assert when["quota-1"] - before >= 119, "Retry-After of two minutes is honoured"
    # BASE_DELAY_MS=50 in tests: 50 ms plus up to 30 % jitter, rounded to RQ's whole seconds.
    assert when["net-1"] - before < 5
    assert JobRun.objects.get(job_id="quota-1").status == "retrying"


def test_a_job_that_already_succeeded_is_not_run_again(redis_conn):
    (envelope,) = submit(redis_conn, ("once-1", "ok"))
    work(redis_conn)
    # The same job reaches RQ again (a requeue by hand, a lost ack): the runner skips it.
    Queue(QUEUE, connection=redis_conn).enqueue("supworker.runner.run_batch", [envelope.to_dict()])
    work(redis_conn)
    assert calls["once-1"] == 1
    assert JobRun.objects.get(job_id="once-1").attempts == 1


def test_a_job_type_without_handler_fails_permanently_with_a_clear_reason(redis_conn):
    submit(redis_conn, ("orphan-1", "ok"), job_type="test.batch")
    work(redis_conn)
    run = JobRun.objects.get(job_id="orphan-1")
    assert run.status == "failed" and "no handler is registered for job type 'test.batch'" in run.error


def test_requeue_from_the_admin_runs_a_dead_job_again_with_fresh_retries(redis_conn, client):
    failures_left["back-1"] = 1
    submit(redis_conn, ("back-1", "broken"))
    work(redis_conn)
    letter = DeadLetter.objects.get(job_id="back-1")
    assert letter.requeued_at is None

    staff = get_user_model().objects.create_superuser("operator", password="a-long-password")
    client.force_login(staff)
    changelist = reverse("admin:supworker_deadletter_changelist")
    response = client.post(changelist, {"action": "requeue_selected", "_selected_action": [letter.pk]}, follow=True)
    assert response.status_code == 200 and b"1 job(s) requeued" in response.content

    (item,) = [i for job in Queue(QUEUE, connection=redis_conn).get_jobs() for i in job.args[0]]
    assert item["job_id"] == "back-1" and item["attempt"] == 0
    assert JobRun.objects.get(job_id="back-1").status == "queued"
    letter.refresh_from_db()
    assert letter.requeued_at is not None
    work(redis_conn)
    assert calls["back-1"] == 2
