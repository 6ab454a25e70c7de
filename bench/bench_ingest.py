"""Ingestion throughput: drain 20,000 valid notification messages from RabbitMQ into RQ, once
through supworker's consumer and once through a bare pika consume + RQ `enqueue_many` loop
(the ceiling), on the same machine in the same run. Targets: at least 5,000 msgs/s and at
least 0.8 of the ceiling.

Publishing is never timed: the queue is filled first, then drained. Everything runs under its
own exchange, queue names and Redis database, so tests and services sharing the broker and
Redis are not disturbed, and all of it is removed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pika
from pika.adapters.blocking_connection import BlockingChannel
from redis import Redis
from rq import Queue
from rq.job import Job

from bench.table import Table
from supworker import jobtypes
from supworker.config import Config

MESSAGES = 20_000
BATCH = 500  # the bare loop's prefetch window and enqueue batch (the consumer's default prefetch)
ROUTING_KEY = "notification.push"
RQ_QUEUE = "notifications_high"  # where supworker.policy sends notification.push
REDIS_DB = 13  # tests use 15, bench_rq_enqueue 14
STALL_SECONDS = 20.0  # no progress for this long means something is broken, not slow
TARGET_RATE = 5_000
TARGET_SHARE = 0.8


@dataclasses.dataclass
class Drain:
    seconds: float
    cpu_seconds: float  # of this whole process, all threads: the bench's own polling is negligible


def run() -> Table:
    from django.conf import settings

    original = settings.CONFIG
    # supworker reads settings.CONFIG at call time, so this redirects consumer, topology and enqueue.
    settings.CONFIG = dataclasses.replace(
        original,
        rabbitmq_exchange="bench_exchange",
        rabbitmq_queue_prefix="bench",
        rabbitmq_queue_name="bench_otp",
        redis_url=_with_db(original.redis_url, REDIS_DB),
    )
    config: Config = settings.CONFIG
    redis = Redis.from_url(config.redis_url)
    connection: pika.BlockingConnection | None = None
    try:
        connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
        channel = connection.channel()
        _declare(channel)
        bodies, expected_ids = _messages()

        _fill(channel, redis, bodies)
        supworker, consumer_stats = _drain_supworker()
        rq_jobs = _verify_supworker(channel, redis, expected_ids, consumer_stats)

        _fill(channel, redis, bodies)
        ceiling = _drain_bare(config, redis)
        _verify_bare(channel, redis, expected_ids)
    finally:
        redis.flushdb()
        if connection is not None and connection.is_open:
            _teardown(connection.channel())
            connection.close()
        settings.CONFIG = original
    return _table(supworker, ceiling, rq_jobs)


# --- set-up and clean-up ------------------------------------------------------------------------
def _with_db(url: str, db: int) -> str:
    """The same Redis server, another database (a `db` query argument would win over the path)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "db"]
    if parts.scheme == "unix":
        return urlunsplit(parts._replace(query=urlencode([*query, ("db", str(db))])))
    return urlunsplit(parts._replace(path=f"/{db}", query=urlencode(query)))


def _declare(channel: BlockingChannel) -> None:
    from supworker.rabbit import topology

    topology.declare(channel)


def _bench_queues() -> list[str]:
    from supworker.rabbit import topology

    return [source.queue for source in topology.sources()] + [topology.dead_letter_queue()]


def _notification_queue() -> str:
    from supworker.rabbit import topology

    return next(source.queue for source in topology.sources() if source.domain == "notification")


def _teardown(channel: BlockingChannel) -> None:
    from django.conf import settings

    from supworker.rabbit import topology

    for queue in _bench_queues():
        channel.queue_delete(queue)
    channel.exchange_delete(settings.CONFIG.rabbitmq_exchange)
    channel.exchange_delete(topology.dead_letter_exchange())


# --- messages -------------------------------------------------------------------------------
def _messages() -> tuple[list[bytes], set[str]]:
    bodies = [
        json.dumps(
            {
                "type": "push",
                "userId": str(uuid.uuid4()),
                "title": "New message",
                "body": f"You have a new message from a contact ({n})",
                "fcmToken": f"bench-fcm-token-{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "jobId": f"bench-{n}",
            }
        ).encode()
        for n in range(MESSAGES)
    ]
    return bodies, {f"bench-{n}" for n in range(MESSAGES)}


def _ready(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def _fill(channel: BlockingChannel, redis: Redis, bodies: list[bytes]) -> None:
    """Empty the bench queues and Redis database, then publish and wait until all messages are ready."""
    from django.conf import settings

    for queue in _bench_queues():
        channel.queue_purge(queue)
    redis.flushdb()
    # No publisher confirms (one round trip each is slow); waiting for the count instead
    # proves every message arrived before the drain starts.
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    for body in bodies:
        channel.basic_publish(settings.CONFIG.rabbitmq_exchange, ROUTING_KEY, body, properties)
    queue = _notification_queue()
    _wait_for(lambda: _ready(channel, queue), len(bodies), f"messages ready in {queue}", poll=0.05)
    if _ready(channel, queue) != len(bodies):
        raise RuntimeError(f"{queue} holds {_ready(channel, queue)} messages, expected {len(bodies)}")


def _wait_for(
    progress: Callable[[], int], goal: int, what: str, poll: float, alive: Callable[[], bool] = lambda: True
) -> None:
    """Poll until progress() reaches goal; fail when it stops moving or the worker died."""
    last, moved_at = -1, time.monotonic()
    while (now := progress()) < goal:
        if not alive():
            raise RuntimeError(f"stopped at {now:,} of {goal:,} {what}")
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise RuntimeError(f"stalled at {now:,} of {goal:,} {what} for {STALL_SECONDS:.0f} s")
        time.sleep(poll)


# --- phase A: supworker's consumer ----------------------------------------------------------------
def _drain_supworker() -> tuple[Drain, dict[str, object]]:
    from supworker.rabbit.consumer import Consumer

    consumer = Consumer(name="bench")
    errors: list[BaseException] = []

    def target() -> None:
        try:
            consumer.run()
        except Exception as exc:  # noqa: BLE001 - handed to the main thread, which raises it
            errors.append(exc)

    thread = threading.Thread(target=target, name="bench-consumer", daemon=True)
    start, cpu = time.perf_counter(), time.process_time()
    thread.start()
    try:
        # enqueuedJobs counts envelopes written to Redis by a committed transaction; a 2 ms
        # poll costs the consumer thread little GIL time.
        _wait_for(lambda: consumer.stats.enqueuedJobs, MESSAGES, "messages enqueued", 0.002, thread.is_alive)
        drain = Drain(time.perf_counter() - start, time.process_time() - cpu)
    finally:
        consumer.stop()
        thread.join(timeout=30)
    if errors:
        raise RuntimeError(f"the consumer failed: {errors[0]!r}") from errors[0]
    if thread.is_alive():
        raise RuntimeError("the consumer did not stop within 30 s of stop()")
    return drain, dataclasses.asdict(consumer.stats)


def _rq_jobs(redis: Redis) -> list[Job]:
    queue = Queue(RQ_QUEUE, connection=redis)
    jobs = Job.fetch_many(queue.get_job_ids(), connection=redis)
    if any(job is None for job in jobs):
        raise RuntimeError(f"{RQ_QUEUE} lists job ids whose job hash is missing")
    return jobs


def _verify_supworker(channel: BlockingChannel, redis: Redis, expected_ids: set[str], stats: dict[str, object]) -> int:
    """A figure is only worth printing if every message became exactly one item; returns the RQ job count."""
    jobs = _rq_jobs(redis)
    items = [item for job in jobs for item in job.args[0]]
    ids = [item["job_id"] for item in items]
    problems = []
    if len(items) != MESSAGES or set(ids) != expected_ids:
        problems.append(
            f"{len(items):,} items in {len(jobs):,} RQ jobs, {len(set(ids)):,} distinct job ids,"
            f" {len(expected_ids - set(ids)):,} missing, {len(set(ids) - expected_ids):,} unexpected"
        )
    if stats["enqueuedJobs"] != MESSAGES or stats["rejectedMessages"] or stats["duplicateMessages"]:
        problems.append(f"consumer stats {stats}")
    problems.extend(_leftovers(channel))
    if problems:
        raise RuntimeError("supworker's drain counted wrong: " + "; ".join(problems))
    return len(jobs)


def _leftovers(channel: BlockingChannel) -> list[str]:
    """Messages still in RabbitMQ once the consumer's connection is closed (unacked ones are back)."""
    return [f"{count:,} messages left in {queue}" for queue in _bench_queues() if (count := _ready(channel, queue))]


# --- phase B: the ceiling -------------------------------------------------------------------------
def _drain_bare(config: Config, redis: Redis) -> Drain:
    """Only what ingestion cannot avoid: consume, parse, one enqueue_many per window, one ack."""
    queue = Queue(RQ_QUEUE, connection=redis)
    start, cpu = time.perf_counter(), time.process_time()
    connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=BATCH)
        pending: list[tuple[int, bytes]] = []
        done, moved_at = 0, time.monotonic()
        # A short inactivity timeout yields (None, None, None): flush a partial window then.
        for method, _properties, body in channel.consume(_notification_queue(), inactivity_timeout=0.02):
            if method is not None:
                pending.append((method.delivery_tag, body))
            if pending and (method is None or len(pending) >= BATCH):
                jobs = [Queue.prepare_data("bench.noop", args=(json.loads(data),)) for _, data in pending]
                queue.enqueue_many(jobs)
                channel.basic_ack(pending[-1][0], multiple=True)
                done, pending, moved_at = done + len(pending), [], time.monotonic()
                if done >= MESSAGES:
                    break
            elif method is None and time.monotonic() - moved_at > STALL_SECONDS:
                raise RuntimeError(f"the bare loop stalled at {done:,} of {MESSAGES:,} messages")
        drain = Drain(time.perf_counter() - start, time.process_time() - cpu)
        channel.cancel()
    finally:
        connection.close()
    return drain


def _verify_bare(channel: BlockingChannel, redis: Redis, expected_ids: set[str]) -> None:
    ids = [job.args[0]["jobId"] for job in _rq_jobs(redis)]
    problems = _leftovers(channel)
    if len(ids) != MESSAGES or set(ids) != expected_ids:
        problems.append(f"{len(ids):,} RQ jobs, {len(set(ids)):,} distinct job ids")
    if problems:
        raise RuntimeError("the bare loop counted wrong: " + "; ".join(problems))


# --- result ---------------------------------------------------------------------------------
def _table(supworker: Drain, ceiling: Drain, rq_jobs: int) -> Table:
    rate, ceiling_rate = MESSAGES / supworker.seconds, MESSAGES / ceiling.seconds
    share = rate / ceiling_rate
    table = Table(
        f"Ingestion: drain {MESSAGES:,} notification messages RabbitMQ → RQ",
        ["pipeline", "seconds", "msgs/s", "vs ceiling", "process CPU s"],
    )
    table.rows.append(["supworker consumer", supworker.seconds, rate, f"{share:.2f}", supworker.cpu_seconds])
    table.rows.append(
        ["bare pika + enqueue_many (ceiling)", ceiling.seconds, ceiling_rate, "1.00", ceiling.cpu_seconds]
    )
    table.notes.append(
        f"targets: ≥ {TARGET_RATE:,} msgs/s {'met' if rate >= TARGET_RATE else 'NOT met'};"
        f" ≥ {TARGET_SHARE} of the ceiling {'met' if share >= TARGET_SHARE else 'NOT met'}"
    )
    table.notes.append(
        f"supworker made {rq_jobs:,} RQ jobs (micro-batches of up to {jobtypes.job_type(ROUTING_KEY).batch_size});"
        f" the ceiling made {MESSAGES:,},"
        f" one per message. Timed from connecting to the last enqueue; publishing is not timed."
    )
    return table
