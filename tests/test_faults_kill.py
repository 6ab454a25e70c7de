"""kill -9 in the middle of work: real `manage.py rqworker` processes, killed with SIGKILL while
a video is transcoding or a batch of pushes or e-mails is half sent, then recovered the way
production recovers (RQ's retry in the same worker, or a supervisor starting a new worker).

Two ways to die, which RQ 3.0 handles differently (supworker/worker.py explains the timings):
- only the work-horse (what the OOM killer picks): the worker sees it die and retries the job
  under the same RQ job id, after its retry delay, through the worker's scheduler;
- the whole worker, horse and scheduler process with it: the job stays in StartedJobRegistry
  until its heartbeat expires, then a cleanup calls it abandoned and retries it. Tests of this
  case run tests/fault_worker.py's worker, whose timings are seconds instead of a minute.

What a user would check afterwards: the message ends `ready` with its files under their fixed
keys, one `media.processed` event, no scratch directory left behind; every push and e-mail
arrives, and the only ones that arrive twice are those the provider had received but not
yet answered when the worker died (notifications/ledger.py), each time with the same
deduplication key, so the recipient sees them once.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from django.core.files import File
from django.core.files.storage import default_storage
from rq import Queue
from rq.registry import StartedJobRegistry

from notifications.models import Notification
from supworker.models import DeadLetter, JobRun
from supworker.stats import job_counts
from tests.helpers import start_manage, stop, wait_for
from tests.ingest_fixtures import subprocess_env
from tests.media_files import large_video, stored_path
from tests.notification_helpers import envelope, submit
from tests.notification_servers import FcmServer, SmtpServer
from tests.testenv import ROOT

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
pytest_plugins = ["tests.media_fixtures", "tests.notification_fixtures"]

QUICK_WORKER = "tests.fault_worker.QuickRecoveryWorker"
RECOVERY_TIMEOUT = 60  # seconds; the quick worker recovers in about 6, the horse case in about 2


class Workers:
    """`manage.py rqworker` processes of one test; whatever still runs is stopped afterwards."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path, self.env = tmp_path, env
        self.started: list[subprocess.Popen] = []

    def start(self, *queues: str, quick: bool = False) -> subprocess.Popen:
        args = ["rqworker", *queues, "--with-scheduler"] + (["--worker-class", QUICK_WORKER] if quick else [])
        log_path = self.tmp_path / f"worker-{len(self.started)}.log"
        self.started.append(start_manage(*args, log_path=log_path, env=self.env))
        return self.started[-1]

    def log(self, index: int) -> str:
        return (self.tmp_path / f"worker-{index}.log").read_text()

    def stop_all(self) -> None:
        for process in self.started:
            stop(process)


@pytest.fixture
def workers(tmp_path, rabbit_names, redis_conn) -> Iterator[Workers]:
    """Depends on redis_conn so that the workers stop before their Redis database is flushed."""
    running = Workers(tmp_path, subprocess_env(rabbit_names))
    yield running
    running.stop_all()


def work_horse(worker: subprocess.Popen) -> psutil.Process:
    """The worker's work-horse: its child that leads its own process group (RQ calls setpgrp)."""

    def find() -> psutil.Process | None:
        for child in psutil.Process(worker.pid).children():
            try:
                if os.getpgid(child.pid) == child.pid:
                    return child
            except ProcessLookupError:
                continue
        return None

    return wait_for(find, 10, "the worker's work-horse")


def kill_whole_worker(worker: subprocess.Popen, horse: psutil.Process) -> None:
    """SIGKILL everything, as a lost machine or `kill -9` of a container does."""
    os.killpg(horse.pid, signal.SIGKILL)  # the horse and what it started (ffmpeg)
    os.killpg(worker.pid, signal.SIGKILL)  # the worker and its scheduler process
    worker.wait()
    horse.wait(10)


def kill_work_horse(horse: psutil.Process) -> None:
    horse.kill()  # SIGKILL, to the horse alone
    horse.wait(10)


# --- media ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transcode_source(tmp_path_factory) -> Path:
    """1080p, 3 s: transcoded (too large to pass through), long enough to be killed mid-way."""
    path = tmp_path_factory.mktemp("kill") / "source.mp4"
    large_video(path, seconds=3)
    return path


def transcoding(worker: subprocess.Popen) -> psutil.Process | None:
    for process in psutil.Process(worker.pid).children(recursive=True):
        try:
            if process.name() == "ffmpeg" and "libx264" in process.cmdline():
                return process
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.parametrize("victim", ["work-horse", "whole worker"])
def test_a_video_whose_worker_is_killed_mid_transcode_is_processed_once(
    victim, media, media_temp_dir, local_storage, workers, redis_conn, settings, transcode_source
):
    quick = victim == "whole worker"
    # After a horse's death RQ's retry waits a second and goes through the worker's scheduler,
    # as in production (5 s there). After the whole worker's, it is immediate: the dead worker's
    # scheduler lock would hold a delayed retry for its 61 s TTL (see supworker/worker.py).
    settings.CONFIG = dataclasses.replace(settings.CONFIG, base_delay_ms=50 if quick else 1000, max_delay_ms=4000)
    workers.env |= {"MEDIA_ROOT": str(local_storage), "TEMP_DIR": str(media_temp_dir)}
    message = media.message()
    key = f"uploads/{uuid.uuid4()}/clip.mp4"
    with open(transcode_source, "rb") as handle:
        default_storage.save(key, File(handle))
    job = media.envelope("video", key, message.id, job_id=f"kill-media-{uuid.uuid4().hex[:8]}")

    worker = workers.start("media_high", "media", quick=quick)
    submit(redis_conn, job)
    ffmpeg = wait_for(lambda: transcoding(worker), 30, "ffmpeg transcoding in the work-horse")
    message.refresh_from_db()
    assert message.media_status == "processing", "killed in the middle of the job"
    horse = psutil.Process(ffmpeg.ppid())
    if quick:
        kill_whole_worker(worker, horse)
        workers.start("media_high", "media", quick=True)  # what the supervisor does
    else:
        kill_work_horse(horse)
    wait_for(lambda: not ffmpeg.is_running() or ffmpeg.status() == psutil.STATUS_ZOMBIE, 5, "ffmpeg to die with it")

    wait_for(lambda: JobRun.objects.filter(job_id=job.job_id, status="succeeded").exists(), RECOVERY_TIMEOUT, "the job")
    if not quick:
        assert worker.poll() is None, "the worker outlives its work-horse"
        assert "Work-horse terminated unexpectedly" in workers.log(0), "RQ saw the horse die and retried the job"
    message.refresh_from_db()
    assert message.media_status == "ready" and message.media_error == ""
    folder = f"media/{message.id}/processed"
    assert (message.media_url, message.thumbnail_url) == (f"{folder}/video.mp4", f"{folder}/poster.jpg")
    assert sorted(p.name for p in stored_path(folder).iterdir()) == ["poster.jpg", "video.mp4"], "no second copy"
    assert stored_path(message.media_url).stat().st_size == message.media_metadata["bytes"]
    assert message.media_metadata["passthrough"] is False
    events = media.events(expected=1)
    assert [(routing_key, event["jobId"]) for routing_key, event in events] == [("media.processed", job.job_id)]
    assert list(media_temp_dir.iterdir()) == [], "the killed run's scratch directory is gone too"
    assert StartedJobRegistry(queue=Queue("media", connection=redis_conn)).count == 0


# --- notifications --------------------------------------------------------------------------


def dedupe_keys(message: dict) -> tuple[str, str, str]:
    """What lets a device show a push once: APNs collapse id, Android tag, Web Push Topic."""
    return (
        message["apns"]["headers"]["apns-collapse-id"],
        message["android"]["notification"]["tag"],
        message["webpush"]["headers"]["Topic"],
    )


PUSHES, PUSHES_ANSWERED = 40, 15


def test_pushes_of_a_batch_whose_worker_is_killed_arrive_and_only_the_unanswered_twice(
    fcm_server: FcmServer, workers, redis_conn
):
    """The whole worker dies while FCM has received 25 pushes of a 40-push batch and answered
    none of them; 15 others were answered (and recorded) before. A new worker finishes the batch."""
    workers.env |= {
        "FCM_ENDPOINT": fcm_server.url,
        "FCM_ACCESS_TOKEN": fcm_server.token,
        "FCM_PROJECT_ID": "sup-loopback",
        "FCM_TIMEOUT_SECONDS": "120",  # the held requests must not time out before the kill
    }
    jobs = [
        envelope("notification.push", job_id=f"kill-push-{n}-{uuid.uuid4().hex[:6]}", fcmToken=f"tok-{n}",
                 title="Alice", body=f"message {n}")
        for n in range(PUSHES)
    ]  # fmt: skip
    fcm_server.hold_after(PUSHES_ANSWERED)
    worker = workers.start("notifications_high", "notifications", quick=True)
    submit(redis_conn, *jobs)

    def half_sent() -> bool:
        answered = Notification.objects.filter(success=True).count()
        return len(fcm_server.held) == PUSHES - PUSHES_ANSWERED and answered == PUSHES_ANSWERED

    wait_for(half_sent, 30, "15 pushes answered and recorded, 25 received by FCM and unanswered")
    assert JobRun.objects.filter(status="running").count() == PUSHES, "killed in the middle of the batch"
    kill_whole_worker(worker, work_horse(worker))
    unanswered = set(fcm_server.release())
    workers.start("notifications_high", "notifications", quick=True)

    wait_for(lambda: JobRun.objects.filter(status="succeeded").count() == PUSHES, RECOVERY_TIMEOUT, "every push job")
    received = Counter(request["message"]["token"] for request in fcm_server.requests)
    assert set(received) == {f"tok-{n}" for n in range(PUSHES)}, "every push arrived"
    twice = {token for token, count in received.items() if count > 1}
    assert max(received.values()) == 2
    assert twice == unanswered, "resent: exactly those FCM had received and not answered when the worker died"
    for token in twice:
        first, second = fcm_server.messages_to(token)
        assert dedupe_keys(first) == dedupe_keys(second), "a resend replaces the first notification"
    assert len({dedupe_keys(fcm_server.messages_to(f"tok-{n}")[0]) for n in range(PUSHES)}) == PUSHES
    rows = Notification.objects.filter(job_id__in=[job.job_id for job in jobs])
    assert rows.count() == PUSHES and all(row.success for row in rows)


EMAILS, EMAILS_ANSWERED = 12, 5


def test_emails_of_a_batch_whose_work_horse_is_killed_arrive_and_only_the_unanswered_twice(
    smtp_server: SmtpServer, workers, redis_conn, settings
):
    """The work-horse dies after 5 e-mails of 12 were accepted, while the SMTP server holds its
    answer to the 6th, which it has received. The same worker runs the batch again."""
    settings.CONFIG = dataclasses.replace(settings.CONFIG, base_delay_ms=1000, max_delay_ms=4000)
    workers.env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_server.port), "SMTP_SECURITY": "none"}
    addresses = [f"reader{n}@example.com" for n in range(EMAILS)]
    jobs = [
        envelope("notification.email", job_id=f"kill-mail-{n}-{uuid.uuid4().hex[:6]}", email=address,
                 title="New message", body=f"message {n}")
        for n, address in enumerate(addresses)
    ]  # fmt: skip
    smtp_server.hold_after(EMAILS_ANSWERED)
    worker = workers.start("notifications_high", "notifications")
    submit(redis_conn, *jobs)

    def half_sent() -> bool:
        answered = Notification.objects.filter(success=True).count()
        return len(smtp_server.held) == 1 and answered == EMAILS_ANSWERED

    wait_for(half_sent, 15, "5 e-mails accepted and recorded, the 6th received and unanswered")
    assert JobRun.objects.filter(status="running").count() == EMAILS, "killed in the middle of the batch"
    kill_work_horse(work_horse(worker))
    unanswered = set(smtp_server.release())

    wait_for(lambda: JobRun.objects.filter(status="succeeded").count() == EMAILS, RECOVERY_TIMEOUT, "every e-mail job")
    assert worker.poll() is None, "the worker outlives its work-horse"
    received = Counter(rcpt for _, rcpts in smtp_server.envelopes for rcpt in rcpts)
    assert set(received) == set(addresses), "every e-mail arrived"
    twice = {address for address, count in received.items() if count > 1}
    assert max(received.values()) == 2
    assert twice == unanswered == {addresses[EMAILS_ANSWERED]}, "resent: only the one the server had not answered"
    by_address: dict[str, list[str]] = {}
    for message in smtp_server.messages:
        by_address.setdefault(message["To"], []).append(message["Message-ID"])
    (address,) = twice
    first, second = by_address[address]
    assert first == second, "the same Message-ID: mail systems that deduplicate show it once"
    assert len({ids[0] for ids in by_address.values()}) == EMAILS
    rows = Notification.objects.filter(job_id__in=[job.job_id for job in jobs])
    assert rows.count() == EMAILS and all(row.success for row in rows)
    assert {row.provider_message_id for row in rows} == {ids[0] for ids in by_address.values()}


@pytest.mark.parametrize("victim", ["work-horse", "whole worker"])
def test_a_batch_whose_worker_dies_on_its_last_try_is_dead_lettered(
    smtp_server: SmtpServer, workers, redis_conn, settings, victim
):
    """With no retries left, RQ parks the batch in its failed registry (at once when only the
    horse died; at the next registry cleanup when the whole worker did); its unfinished items
    must not stay `running` for ever: they are recorded failed and dead-lettered."""
    settings.CONFIG = dataclasses.replace(settings.CONFIG, max_retries=0)  # the batch's RQ Retry is set at enqueue
    workers.env |= {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_server.port), "SMTP_SECURITY": "none",
                    "MAX_RETRIES": "0"}  # fmt: skip
    job = envelope("notification.email", job_id=f"kill-last-{uuid.uuid4().hex[:6]}", email="last@example.com",
                   title="New message", body="the last try")  # fmt: skip
    smtp_server.hold_after(0)
    worker = workers.start("notifications_high", "notifications", quick=True)
    submit(redis_conn, job)
    wait_for(lambda: len(smtp_server.held) == 1, 15, "the e-mail received, its answer held")
    if victim == "whole worker":
        kill_whole_worker(worker, work_horse(worker))
        worker = workers.start("notifications_high", "notifications", quick=True)
        reason = "abandoned"
    else:
        kill_work_horse(work_horse(worker))
        reason = "Work-horse terminated unexpectedly"
    smtp_server.release()

    dead = wait_for(lambda: DeadLetter.objects.filter(job_id=job.job_id).first(), RECOVERY_TIMEOUT, "a dead letter")
    assert reason in dead.error and dead.source == "worker"
    run = JobRun.objects.get(job_id=job.job_id)
    assert run.status == "failed" and reason in run.error
    # Counted where every settled item is (/metrics, the dashboard, the LMS statistics).
    assert job_counts(redis_conn).get("notification.email:failed") == 1
    assert worker.poll() is None, "the worker lives on"


# --- SIGTERM, the signal a supervisor sends before its SIGKILL ------------------------------

STOP_DURING_A_LOG_LINE = """
import logging, os, signal, sys

import django

django.setup()
from redis import Redis

from supworker.worker import Worker


class Stream:
    # Where the worker's log lines go: the first cleanup line brings the supervisor's SIGTERM.
    sent = False

    def write(self, text):
        if "cleaning registries" in text and not Stream.sent:
            Stream.sent = True
            os.kill(os.getpid(), signal.SIGTERM)

    def flush(self):
        pass


logging.getLogger("rq.worker").addHandler(logging.StreamHandler(Stream()))
Worker([sys.argv[1]], connection=Redis.from_url(os.environ["REDIS_URL"])).work()
print("stopped", flush=True)
"""


def test_an_idle_worker_stops_on_a_sigterm_that_lands_in_a_log_line(redis_conn):
    """RQ stops an idle worker by raising StopRequested from the signal handler; logging
    swallows exceptions raised while it writes, so the worker used to run on until SIGKILL."""
    worker = subprocess.Popen(
        [sys.executable, "-c", STOP_DURING_A_LOG_LINE, f"idle-{uuid.uuid4().hex[:6]}"],
        cwd=ROOT,
        env=os.environ | {"DJANGO_SETTINGS_MODULE": "supworker.settings"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = worker.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        output, _ = worker.communicate()
        pytest.fail(f"the worker ignored SIGTERM:\n{output[-2000:]}")
    assert "StopRequested" in output, "the signal did land in a log line (logging reported what it swallowed)"
    assert worker.returncode == 0 and output.rstrip().endswith("stopped")
