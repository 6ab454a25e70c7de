"""Logs of a real worker: JSON lines in files and on the console, each line written during a
job carrying the job's id, queue and type; LOG_LEVEL honoured; error.log only errors."""

from __future__ import annotations

import json

import pytest

from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope
from tests.helpers import run_manage
from tests.ingest_fixtures import subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_job_s_log_lines_carry_its_id_queue_and_type(redis_conn, tmp_path):
    envelope = Envelope(job_id="log-probe-1", job_type="cleanup.websockets", payload={"type": "websockets"})
    enqueue(redis_conn, [Submission(envelope, "id:log-probe-1", 600)], {"log-probe-1": "cleanup"})
    env = subprocess_env({}) | {"LOG_JSON": "true", "LOG_DIR": str(tmp_path), "LOG_LEVEL": "INFO"}
    worker = run_manage("rqworker", "cleanup", "--burst", env=env, timeout=120)
    assert worker.returncode == 0, worker.stderr

    lines = [json.loads(line) for line in (tmp_path / "combined.log").read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    during_job = [line for line in lines if line["logger"] == "cleanup.base"]
    assert during_job, "the cleanup logs its summary"
    for line in during_job:
        assert line["queue"] == "cleanup" and line["job_type"] == "cleanup.websockets" and line["job_id"]
    assert not any(line["level"] == "DEBUG" for line in lines), "LOG_LEVEL=INFO leaves DEBUG out"
    console = [json.loads(line) for line in (worker.stdout + worker.stderr).splitlines() if line.startswith("{")]
    assert any(line.get("job_type") == "cleanup.websockets" for line in console), "the console speaks JSON too"
    errors = (tmp_path / "error.log").read_text().splitlines()
    assert all(json.loads(line)["level"] in ("ERROR", "CRITICAL") for line in errors)
