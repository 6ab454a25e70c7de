"""Faults the service must ride out without losing or repeating work: RabbitMQ and then Redis
restarted under 3,000 mixed jobs, and PostgreSQL unreachable for a while.

Everything runs as in production: `manage.py consume_rabbit` and `manage.py rqworker` are
separate processes, and the loopback FCM, SMTP and SMS servers (tests/notification_servers.py)
count what every job sent. The restarts are real server restarts of a Redis (with its AOF) and
a RabbitMQ (durable queues, persistent messages) that the test starts for itself with
scripts/services.sh, on other ports with its own data directory and node name: the shared
servers others test against are never touched. PostgreSQL stays up; the workers reach it
through a proxy (tests/fault_proxy.py) that cuts every connection and refuses new ones.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils import timezone
from redis import Redis
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from notifications.models import Notification
from supworker import jobtypes
from supworker.envelope import Envelope
from supworker.models import DeadLetter, JobRun
from supworker.models.messenger import Message, UserSession
from supworker.rabbit import topology
from tests.fault_proxy import FaultProxy
from tests.helpers import rq_items, start_manage, stop, wait_for
from tests.ingest_fixtures import dead_letters, publish_committed, queue_depth, subprocess_env
from tests.media_files import MediaFiles
from tests.notification_helpers import envelope, submit
from tests.notification_servers import SmtpServer
from tests.testenv import SLOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
pytest_plugins = ["tests.notification_fixtures", "tests.media_fixtures"]

USER = str(uuid.uuid4())
IMAGES = ("rotated_gps.jpg", "alpha.png")  # small real images: a JPEG photo and a PNG with transparency


# --- the service's processes ----------------------------------------------------------------
WORKERS = {
    "media": ["rqworker", "media_high", "media", "--with-scheduler"],
    "notifications.1": ["rqworker", "notifications_high", "notifications", "--with-scheduler"],
    "notifications.2": ["rqworker", "notifications_high", "notifications", "--with-scheduler"],
    "cleanup": ["rqworker", "cleanup", "--with-scheduler"],
}


def service_env(fcm_server, smtp_server, sms_server, tmp_path: Path, **overrides: str) -> dict[str, str]:
    """What every process gets: the loopback providers, no rate limits, quick retries."""
    return (
        subprocess_env({})
        | {
            "REDIS_URL": settings.CONFIG.redis_url,
            "RABBITMQ_URL": settings.CONFIG.rabbitmq_url,
            "RABBITMQ_EXCHANGE": settings.CONFIG.rabbitmq_exchange,
            "RABBITMQ_QUEUE_PREFIX": settings.CONFIG.rabbitmq_queue_prefix,
            "RABBITMQ_QUEUE_NAME": settings.CONFIG.rabbitmq_queue_name,
            "FCM_ENDPOINT": fcm_server.url,
            "FCM_ACCESS_TOKEN": fcm_server.token,
            "FCM_PROJECT_ID": "sup-loopback",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp_server.port),
            "SMTP_SECURITY": "none",
            "SMS_BACKEND": "vonage",
            "SMS_API_URL": sms_server.url,
            "SMS_API_KEY": sms_server.key,
            "SMS_API_SECRET": sms_server.secret,
            "SMS_FROM_NUMBER": "+14155550100",
            "EMAIL_RATE_PER_SECOND": "0",
            "SMS_RATE_PER_SECOND": "0",
            "LOG_DIR": str(tmp_path / "logs"),
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
        }
        | overrides
    )


class Stack:
    """The consumer and the RQ workers as subprocesses, stopped (SIGTERM) at the end."""

    def __init__(self, env: dict[str, str], tmp_path: Path):
        self.env, self.tmp_path = env, tmp_path
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for name, args in {"consumer": ["consume_rabbit"], **WORKERS}.items():
            self.processes[name] = start_manage(*args, log_path=self.log_path(name), env=self.env)

    def log_path(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def log(self, name: str) -> str:
        return self.log_path(name).read_text()

    def dead(self) -> dict[str, int]:
        return {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}

    def stop(self) -> dict[str, int]:
        return {name: stop(process, timeout=60) for name, process in self.processes.items()}


@pytest.fixture
def stack_factory(tmp_path) -> Iterator:
    stacks: list[Stack] = []

    def make(env: dict[str, str]) -> Stack:
        stack = Stack(env, tmp_path)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


# --- the jobs -------------------------------------------------------------------------------
@dataclasses.dataclass
class Mix:
    """Messages as the messenger publishes them, and what each must cause exactly once."""

    tag: str
    messages: list[tuple[str, dict]] = dataclasses.field(default_factory=list)  # (routing key, body)
    tokens: list[str] = dataclasses.field(default_factory=list)
    emails: list[str] = dataclasses.field(default_factory=list)
    phones: list[str] = dataclasses.field(default_factory=list)
    media_messages: list[uuid.UUID] = dataclasses.field(default_factory=list)
    cleanups: list[str] = dataclasses.field(default_factory=list)

    @property
    def job_ids(self) -> set[str]:
        return {body["jobId"] for _, body in self.messages}

    @property
    def notification_ids(self) -> set[str]:
        return {body["jobId"] for key, body in self.messages if key.startswith("notification.")}


def make_mix(tag: str, push: int, email: int, sms: int, image: int, cleanup: int, media_files: MediaFiles) -> Mix:
    """Interleaved, so that every slice of the list is itself a mix of every type."""
    mix = Mix(tag)
    streams: list[list[tuple[str, dict]]] = [[], [], [], [], []]
    for n in range(push):
        mix.tokens.append(f"{tag}-token-{n}")
        streams[0].append(("notification.push", {"type": "push", "jobId": f"{tag}-push-{n}", "userId": USER,
                           "title": "Dana", "body": f"push {n}", "fcmToken": mix.tokens[-1]}))  # fmt: skip
    for n in range(email):
        mix.emails.append(f"{tag}-{n}@example.com")
        streams[1].append(("notification.email", {"type": "email", "jobId": f"{tag}-email-{n}", "userId": USER,
                           "title": "Hello", "body": f"e-mail {n}", "email": mix.emails[-1]}))  # fmt: skip
    for n in range(sms):
        mix.phones.append(f"+1415{SLOT}{n:06d}")
        streams[2].append(("notification.sms", {"type": "sms", "jobId": f"{tag}-sms-{n}", "userId": USER,
                           "title": "Code", "body": f"sms {n}", "phoneNumber": mix.phones[-1]}))  # fmt: skip
    for n in range(image):
        fixture = IMAGES[n % len(IMAGES)]
        with open(media_files(fixture), "rb") as handle:
            key = default_storage.save(f"uploads/{tag}/{n}/{fixture}", handle)
        message = Message.objects.create(sender_id=uuid.uuid4(), chat_id=uuid.uuid4(), media_status="queued")
        mix.media_messages.append(message.id)
        streams[3].append(("media.image", {"type": "image", "jobId": f"{tag}-image-{n}", "userId": USER,
                           "messageId": str(message.id), "s3Key": key, "originalName": fixture}))  # fmt: skip
    for n in range(cleanup):
        mix.cleanups.append(f"{tag}-cleanup-{n}")
        streams[4].append(("cleanup.sessions", {"type": "sessions", "jobId": mix.cleanups[-1]}))
    # Each stream spread evenly over the whole list.
    positioned = [((i + 0.5) / len(stream), k, i) for k, stream in enumerate(streams) for i in range(len(stream))]
    mix.messages = [streams[k][i] for _, k, i in sorted(positioned)]
    assert len(mix.messages) == push + email + sms + image + cleanup
    return mix


def publish(messages: list[tuple[str, dict]]) -> None:
    publish_committed([(routing_key, json.dumps(body).encode()) for routing_key, body in messages])


def stale_sessions(count: int, fresh: int) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """Sessions the `sessions` cleanup must remove (inactive for 60 days) and keep."""
    old = timezone.now() - timedelta(days=60)
    stale = UserSession.objects.bulk_create(UserSession(user_id=uuid.uuid4(), last_active_at=old) for _ in range(count))
    kept = UserSession.objects.bulk_create(
        UserSession(user_id=uuid.uuid4(), last_active_at=timezone.now()) for _ in range(fresh)
    )
    return {s.id for s in stale}, {s.id for s in kept}


def rabbit_backlog() -> int:
    return sum(queue_depth(source.queue) for source in topology.sources())


def succeeded(mix: Mix) -> int:
    return JobRun.objects.filter(job_id__startswith=f"{mix.tag}-", status="succeeded").count()


# --- what a user would check afterwards -------------------------------------------------------
def assert_every_effect_exactly_once(mix: Mix, fcm_server, smtp_server, sms_server) -> None:
    runs = dict(JobRun.objects.filter(job_id__startswith=f"{mix.tag}-").values_list("job_id", "status"))
    assert set(runs) == mix.job_ids, f"{len(mix.job_ids - set(runs))} job(s) never ran"
    assert Counter(runs.values()) == {"succeeded": len(mix.job_ids)}

    pushes = Counter(request["message"]["token"] for request in fcm_server.requests)
    assert set(pushes) == set(mix.tokens), f"{len(set(mix.tokens) - set(pushes))} push(es) never sent"
    assert {t: n for t, n in pushes.items() if n > 1} == {}, "pushes sent more than once"
    emails = Counter(rcpt for _, rcpts in smtp_server.envelopes for rcpt in rcpts)
    assert set(emails) == set(mix.emails), f"{len(set(mix.emails) - set(emails))} e-mail(s) never sent"
    assert {a: n for a, n in emails.items() if n > 1} == {}, "e-mails sent more than once"
    texts = Counter("+" + form["to"] for form in sms_server.requests)
    assert set(texts) == set(mix.phones), f"{len(set(mix.phones) - set(texts))} SMS never sent"
    assert {p: n for p, n in texts.items() if n > 1} == {}, "SMS sent more than once"

    rows = Counter(
        (job_id, success) for job_id, success in Notification.objects.filter(job_id__in=mix.notification_ids)
        .values_list("job_id", "success")
    )  # fmt: skip
    assert rows == {(job_id, True): 1 for job_id in mix.notification_ids}, "one successful log row per notification"

    messages = Message.objects.filter(id__in=mix.media_messages)
    assert Counter(m.media_status for m in messages) == {"ready": len(mix.media_messages)}
    for message in messages:
        assert default_storage.exists(message.media_url) and default_storage.exists(message.thumbnail_url)

    assert DeadLetter.objects.count() == 0, list(DeadLetter.objects.values_list("job_id", "error")[:5])
    assert dead_letters() == [], "nothing was dead-lettered in RabbitMQ"


def assert_nothing_left(redis: Redis) -> None:
    for spec in jobtypes.queues():
        queue = Queue(spec.name, connection=redis)
        left = {
            "queued": queue.count,
            "scheduled": ScheduledJobRegistry(queue=queue).count,
            "started": StartedJobRegistry(queue=queue).count,
            "failed": FailedJobRegistry(queue=queue).count,
        }
        assert left == dict.fromkeys(left, 0), f"RQ queue {spec.name}: {left}"
    assert rabbit_backlog() == 0, "messages left in RabbitMQ"


# --- the tests --------------------------------------------------------------------------------
def test_rabbitmq_then_redis_restarted_under_3000_mixed_jobs_every_effect_happens_exactly_once(
    own_servers, fcm_server, smtp_server, sms_server, media_files, stack_factory, tmp_path
):
    stale, fresh = stale_sessions(300, 20)
    mix = make_mix("rr", push=1320, email=780, sms=780, image=60, cleanup=60, media_files=media_files)
    phase_a, phase_b, phase_c = mix.messages[:1200], mix.messages[1200:2100], mix.messages[2100:]
    # Retries (1, 2, 4 and then 8 s, 47 s in all) outlast a RabbitMQ restart, as the defaults (5,
    # 10, 20 s) do in production: a media job cannot publish its event meanwhile. (With 23 s in
    # all, a restart on two loaded cores once outlasted them and an image failed for good.) The
    # consumer gathers up to 300 ms of messages per batch, as under a backlog.
    env = service_env(
        fcm_server, smtp_server, sms_server, tmp_path,
        BASE_DELAY_MS="1000", MAX_DELAY_MS="8000", MAX_RETRIES="8", CONSUMER_FLUSH_MS="300",
    )  # fmt: skip
    stack = stack_factory(env)
    redis = Redis.from_url(own_servers.redis_url)
    publish(phase_a)
    stack.start()

    # RabbitMQ restarted while the workers run the first jobs: media workers lose it mid-job
    # (their events cannot be published), the consumer loses its connection.
    wait_for(lambda: succeeded(mix) >= 100, 60, "the first jobs to run")
    own_servers.restart("rabbitmq")
    publish(phase_b)
    wait_for(lambda: rabbit_backlog() == 0, 60, "the consumer to reconnect and take what was published since")

    # Redis restarted with jobs queued, scheduled and running; what is published meanwhile
    # waits in RabbitMQ.
    waiting_in_rq = sum(Queue(spec.name, connection=redis).count for spec in jobtypes.queues())
    own_servers.services("down", "redis")
    publish(phase_c)
    time.sleep(2)
    own_servers.services("up", "redis")
    assert waiting_in_rq > 0, "Redis went down with jobs in its queues"

    wait_for(lambda: succeeded(mix) == len(mix.messages), 180, "every job to succeed")
    assert stack.dead() == {}, "every process rode out both restarts"
    assert "RabbitMQ connection lost" in stack.log("consumer"), "the RabbitMQ restart really cut the consumer off"

    assert_every_effect_exactly_once(mix, fcm_server, smtp_server, sms_server)
    assert UserSession.objects.filter(id__in=stale).count() == 0
    assert UserSession.objects.filter(id__in=fresh).count() == len(fresh)
    assert_nothing_left(redis)
    assert stack.stop() == dict.fromkeys(stack.processes, 0), "every process stops cleanly"


def test_postgresql_unreachable_for_a_while_jobs_are_retried_and_none_is_lost(
    rabbit_names, redis_conn, fcm_server, smtp_server, sms_server, media_files, stack_factory, tmp_path
):
    db = settings.DATABASES["default"]
    proxy = FaultProxy(db["HOST"], int(db["PORT"]))
    stale, _ = stale_sessions(100, 0)
    mix = make_mix("pg", push=300, email=200, sms=200, image=20, cleanup=20, media_files=media_files)
    # Media and cleanup jobs are cut off mid-job; notifications only start once PostgreSQL is
    # away (the test below covers one cut off between sending and recording).
    first = [m for m in mix.messages if not m[0].startswith("notification.")][:20] + mix.messages[:300]
    first_notifications = {body["jobId"] for key, body in first if key.startswith("notification.")}
    later = [m for m in mix.messages if m not in first]
    through_proxy = f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{proxy.port}/{db['NAME']}"
    # Retries (1, 2, 4, 4, 4 s) outlast the outage.
    env = service_env(
        fcm_server, smtp_server, sms_server, tmp_path,
        DATABASE_URL=through_proxy, BASE_DELAY_MS="1000", MAX_DELAY_MS="4000", MAX_RETRIES="5",
    )  # fmt: skip
    stack = stack_factory(env)
    stack.start()
    try:
        publish(first)
        wait_for(
            lambda: (
                JobRun.objects.filter(job_id__in=first_notifications, status="succeeded").count()
                == len(first_notifications)
            ),
            60,
            "the first notifications to be sent",
        )
        proxy.cut()  # every connection reset, mid-job for media and cleanup; new ones refused
        publish(later)  # these start, and fail, while PostgreSQL is away
        time.sleep(6)
        proxy.restore()
        wait_for(lambda: succeeded(mix) == len(mix.messages), 120, "every job to succeed after the outage")
    finally:
        proxy.close()
    assert stack.dead() == {}, "every process rode out the outage"
    logs = "".join(stack.log(name) for name in WORKERS)
    assert "OperationalError" in logs, "jobs really failed during the outage"

    assert_every_effect_exactly_once(mix, fcm_server, smtp_server, sms_server)
    assert UserSession.objects.filter(id__in=stale).count() == 0
    assert_nothing_left(redis_conn)
    assert stack.stop() == dict.fromkeys(stack.processes, 0)


def test_a_consumer_started_while_redis_is_down_waits_for_it(rabbit_names, own_redis, tmp_path):
    subprocess.run(["redis-cli", "-p", str(own_redis.connection_pool.connection_kwargs["port"]), "shutdown"])
    env = subprocess_env(rabbit_names) | {"REDIS_URL": own_redis.url}
    consumer = start_manage("consume_rabbit", log_path=tmp_path / "consumer.log", env=env)
    try:
        publish([("cleanup.sessions", {"type": "sessions", "jobId": f"early-{n}"}) for n in range(20)])
        wait_for(lambda: "Redis unavailable" in (tmp_path / "consumer.log").read_text(), 30, "the consumer to try")
        assert consumer.poll() is None, "the consumer waits for Redis instead of exiting"
        own_redis.restart()
        wait_for(lambda: len(rq_items(own_redis, "cleanup")) == 20, 30, "the jobs, once Redis is up")
    finally:
        assert stop(consumer) == 0
    assert rabbit_backlog() == 0


class CuttingSmtpServer(SmtpServer):
    """Takes PostgreSQL away (cuts `proxy`) the moment it has accepted its `after`-th message,
    before the "250" reaches the worker, and brings it back `outage` seconds later: that message
    is sent, its outcome not yet recorded."""

    def __init__(self, proxy: FaultProxy, after: int, outage: float):
        super().__init__()
        inner, outer = self.controller.handler, self

        class Handler:
            async def handle_RCPT(self, *args):
                return await inner.handle_RCPT(*args)

            async def handle_DATA(self, server, session, envelope):
                answer = await inner.handle_DATA(server, session, envelope)
                if outer.count() == after:
                    proxy.cut()
                    threading.Timer(outage, proxy.restore).start()
                return answer

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


def worker_through(proxy: FaultProxy, smtp: SmtpServer, tmp_path: Path, *extra: str) -> subprocess.Popen:
    """One notifications worker whose PostgreSQL is behind `proxy`."""
    db = settings.DATABASES["default"]
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@127.0.0.1:{proxy.port}/{db['NAME']}",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "EMAIL_RATE_PER_SECOND": "0",
        "LOG_DIR": str(tmp_path / "logs"),
    }
    args = ["rqworker", "notifications_high", "notifications", "--with-scheduler", *extra]
    return start_manage(*args, log_path=tmp_path / "worker.log", env=env)


def emails(tag: str, count: int) -> list[Envelope]:
    return [
        envelope("notification.email", job_id=f"{tag}-{n}", email=f"{tag}-{n}@example.com", title="Hi", body="b")
        for n in range(count)
    ]


def assert_sent_once(smtp: SmtpServer, envelopes: list[Envelope]) -> None:
    sent = Counter(rcpt for _, rcpts in smtp.envelopes for rcpt in rcpts)
    assert sent == {e.payload["email"]: 1 for e in envelopes}
    rows = Counter(
        Notification.objects.filter(job_id__in=[e.job_id for e in envelopes]).values_list("success", flat=True)
    )
    assert rows == {True: len(envelopes)}


def test_postgresql_lost_between_sending_an_email_and_recording_it_the_email_goes_once(redis_conn, settings, tmp_path):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, base_delay_ms=1000, max_delay_ms=4000)
    db = settings.DATABASES["default"]
    proxy = FaultProxy(db["HOST"], int(db["PORT"]))
    smtp = CuttingSmtpServer(proxy, after=10, outage=4)
    smtp.start()
    worker = worker_through(proxy, smtp, tmp_path)
    try:
        batch = submit(redis_conn, *emails("cut", 30))  # one RQ job
        wait_for(
            lambda: JobRun.objects.filter(job_id__startswith="cut-", status="succeeded").count() == 30,
            60,
            "the batch to succeed",
        )
    finally:
        stop(worker)
        smtp.stop()
        proxy.close()
    assert_sent_once(smtp, batch)


def test_a_worker_that_does_not_fork_works_again_once_postgresql_is_back(redis_conn, smtp_server, settings, tmp_path):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, base_delay_ms=1000, max_delay_ms=2000)
    db = settings.DATABASES["default"]
    proxy = FaultProxy(db["HOST"], int(db["PORT"]))
    worker = worker_through(proxy, smtp_server, tmp_path, "--worker-class", "rq.worker.SimpleWorker")
    try:
        before = submit(redis_conn, *emails("before", 5))
        wait_for(lambda: JobRun.objects.filter(job_id__startswith="before-", status="succeeded").count() == 5,
                 60, "the first batch")  # fmt: skip
        proxy.cut()  # the worker's idle connection is reset
        proxy.restore()  # and PostgreSQL is reachable again at once
        after = submit(redis_conn, *emails("after", 5))
        wait_for(lambda: JobRun.objects.filter(job_id__startswith="after-", status="succeeded").count() == 5,
                 15, "the batch submitted after the outage")  # fmt: skip
    finally:
        stop(worker)
        proxy.close()
    assert_sent_once(smtp_server, before + after)
