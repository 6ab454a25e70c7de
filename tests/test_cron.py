"""The cron table in rq-scheduler, cleanups as RQ jobs, and `manage.py cleanup`."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import django_rq
import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from rq import Queue, SimpleWorker

from monitoring.models import HealthCheckResult
from supworker.enqueue import Submission, enqueue
from supworker.envelope import Envelope
from supworker.models import DeadLetter, JobRun, UserSession
from supworker.schedule import ID_PREFIX, register, registered
from supworker.stats import DURATION_KEY, job_counts
from tests.helpers import run_manage, run_manage_on_a_terminal, start_manage, stop, wait_for
from tests.ingest_fixtures import free_port, subprocess_env

pytestmark = pytest.mark.django_db(transaction=True)
BAR = "━"  # what rich draws a progress bar with


def with_cron(settings, **changes: str) -> None:
    settings.CONFIG = dataclasses.replace(settings.CONFIG, cron=settings.CONFIG.cron | changes)


def test_registering_the_table_twice_leaves_one_entry_per_job(redis_conn):
    scheduler = django_rq.get_scheduler("cleanup")
    first = register(scheduler)
    second = register(scheduler)
    assert len(first["added"]) == 13 and second == {
        "added": [],
        "changed": [],
        "unchanged": second["unchanged"],
        "removed": [],
    }
    assert len(second["unchanged"]) == 13
    ours = [job for job in scheduler.get_jobs() if job.id.startswith(ID_PREFIX)]
    assert sorted(job.id for job in ours) == sorted(ID_PREFIX + name for name in (
        "stories", "sessions", "messages", "temp_files", "maintenance", "prekeys",
        "statistics", "websockets", "health", "orphaned_media", "job_records", "retention", "expire_exports",
    ))  # fmt: skip
    times = {job.id.removeprefix(ID_PREFIX): when for job, when in registered(scheduler).values()}
    assert times["sessions"].hour == 0 and times["messages"].hour == 1 and times["maintenance"].hour == 3
    assert times["orphaned_media"].weekday() == 6, "weekly, on Sunday"


def test_a_changed_schedule_replaces_its_entry_and_an_entry_turned_off_is_unscheduled(redis_conn, settings):
    scheduler = django_rq.get_scheduler("cleanup")
    register(scheduler)
    with_cron(settings, sessions="30 2 * * *", health="off")
    report = register(scheduler)
    assert report["changed"] == [ID_PREFIX + "sessions"] and report["removed"] == [ID_PREFIX + "health"]
    entries = registered(scheduler)
    assert ID_PREFIX + "health" not in entries and len(entries) == 12
    job, when = entries[ID_PREFIX + "sessions"]
    assert job.meta["cron_string"] == "30 2 * * *" and (when.hour, when.minute) == (2, 30)


@pytest.mark.slow
def test_a_started_scheduler_enqueues_a_due_cron_job_that_a_worker_runs(redis_conn, tmp_path):
    scheduler = django_rq.get_scheduler("cleanup")
    register(scheduler)
    job, _ = registered(scheduler)[ID_PREFIX + "health"]
    scheduler.change_execution_time(job, datetime.now(UTC) - timedelta(seconds=1))  # due now

    env = subprocess_env({})
    processes = [
        start_manage("rqscheduler", "--queue", "cleanup", "--interval", "1", log_path=tmp_path / "sched.log", env=env),
        start_manage("rqworker", "cleanup", log_path=tmp_path / "worker.log", env=env),
    ]
    try:
        run = wait_for(
            lambda: JobRun.objects.filter(job_id__startswith="cron:health:", status="succeeded").first(),
            60,
            "the health check to run from the cron table",
        )
    finally:
        codes = [stop(p) for p in processes]
    assert run.job_type == "monitoring.health" and run.result["counts"]["postgresql_ok"] == 1
    assert HealthCheckResult.objects.filter(healthy=True).exists()
    _, next_run = registered(scheduler)[ID_PREFIX + "health"]
    assert next_run > datetime.now(UTC), "the entry is scheduled again for its next tick"
    assert codes == [0, 0]


def test_a_scheduler_sent_sigterm_again_and_again_stops_once_cleanly_and_keeps_the_cron_table(redis_conn, tmp_path):
    # A supervisor and an operator may both signal it, the process and then its group.
    log_path = tmp_path / "sched.log"
    process = start_manage("rqscheduler", "--queue", "cleanup", "--interval", "1", log_path=log_path)
    try:
        wait_for(lambda: "Registering birth" in log_path.read_text(), 60, "the scheduler to start")
        for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            if process.poll() is None:
                process.send_signal(signum)
                time.sleep(0.002)
        code = process.wait(20)
    finally:
        stop(process)
    output = log_path.read_text()
    assert code == 0, output
    assert "Traceback" not in output and output.count("Shutting down RQ scheduler") == 1, output
    entries = registered(django_rq.get_scheduler("cleanup"))
    assert len(entries) == 13 and all(when > datetime.now(UTC) for _, when in entries.values())


def submit_cleanup(redis_conn, name: str, data: dict | None = None, job_id: str | None = None) -> str:
    job_id = job_id or f"cleanup-{uuid.uuid4().hex[:8]}"
    payload = {"type": name} | ({"data": data} if data is not None else {})
    envelope = Envelope(job_id=job_id, job_type=f"cleanup.{name}", payload=payload)
    enqueue(redis_conn, [Submission(envelope, f"id:{job_id}", 600)], {job_id: "cleanup"})
    return job_id


def work(redis_conn) -> None:
    SimpleWorker([Queue("cleanup", connection=redis_conn)], connection=redis_conn).work(burst=True)


def test_a_cleanup_job_records_its_counts_and_duration(redis_conn):
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(5)])
    job_id = submit_cleanup(redis_conn, "sessions", {"batchSize": 2})
    work(redis_conn)
    run = JobRun.objects.get(job_id=job_id)
    assert run.status == "succeeded" and run.result["counts"] == {"sessions_removed": 5}
    # 2 + 2 + 1 rows by last_active_at, then one (empty) batch for sessions never active.
    assert run.result["batches"] == 4 and run.result["duration_s"] >= 0 and run.duration_ms is not None


def test_bad_cleanup_options_fail_at_once_with_the_reason(redis_conn):
    job_id = submit_cleanup(redis_conn, "sessions", {"olderThan": "a while"})
    work(redis_conn)
    run = JobRun.objects.get(job_id=job_id)
    assert run.status == "failed" and run.attempts == 1
    assert "invalid cleanup options: 'a while' is not a duration such as 24h, 30d or 15m" in run.error


def test_a_cleanup_out_of_time_continues_in_a_follow_up_job(redis_conn, settings):
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(4)])
    settings.CONFIG = settings.CONFIG.with_section("cleanup", time_budget_s=0)
    submit_cleanup(redis_conn, "sessions", {"batchSize": 1}, job_id="sessions-big")
    work(redis_conn)  # each job does one batch, then hands over to the next
    parts = JobRun.objects.filter(job_id__startswith="sessions-big").order_by("enqueued_at")
    assert UserSession.objects.count() == 0
    assert [p.job_id for p in parts][:3] == ["sessions-big", "sessions-big:part2", "sessions-big:part3"]
    assert sum(p.result["counts"].get("sessions_removed", 0) for p in parts) == 4
    assert parts.last().result["more"] is False


def test_manage_py_cleanup_prints_a_summary_and_records_the_run(redis_conn):
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(3)])
    env = subprocess_env({})
    dry = run_manage("cleanup", "sessions", "--dry-run", env=env)
    assert dry.returncode == 0 and "dry run: nothing changed" in dry.stdout and "sessions_to_remove" in dry.stdout
    assert UserSession.objects.count() == 3
    real = run_manage("cleanup", "sessions", "--batch-size", "2", "--older-than", "30d", env=env)
    assert real.returncode == 0 and "sessions_removed" in real.stdout
    # Not a terminal: a plain line a batch, no bar and no carriage returns. (How many rows a batch
    # takes depends on the path the planner's statistics choose: 2 through the index, or the
    # whole page the 3 rows share; cleanup/base.py delete_all.)
    lines = re.findall(r"^sessions: batch (\d+): sessions_removed (\d+) \((\d+) of 3\)$", real.stderr, re.M)
    assert [int(n) for n, _, _ in lines] == list(range(1, len(lines) + 1)) and lines[-1][1:] == ("3", "3"), real.stderr
    assert "\r" not in real.stderr and BAR not in real.stderr
    assert UserSession.objects.count() == 0
    record = JobRun.objects.filter(job_id__startswith="cli:sessions:").latest("enqueued_at")
    assert record.status == "succeeded" and record.result["counts"] == {"sessions_removed": 3}
    bad = run_manage("cleanup", "sessions", "--older-than", "soon", env=env)
    assert bad.returncode == 1 and "'soon' is not a duration" in bad.stderr


def test_a_manage_py_cleanup_that_raises_exits_non_zero_and_records_the_run_as_failed(redis_conn):
    # Media in S3 at an address where nothing listens: listing the bucket raises.
    store = {"AWS_S3_BUCKET": "media", "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    keys = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}
    process = run_manage("cleanup", "orphaned_media", env=subprocess_env(store | keys))
    assert process.returncode == 1 and "cleanup orphaned_media failed: EndpointConnectionError" in process.stderr
    record = JobRun.objects.get(job_id__startswith="cli:orphaned_media:")
    assert record.status == "failed" and record.error.startswith("EndpointConnectionError: ")
    assert record.finished_at is not None and "Traceback" in record.traceback


def test_a_manage_py_cleanup_that_raises_is_dead_lettered_and_counted_as_a_worker_counts_a_failed_job(redis_conn):
    # In a worker: a job that fails for good (options it can never run with).
    queued = submit_cleanup(redis_conn, "sessions", {"olderThan": "a while"})
    work(redis_conn)
    # From a terminal: listing an S3 bucket where nothing listens raises; nothing retries it there.
    store = {"AWS_S3_BUCKET": "media", "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}
    keys = {"AWS_ACCESS_KEY_ID": "test-key-id", "AWS_SECRET_ACCESS_KEY": "test-secret-key"}
    assert run_manage("cleanup", "orphaned_media", env=subprocess_env(store | keys)).returncode == 1
    by_hand = JobRun.objects.get(job_id__startswith="cli:orphaned_media:")
    assert by_hand.queue == "manage.py" and by_hand.attempts == 1

    counts, durations = job_counts(redis_conn), redis_conn.hgetall(DURATION_KEY)
    for record in (JobRun.objects.get(job_id=queued), by_hand):
        assert record.status == "failed" and record.finished_at is not None
        assert DeadLetter.objects.get(job_id=record.job_id).error == record.error
        assert counts[f"{record.job_type}:failed"] == 1 and f"{record.job_type}:retried" not in counts
        assert durations[f"{record.job_type}|le=+Inf".encode()] == b"1"
    assert by_hand.error.startswith("EndpointConnectionError: ")


def test_ctrl_c_on_manage_py_cleanup_leaves_its_record_failed_not_running(redis_conn, tmp_path):
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(20_000)])
    process = start_manage(
        "cleanup", "sessions", "--batch-size", "1", log_path=tmp_path / "cleanup.log", env=subprocess_env({})
    )
    try:
        wait_for(lambda: UserSession.objects.count() < 20_000, 60, "the first batches")
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        assert process.wait(60) != 0
    finally:
        stop(process)
    assert UserSession.objects.count() > 0, "interrupted before the end"
    record = JobRun.objects.get(job_id__startswith="cli:sessions:")
    output = (tmp_path / "cleanup.log").read_text()[-4000:]  # what the command said, should this fail
    assert record.status == "failed" and record.error.startswith("KeyboardInterrupt"), output
    assert record.finished_at is not None
    again = run_manage("cleanup", "sessions", "--dry-run", env=subprocess_env({}))
    assert "sessions_to_remove" in again.stdout, f"the next run is turned away: {again.stdout}{again.stderr[-2000:]}"


def test_manage_py_cleanup_on_a_terminal_draws_a_bar_with_its_total_and_an_eta(redis_conn):
    old = timezone.now() - timedelta(days=31)
    UserSession.objects.bulk_create([UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(5)])
    process, screen = run_manage_on_a_terminal("cleanup", "sessions", "--batch-size", "2", env=subprocess_env({}))
    assert process.returncode == 0 and "sessions_removed" in process.stdout, screen
    assert UserSession.objects.count() == 0
    assert BAR in screen and "sessions_removed" in screen
    assert "0/5" in screen, "the total is known before the first batch"
    assert "5/5" in screen
    assert re.search(r"eta (-:--:--|\d+:\d\d:\d\d)", screen), screen
    # The log line is printed above the bar, from the start of a line, not into it.
    assert re.search(r"[\r\n][-\d]+ [:,\d]+ INFO +cleanup\.base: cleanup sessions: \{", screen), screen
    assert "batch 1:" not in screen, "no plain lines on a terminal"

    dry = run_manage_on_a_terminal("cleanup", "sessions", "--dry-run", env=subprocess_env({}))[1]
    assert BAR not in dry, "a dry run only counts: no bar"


def test_a_cleanup_whose_total_is_unknown_draws_an_indeterminate_bar(redis_conn):
    for _ in range(3):
        path = Path(default_storage.path(default_storage.save(f"media/lost/{uuid.uuid4()}.jpg", ContentFile(b"x"))))
        os.utime(path, (time.time() - 25 * 3600,) * 2)
    process, screen = run_manage_on_a_terminal("cleanup", "orphaned_media", env=subprocess_env({}))
    assert process.returncode == 0, screen
    scanned = int(re.search(r"objects_scanned +([\d,]+)", process.stdout).group(1).replace(",", ""))
    assert scanned >= 3 and f"{scanned:,}/?" in screen and "objects_scanned" in screen, screen
    assert BAR in screen


def test_the_admin_shows_the_cron_table_with_next_runs(client, redis_conn):
    register(django_rq.get_scheduler("cleanup"))
    client.force_login(get_user_model().objects.create_superuser("operator", password="a-long-password"))
    page = client.get("/admin/cleanup/crontable/")
    assert page.status_code == 200
    text = page.content.decode()
    for name in ("stories", "sessions", "orphaned_media"):
        assert f"<td>{name}</td>" in text
    assert "<code>0 5 * * 0</code>" in text and "start rqscheduler" not in text
    client.logout()
    assert client.get("/admin/cleanup/crontable/").status_code == 302
