"""The pinned rq, django-rq and rq-scheduler work together as real processes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import django_rq
import pytest
from rq.job import Job

from tests.helpers import start_manage, stop, wait_for
from tests.rq_probe import record

pytestmark = pytest.mark.slow


def test_rqscheduler_process_enqueues_a_due_job_that_a_worker_process_runs(redis_conn, tmp_path):
    scheduler = django_rq.get_scheduler("cleanup")
    job = scheduler.enqueue_at(datetime.now(UTC) - timedelta(seconds=1), record, "probe:result", "ran")
    queue = django_rq.get_queue("cleanup")
    assert queue.count == 0, "a scheduled job must wait for the scheduler, not sit on the queue"

    processes = [
        start_manage("rqscheduler", "--queue", "cleanup", "--interval", "1", log_path=tmp_path / "scheduler.log"),
        start_manage("rqworker", "cleanup", log_path=tmp_path / "worker.log"),
    ]
    try:
        mark = wait_for(lambda: redis_conn.get("probe:result"), 45, "the scheduled job to run in the worker")
    finally:
        codes = [stop(process) for process in processes]

    value, pid = mark.decode().split(":")
    assert value == "ran" and int(pid) != os.getpid()
    finished = Job.fetch(job.id, connection=redis_conn)
    assert finished.get_status() == "finished"
    assert finished.return_value() == mark.decode()
    assert codes == [0, 0], "scheduler and worker should exit cleanly on SIGTERM"
