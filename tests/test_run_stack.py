"""`make run`: every process comes up, the admin answers, and Ctrl-C stops everything cleanly;
SIGTERM to every process lets each finish the job in its hands."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections import Counter
from datetime import timedelta

import psutil
import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone
from rq import Worker
from rq.job import Job
from rq.registry import StartedJobRegistry

from notifications.models import Notification
from supworker import jobtypes
from supworker.enqueue import RUN_BATCH
from supworker.models import JobRun
from supworker.models.messenger import Message, UserSession
from supworker.rabbit.publisher import Publisher
from supworker.stats import CONSUMERS_KEY
from tests.helpers import rq_items, wait_for
from tests.ingest_fixtures import queue_depth, subprocess_env
from tests.media_files import ffmpeg
from tests.notification_servers import SmtpServer
from tests.testenv import ROOT, WEB_PORT

pytestmark = pytest.mark.slow

PROCESSES = (
    ["web.1", "cleanup.1", "scheduler.1", "consumer.1"]
    + [f"media.{i}" for i in (1, 2)]
    + [f"notifications.{i}" for i in range(1, 6)]
)


def admin_login_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2) as response:
            return response.status == 200 and b"csrfmiddlewaretoken" in response.read()
    except OSError:
        return False


def gunicorn_workers_idle(make: subprocess.Popen, count: int = 2) -> bool:
    """The web process's workers have loaded the app and wait for requests: a worker still loading
    Django when SIGTERM comes exits only once loaded, which on two busy cores can outlast honcho's
    5 s grace period (the web process has no job in hand to finish)."""
    try:
        workers = [
            p
            for p in psutil.Process(make.pid).children(recursive=True)
            if "gunicorn" in " ".join(p.cmdline()) and "gunicorn" in " ".join(p.parent().cmdline())
        ]
        if len(workers) < count:
            return False
        before = [sum(p.cpu_times()[:2]) for p in workers]
        time.sleep(0.5)
        return all(sum(p.cpu_times()[:2]) - spent < 0.02 for p, spent in zip(workers, before, strict=True))
    except (psutil.Error, AttributeError):  # a process gone meanwhile, or one without a parent any more
        return False


def test_make_run_starts_the_whole_service_and_ctrl_c_stops_it(tmp_path, redis_conn):
    port = WEB_PORT
    log_path = tmp_path / "make-run.log"
    with open(log_path, "w") as log:
        make = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=os.environ | {"WEB_PORT": str(port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: admin_login_answers(port), 120, "the admin on the web process")
        wait_for(lambda: redis_conn.scard("rq:workers") == 2 + 5 + 1, 60, "8 RQ workers to register")
        output = log_path.read_text()
        for name in PROCESSES:
            assert f"{name} started" in output, name
        assert not re.search(r"\| \w+\.\d+ stopped", output), output[-3000:]
    finally:
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        make.wait(60)

    output = log_path.read_text()
    for name in PROCESSES:
        assert f"{name} stopped" in output, name
    assert "SIGKILL" not in output, "every process should stop within honcho's grace period"
    assert "Traceback" not in output, output[-3000:]
    assert redis_conn.scard("rq:workers") == 0, "workers should deregister on a clean shutdown"


# What each kind of process logs when it stops on its own terms.
CLEAN_STOP = {
    "web": "Shutting down: Master",
    "media": "stopping on request",
    "notifications": "stopping on request",
    "cleanup": "stopping on request",
    "scheduler": "Shutting down RQ scheduler",
    "consumer": " stopped: received=",
}


class SlowSmtpServer(SmtpServer):
    """Takes `delay` seconds over each message, as a distant relay does: a batch of 50 e-mails
    keeps its worker busy for a while."""

    def __init__(self, delay: float):
        super().__init__()
        inner = self.controller.handler

        class Handler:
            async def handle_RCPT(self, *args):
                return await inner.handle_RCPT(*args)

            async def handle_DATA(self, server, session, envelope):
                await asyncio.sleep(delay)
                return await inner.handle_DATA(server, session, envelope)

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


def service_processes(log: str) -> dict[str, psutil.Process] | None:
    """Each Procfile process by name, once all have started (honcho reports the shell it runs
    each command in: the service is that shell's child)."""
    found = {}
    for name, pid in re.findall(r"\| (\w+\.\d+) started \(pid=(\d+)\)", log):
        children = psutil.Process(int(pid)).children()
        if not children:
            return None
        found[name] = children[0]
    return found if len(found) == len(PROCESSES) else None


def jobs_in_hand(redis) -> list[str] | None:
    """The RQ jobs started, once all 8 workers are busy."""
    if sum(worker.get_state() == "busy" for worker in Worker.all(connection=redis)) < 8:
        return None
    started = [
        job_id for spec in jobtypes.queues() for job_id in StartedJobRegistry(spec.name, connection=redis).get_job_ids()
    ]
    return started if len(started) == 8 else None


class EmailStream:
    """The messenger publishing e-mails, 10 every 100 ms, until stopped: the consumer is always
    in the middle of a stream, and RQ gets jobs of about 10 (a second or so each) faster than
    five workers run them."""

    def __init__(self) -> None:
        self.published: set[str] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with Publisher() as publisher:
            n = 0
            while not self.stopped.wait(0.1):
                for _ in range(10):
                    job_id = f"mail-{n}"
                    body = {"type": "email", "jobId": job_id, "userId": str(uuid.uuid4()), "title": "Hi", "body": "b"}
                    publisher.publish("notification.email", body | {"email": f"{job_id}@example.com"})
                    self.published.add(job_id)
                    n += 1

    def __enter__(self) -> EmailStream:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)


@pytest.mark.django_db(transaction=True)
def test_sigterm_to_every_process_of_make_run_lets_each_finish_its_job_in_hand(tmp_path, rabbit_names, redis_conn):
    smtp = SlowSmtpServer(delay=0.03)
    smtp.start()
    # 4:4:4 chroma: transcoded. Small, so that the transcode in hand ends well within honcho's
    # 5 s even on two loaded cores (a 640x360 clip's job took 6.3-6.7 s there).
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", "sine=frequency=440",
           "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p", "-c:a", "aac",
           "-shortest", str(clip))  # fmt: skip
    videos = []
    for n in range(10):  # five each for the two media workers: busy until SIGTERM
        with open(clip, "rb") as handle:
            key = default_storage.save(f"uploads/sigterm/{uuid.uuid4()}/clip.mp4", handle)
        message = Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4(), media_status="queued")
        videos.append(("media.video", {"type": "video", "jobId": f"video-{n}", "s3Key": key,
                       "userId": str(uuid.uuid4()), "messageId": str(message.id)}))  # fmt: skip
    # Four cleanups, each removing its own band of 2,500 sessions, 50 at a time.
    cleanups = []
    for n, days in enumerate((60, 55, 50, 45)):
        inactive = timezone.now() - timedelta(days=days)
        UserSession.objects.bulk_create(UserSession(user_id=uuid.uuid4(), last_active_at=inactive) for _ in range(2500))
        cleanups.append(("cleanup.sessions", {"type": "sessions", "jobId": f"cleanup-{n}",
                         "data": {"batchSize": 50, "olderThan": f"{days - 2}d"}}))  # fmt: skip

    log_path = tmp_path / "make-run.log"
    env = os.environ | rabbit_names | subprocess_env({}) | {
        "WEB_PORT": str(WEB_PORT), "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_SECURITY": "none",
        "EMAIL_RATE_PER_SECOND": "0",
    }  # fmt: skip
    with open(log_path, "w") as log:
        make = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        processes = wait_for(lambda: service_processes(log_path.read_text()), 120, "every process to start")
        wait_for(lambda: redis_conn.scard(CONSUMERS_KEY), 60, "the consumer to connect")
        wait_for(lambda: gunicorn_workers_idle(make), 120, "the web process's workers to load the app")
        with Publisher() as publisher:
            for routing_key, body in videos + cleanups:
                publisher.publish(routing_key, body)
        with EmailStream() as stream:
            # Every worker in the middle of a job: transcodes, a cleanup, e-mail batches.
            in_hand = wait_for(lambda: jobs_in_hand(redis_conn), 120, "all 8 workers to be busy", interval=0.02)
            sent_before = smtp.count()
            for process in [psutil.Process(make.pid), *psutil.Process(make.pid).children(), *processes.values()]:
                process.send_signal(signal.SIGTERM)
        make.wait(60)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
        smtp.stop()

    output = log_path.read_text()
    assert not [p for p in processes.values() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert "SIGKILL" not in output, "every process finished within honcho's 5 s grace period"
    for name in PROCESSES:
        # honcho reports the shell it runs the command in, which its own SIGTERM ends (-15).
        assert re.search(rf"{re.escape(name)} stopped \(rc=(0|-15)\)", output), name
        lines = "\n".join(line for line in output.splitlines() if line[9:].startswith(name))
        assert CLEAN_STOP[name.split(".")[0]] in lines, f"{name} did not stop cleanly:\n{lines[-2000:]}"
        assert "Traceback" not in lines and "cold shut down" not in lines, lines[-2000:]
    assert redis_conn.scard("rq:workers") == 0, "workers deregister on a clean shutdown"
    for spec in jobtypes.queues():
        assert StartedJobRegistry(spec.name, connection=redis_conn).count == 0, f"a job left started in {spec.name}"

    # Each job in hand at SIGTERM ran to its end; those still queued did not start.
    assert {Job.fetch(job_id, connection=redis_conn).get_status() for job_id in in_hand} == {"finished"}
    runs = dict(JobRun.objects.values_list("job_id", "status"))
    assert set(runs.values()) == {"succeeded"}, "every job that started ran to success"
    # The cleanup worker's job in hand may be a cron entry (`health` runs every few minutes): it
    # names its entry, it carries no items.
    in_hand_jobs = [Job.fetch(job_id, connection=redis_conn) for job_id in in_hand]
    in_hand_items = {item["job_id"] for job in in_hand_jobs if job.func_name == RUN_BATCH for item in job.args[0]}
    assert in_hand_items <= set(runs)
    queued = [item["job_id"] for item in rq_items(redis_conn, *(spec.name for spec in jobtypes.queues()))]
    assert len(queued) == len(set(queued)) and not set(queued) & set(runs), "nothing queued at SIGTERM started"
    video_runs = {body["messageId"] for _, body in videos if body["jobId"] in runs}
    statuses = dict(
        Message.objects.filter(id__in=[body["messageId"] for _, body in videos]).values_list("id", "media_status")
    )
    assert {str(id): status for id, status in statuses.items()} == {
        body["messageId"]: "ready" if body["messageId"] in video_runs else "queued" for _, body in videos
    }, "every video that started is ready, the others untouched"
    for n, days in enumerate((60, 55, 50, 45)):
        band = UserSession.objects.filter(last_active_at__lt=timezone.now() - timedelta(days=days - 2),
                                          last_active_at__gte=timezone.now() - timedelta(days=days + 2))  # fmt: skip
        assert band.count() == (0 if f"cleanup-{n}" in runs else 2500), "a cleanup that started removed all it had to"

    # Every e-mail of a batch that started was sent once, no other; the batches in hand were
    # mid-way at SIGTERM.
    mailed = {f"{job_id}@example.com" for job_id in stream.published if job_id in runs}
    sent = Counter(rcpt for _, rcpts in smtp.envelopes for rcpt in rcpts)
    assert sent == dict.fromkeys(mailed, 1)
    assert sent_before < len(mailed), "SIGTERM came in the middle of the e-mail batches"
    assert not Notification.objects.filter(success__isnull=True).exists(), "no e-mail left half-sent"
    # The consumer acked exactly what it had enqueued: each e-mail ran, waits in RQ, or is
    # back in RabbitMQ, once.
    waiting = queue_depth(f"{settings.CONFIG.rabbitmq_queue_prefix}.notifications")
    ran_or_queued = {job_id for job_id in stream.published if job_id in runs} | (set(queued) & stream.published)
    assert len(ran_or_queued) + waiting == len(stream.published)
