"""Notification throughput, end to end, side by side in one run:

- push: 10,000 `notification.push` messages published to RabbitMQ, consumed by supworker's
  consumer, run by RQ workers (batches of 500, firebase-admin `send`, 100 in flight, each
  answer recorded as it arrives, carried by libcurl) against a local FCM HTTP v1 server
  (tests/notification_servers.py on uvicorn), every delivery logged in
  `notifications`; against the naive design
  (one RQ job per notification, each calling firebase-admin `send` once and writing its row).
  Targets: at least 1,000 notifications/s and at least 10 times the naive design.
- e-mail: `notification.email` messages the same way, to a local SMTP server, Postfix's
  smtp-sink (one connection per batch of 50); against one RQ job per e-mail opening its own
  SMTP connection. Target: 300/s.

Publishing is not timed: the queue is filled first; the clock runs from the consumer's start
to the last row logged (workers are started and idle before). The naive design skips RabbitMQ,
which only flatters it. Isolation as bench_ingest: own exchange and queue names, Redis
database 12, servers on loopback in their own processes, settings.CONFIG restored, the bench
rows deleted at the end. E-mail rate limiting is off (EMAIL_RATE_PER_SECOND=0) while measuring.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pika
from redis import Redis
from rq import Queue

from bench.deployed import with_redis_db as _with_db
from bench.table import Table
from supworker import jobtypes

PUSHES = 10_000
NAIVE_PUSHES = 300  # one forked RQ job each: the full 10,000 would take many minutes; the rate is what counts
EMAILS = 2_000
NAIVE_EMAILS = 200
WORKERS = int(os.environ.get("BENCH_NOTIFICATION_WORKERS", "2"))  # RQ worker processes; `make run` starts 5
REDIS_DB = 12
NAIVE_QUEUE = "notifications"  # a queue django-rq knows; Redis database 12 is the bench's alone
TOKEN = "bench-static-token"  # noqa: S105 - the loopback server's token
PROJECT = "sup-bench"
STALL_SECONDS = 30.0
ROOT = Path(__file__).resolve().parent.parent


# --- the naive design: what RQ runs, one job per notification -------------------------------------
def naive_push(job_id: str, user_id: str, token: str, title: str, body: str) -> None:
    from firebase_admin import messaging

    from notifications import fcm
    from notifications.models import Notification

    message = messaging.Message(token=token, notification=messaging.Notification(title=title, body=body))
    message_id = messaging.send(message, app=fcm.app())
    Notification.objects.create(
        job_id=job_id, user_id=user_id, type="push", title=title, body=body, success=True,
        recipient="naive", provider_message_id=message_id,
    )  # fmt: skip


def naive_email(job_id: str, user_id: str, address: str, title: str, body: str) -> None:
    from django.core.mail import EmailMultiAlternatives

    from notifications.models import Notification
    from notifications.rendering import render

    rendered = render("notification", {"title": title, "body": body})
    message = EmailMultiAlternatives(rendered.subject, rendered.text, to=[address])
    message.attach_alternative(rendered.html, "text/html")
    message.send()  # a connection of its own
    Notification.objects.create(
        job_id=job_id, user_id=user_id, type="email", title=title, body=body, success=True, recipient="naive"
    )


# --- loopback servers, each in its own process -----------------------------------------------------
def _serve_fcm(port_out) -> None:
    from tests.notification_servers import FcmServer

    server = FcmServer(token=TOKEN, keep_requests=False)
    server.start()
    port_out.put(server.port)
    server.thread.join()


class SmtpSink:
    """Postfix's smtp-sink: a real SMTP server in C, made for benchmarks, that accepts and counts
    every message. aiosmtpd (the tests' server) spends 2 to 4 ms of CPU a message on the same two
    cores as the workers, more than the client it serves."""

    def __init__(self) -> None:
        from tests.notification_servers import free_port, wait_until_listening

        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it will not run as root
        self.output = tempfile.TemporaryFile()  # noqa: SIM115 - open for the server's life, closed in stop()
        # -c: print its counters (sessions, messages) as it goes; 1024: the listen backlog.
        self.process = subprocess.Popen(
            ["smtp-sink", "-c", *user, f"127.0.0.1:{self.port}", "1024"], stdout=self.output, stderr=subprocess.STDOUT
        )
        alive = lambda: self.process.poll() is None  # noqa: E731
        wait_until_listening(self.port, alive, "smtp-sink (make bench installs it: Debian's postfix)")

    def messages(self) -> int:
        """How many messages it has accepted so far (its last `mesg=` counter)."""
        self.output.seek(0)
        counts = re.findall(rb"mesg=(\d+)", self.output.read())
        return int(counts[-1]) if counts else 0

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.output.close()


def _start_server(target) -> tuple[multiprocessing.Process, int]:
    context = multiprocessing.get_context("spawn")
    port_out = context.Queue()
    process = context.Process(target=target, args=(port_out,), daemon=True)
    process.start()
    return process, port_out.get(timeout=30)


# --- the run -------------------------------------------------------------------------------------
def run() -> Table:
    from django.conf import settings

    from notifications.models import Notification

    original = settings.CONFIG
    tag = f"bn{uuid.uuid4().hex[:6]}"
    settings.CONFIG = dataclasses.replace(
        original,
        rabbitmq_exchange=f"{tag}_exchange",
        rabbitmq_queue_prefix=tag,
        rabbitmq_queue_name=f"{tag}_otp",
        redis_url=_with_db(original.redis_url, REDIS_DB),
    )
    config = settings.CONFIG
    redis = Redis.from_url(config.redis_url)
    redis.flushdb()
    smtp = SmtpSink()
    try:
        fcm_process, fcm_port = _start_server(_serve_fcm)
    except BaseException:
        smtp.stop()
        raise
    env = os.environ | {
        "REDIS_URL": config.redis_url,
        "FCM_ENDPOINT": f"http://127.0.0.1:{fcm_port}",
        "FCM_ACCESS_TOKEN": TOKEN,
        "FCM_PROJECT_ID": PROJECT,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "EMAIL_RATE_PER_SECOND": "0",
        "LOG_LEVEL": "WARNING",
    }
    rows: list[list[object]] = []
    accepted = 0
    try:
        _with_channel(config, topology_declare)
        push = _supworker(env, f"{tag}-push", PUSHES, _push_body, "notification.push", "notifications_high")
        simple = _supworker(env, f"{tag}-spush", PUSHES, _push_body, "notification.push",
                            "notifications_high", worker_class="rq.worker.SimpleWorker")  # fmt: skip
        naive = _naive(redis, env, f"{tag}-npush", NAIVE_PUSHES, naive_push, _push_args)
        mail = _supworker(env, f"{tag}-mail", EMAILS, _email_body, "notification.email", "notifications")
        simple_mail = _supworker(env, f"{tag}-smail", EMAILS, _email_body, "notification.email", "notifications",
                                 worker_class="rq.worker.SimpleWorker")  # fmt: skip
        naive_mail = _naive(redis, env, f"{tag}-nmail", NAIVE_EMAILS, naive_email, _email_args)
        accepted = smtp.messages()
        # Read here, not at import: the loopback servers' spawned processes import this module
        # before Django is set up, when no app has declared its job types yet.
        push_batch = jobtypes.job_type("notification.push").batch_size
        email_batch = jobtypes.job_type("notification.email").batch_size
        rows = [
            [f"push, supworker (batches of {push_batch}, 100 sends in flight)", PUSHES, push, PUSHES / push,
             _verdict(PUSHES / push >= 1000)],
            ["push, supworker, SimpleWorker (no fork per RQ job)", PUSHES, simple, PUSHES / simple,
             _verdict(PUSHES / simple >= 1000)],
            ["push, naive (1 RQ job + send each)", NAIVE_PUSHES, naive, NAIVE_PUSHES / naive, ""],
            ["push speed-up (forking workers)", "", "", (PUSHES / push) / (NAIVE_PUSHES / naive),
             _verdict((PUSHES / push) / (NAIVE_PUSHES / naive) >= 10)],
            [f"e-mail, supworker (1 SMTP session per {email_batch})", EMAILS, mail, EMAILS / mail,
             _verdict(EMAILS / mail >= 300)],
            ["e-mail, supworker, SimpleWorker (no fork per RQ job)", EMAILS, simple_mail, EMAILS / simple_mail,
             _verdict(EMAILS / simple_mail >= 300)],
            ["e-mail, naive (1 RQ job + connection each)", NAIVE_EMAILS, naive_mail, NAIVE_EMAILS / naive_mail, ""],
        ]  # fmt: skip
    finally:
        _with_channel(config, topology_delete)
        Notification.objects.filter(job_id__startswith=tag).delete()
        redis.flushdb()
        fcm_process.kill()
        smtp.stop()
        settings.CONFIG = original
    return Table(
        title=f"Notifications end to end ({WORKERS} RQ worker processes, loopback FCM v1 server and smtp-sink)",
        columns=["design", "notifications", "seconds", "per second", "target"],
        rows=rows,
        notes=[
            "targets: push >= 1,000/s and >= 10x naive; e-mail >= 300/s. Every delivery is logged in `notifications`.",
            f"naive runs measure {NAIVE_PUSHES:,} pushes and {NAIVE_EMAILS:,} e-mails (RQ forks a process per job).",
            f"smtp-sink accepted {accepted:,} messages; {2 * EMAILS + NAIVE_EMAILS:,} were logged as sent.",
        ],
    )


def _with_channel(config, action) -> None:
    """A connection per step: a BlockingConnection left idle through a long phase misses its heartbeats."""
    connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
    try:
        action(connection.channel())
    finally:
        if connection.is_open:
            connection.close()


def topology_declare(channel) -> None:
    from supworker.rabbit import topology

    topology.declare(channel)


def topology_delete(channel) -> None:
    from django.conf import settings

    from supworker.rabbit import topology

    for queue in [source.queue for source in topology.sources()] + [topology.dead_letter_queue()]:
        channel.queue_delete(queue)
    channel.exchange_delete(settings.CONFIG.rabbitmq_exchange)
    channel.exchange_delete(topology.dead_letter_exchange())


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def _push_body(n: int, job_id: str) -> dict:
    return {"type": "push", "userId": str(uuid.uuid4()), "title": "New message",
            "body": f"You have a new message ({n})", "fcmToken": f"bench-token-{n}-{uuid.uuid4().hex}",
            "data": {"chatId": str(n)}, "jobId": job_id}  # fmt: skip


def _email_body(n: int, job_id: str) -> dict:
    return {"type": "email", "userId": str(uuid.uuid4()), "title": f"Weekly digest {n}",
            "body": "Here is what you missed this week.", "email": f"user{n}@example.com", "jobId": job_id}  # fmt: skip


def _push_args(n: int, job_id: str) -> tuple:
    return (job_id, str(uuid.uuid4()), f"bench-token-{n}", "New message", f"You have a new message ({n})")


def _email_args(n: int, job_id: str) -> tuple:
    return (job_id, str(uuid.uuid4()), f"user{n}@example.com", f"Weekly digest {n}", "Here is what you missed.")


def _workers(env: dict[str, str], queue: str, worker_class: str = "") -> list[subprocess.Popen]:
    extra = ["--worker-class", worker_class] if worker_class else []
    return [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "manage.py"),
                "rqworker",
                queue,
                "--name",
                f"bench-{uuid.uuid4().hex[:8]}",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for _ in range(WORKERS)
    ]


def _stop(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()


def _logged(prefix: str) -> int:
    from notifications.models import Notification

    return Notification.objects.filter(job_id__startswith=prefix, success=True).count()


def _wait_logged(prefix: str, goal: int, workers: list[subprocess.Popen]) -> None:
    last, moved_at = -1, time.monotonic()
    while (done := _logged(prefix)) < goal:
        if any(w.poll() is not None for w in workers):
            raise RuntimeError(f"a worker died at {done:,} of {goal:,} ({prefix})")
        if done != last:
            last, moved_at = done, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise RuntimeError(f"stalled at {done:,} of {goal:,} ({prefix})")
        time.sleep(0.1)


def _supworker(
    env, prefix: str, count: int, make_body, routing_key: str, rq_queue: str, worker_class: str = ""
) -> float:
    from django.conf import settings

    from supworker.rabbit.consumer import Consumer

    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)

    def publish(channel) -> None:
        for n in range(count):
            body = json.dumps(make_body(n, f"{prefix}-{n}")).encode()
            channel.basic_publish(settings.CONFIG.rabbitmq_exchange, routing_key, body, properties)

    _with_channel(settings.CONFIG, publish)
    workers = _workers(env, rq_queue, worker_class)
    time.sleep(3)  # let the workers start (Django set-up) before the clock runs
    import threading

    consumer = Consumer(name="bench-notifications")
    thread = threading.Thread(target=consumer.run, daemon=True)
    start = time.perf_counter()
    thread.start()
    try:
        _wait_logged(prefix, count, workers)
        return time.perf_counter() - start
    finally:
        consumer.stop()
        thread.join(30)
        _stop(workers)


def _naive(redis: Redis, env, prefix: str, count: int, function, make_args) -> float:
    workers = _workers(env, NAIVE_QUEUE)
    time.sleep(3)
    queue = Queue(NAIVE_QUEUE, connection=redis)
    start = time.perf_counter()
    try:
        jobs = [Queue.prepare_data(function, make_args(n, f"{prefix}-{n}")) for n in range(count)]
        for offset in range(0, count, 500):
            queue.enqueue_many(jobs[offset : offset + 500])
        _wait_logged(prefix, count, workers)
        return time.perf_counter() - start
    finally:
        _stop(workers)
