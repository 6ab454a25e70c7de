"""Ingestion throughput: drain 20,000 valid notification messages from RabbitMQ into RQ.

Three pipelines drain the same messages in one run:
- `manage.py consume_rabbit`, a process started from the Procfile's line with the operator's
  settings (only the queue names and the Redis database are the benchmark's own): what
  production gets. Timed from its first batch in Redis to its last, so Django's start-up is
  not counted; its CPU is read from outside (psutil).
- the same consumer code in a thread of this process (in-process: isolates the consumer's code
  from process start-up and configuration; labelled as such);
- a bare pika consume + RQ `enqueue_many` loop, one RQ job per message, in this process: the
  comparison.
Targets: at least 10,000 msgs/s for the process and at least 2x the bare loop.

Publishing is never timed: the queue is filled first, then drained. Everything runs under its
own exchange, queue names and Redis database, so tests and services sharing the broker and
Redis are not disturbed, and all of it is removed at the end.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
from pika.adapters.blocking_connection import BlockingChannel
from redis import Redis
from rq import Queue
from rq.job import Job

from bench import deployed
from bench.table import Table
from supworker import jobtypes
from supworker.config import Config

MESSAGES = 20_000
BATCH = 500  # the bare loop's prefetch window and enqueue batch (the consumer's default prefetch)
ROUTING_KEY = "notification.push"
RQ_QUEUE = "notifications_high"  # where supworker.policy sends notification.push
REDIS_DB = 13  # tests use 8-11 and 15, bench_cleanup and bench_rq_enqueue 14
TAG = "bench"
STALL_SECONDS = 20.0  # no progress for this long means something is broken, not slow
TARGET_RATE = 10_000
TARGET_TIMES_BARE = 2.0


@dataclasses.dataclass
class Drain:
    pipeline: str
    messages: int  # those timed: the deployed process's first batch lands before its clock starts
    seconds: float
    cpu_seconds: float  # of the consumer: its process, or this whole process for the in-process two

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def run() -> Table:
    from django.conf import settings

    original = settings.CONFIG
    redis_url = deployed.with_redis_db(original.redis_url, REDIS_DB)
    # supworker reads settings.CONFIG at call time, so this redirects topology and the in-process
    # consumer to the same names the process gets from its environment.
    settings.CONFIG = deployed.own_config(original, TAG, redis_url)
    config: Config = settings.CONFIG
    redis = Redis.from_url(config.redis_url)
    connection: pika.BlockingConnection | None = None
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-ingest-"))
    try:
        connection = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_urls[0]))
        channel = connection.channel()
        _declare(channel)
        bodies, expected_ids = _messages()

        _fill(channel, redis, bodies)
        process, stats, rq_jobs = _drain_process(redis, redis_url, work)
        _verify_supworker(channel, redis, expected_ids, stats)

        _fill(channel, redis, bodies)
        in_process, stats = _drain_in_process()
        _verify_supworker(channel, redis, expected_ids, stats)

        _fill(channel, redis, bodies)
        bare = _drain_bare(config, redis)
        _verify_bare(channel, redis, expected_ids)
    finally:
        redis.flushdb()
        if connection is not None and connection.is_open:
            _teardown(connection.channel())
            connection.close()
        settings.CONFIG = original
    return _table(process, in_process, bare, rq_jobs)


# --- set-up and clean-up ------------------------------------------------------------------------
def _declare(channel: BlockingChannel) -> None:
    from supworker.rabbit import topology

    topology.declare(channel)


def _bench_queues() -> list[str]:
    from supworker.rabbit import topology

    return [source.queue for source in topology.sources()] + [topology.dead_letter_queue()]


def _notification_queue() -> str:
    return _source_queue("notification")


def _source_queue(domain: str) -> str:
    """supworker's RabbitMQ queue of a domain (under the current settings' names)."""
    from supworker.rabbit import topology

    return next(source.queue for source in topology.sources() if source.domain == domain)


def _teardown(channel: BlockingChannel) -> None:
    from django.conf import settings

    from supworker.rabbit import topology

    for queue in _bench_queues():
        channel.queue_delete(queue)
    channel.exchange_delete(settings.CONFIG.rabbitmq_exchange)
    channel.exchange_delete(topology.dead_letter_exchange())


# --- messages -------------------------------------------------------------------------------
def push_body(n: int, job_id: str) -> bytes:
    """A `notification.push` message as the messenger publishes it (bench_drain publishes these too)."""
    return json.dumps(
        {
            "type": "push",
            "userId": str(uuid.uuid4()),
            "title": "New message",
            "body": f"You have a new message from a contact ({n})",
            "fcmToken": f"bench-fcm-token-{uuid.uuid4().hex}{uuid.uuid4().hex}",
            "jobId": job_id,
        }
    ).encode()


def _messages(count: int = MESSAGES) -> tuple[list[bytes], set[str]]:
    bodies = [push_body(n, f"bench-{n}") for n in range(count)]
    return bodies, {f"bench-{n}" for n in range(count)}


def _ready(channel: BlockingChannel, queue: str) -> int:
    return channel.queue_declare(queue, passive=True).method.message_count


def _fill(
    channel: BlockingChannel,
    redis: Redis,
    bodies: list[bytes],
    routing_key: str = ROUTING_KEY,
    domain: str = "notification",
) -> None:
    """Empty the bench queues and Redis database, then publish and wait until all messages are ready."""
    from django.conf import settings

    for queue in _bench_queues():
        channel.queue_purge(queue)
    redis.flushdb()
    # No publisher confirms (one round trip each is slow); waiting for the count instead
    # proves every message arrived before the drain starts.
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    for body in bodies:
        channel.basic_publish(settings.CONFIG.rabbitmq_exchange, routing_key, body, properties)
    queue = _source_queue(domain)
    _wait_for(lambda: _ready(channel, queue), len(bodies), f"messages ready in {queue}", poll=0.05)
    if _ready(channel, queue) != len(bodies):
        raise RuntimeError(f"{queue} holds {_ready(channel, queue)} messages, expected {len(bodies)}")


def _wait_for(
    progress: Callable[[], int],
    goal: int,
    what: str,
    poll: float,
    alive: Callable[[], bool] = lambda: True,
    stall: float = STALL_SECONDS,
) -> None:
    """Poll until progress() reaches goal; fail when it stops moving for `stall` s or the worker died."""
    last, moved_at = -1, time.monotonic()
    while (now := progress()) < goal:
        if not alive():
            raise RuntimeError(f"stopped at {now:,} of {goal:,} {what}")
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > stall:
            raise RuntimeError(f"stalled at {now:,} of {goal:,} {what} for {stall:.0f} s")
        time.sleep(poll)


# --- supworker's consumer: the process, then in-process -----------------------------------------
def _drain_process(
    redis: Redis, redis_url: str, work: Path, tag: str = TAG, messages: int = MESSAGES, rq_queue: str = RQ_QUEUE
) -> tuple[Drain, dict[str, object], int]:
    """`manage.py consume_rabbit` as deployed (RabbitMQ names from `tag`) draining `messages` that
    wait for it; returns its drain, its statistics and the RQ job count in `rq_queue`."""
    from supworker.stats import CONSUMER_KEY

    env = deployed.isolated_env(tag, redis_url)
    process = deployed.start("consumer", env, work)
    stats_key = f"{CONSUMER_KEY}{socket.gethostname()}:{process.popen.pid}"

    def enqueued() -> int:  # the consumer's own counter, written to Redis after every batch
        return int(redis.hget(stats_key, "enqueuedJobs") or 0)

    try:
        _wait_for(enqueued, 1, "a first batch from the consumer process", 0.005, process.alive, stall=60)
        first, start, cpu = enqueued(), time.perf_counter(), process.cpu_seconds()
        _wait_for(enqueued, messages, "messages enqueued by the consumer process", 0.005, process.alive)
        drain = Drain("`manage.py consume_rabbit` (process)", messages - first, time.perf_counter() - start,
                      process.cpu_seconds() - cpu)  # fmt: skip
    finally:
        deployed.stop([process])
    if process.popen.returncode != 0:
        raise RuntimeError(f"the consumer process exited with {process.popen.returncode}: {process.output()[-2000:]}")
    stats = {key.decode(): value.decode() for key, value in redis.hgetall(stats_key).items()}
    return drain, stats, len(_rq_jobs(redis, rq_queue))


def _drain_in_process() -> tuple[Drain, dict[str, object]]:
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
        drain = Drain("the consumer in a thread (in-process)", MESSAGES, time.perf_counter() - start,
                      time.process_time() - cpu)  # fmt: skip
    finally:
        consumer.stop()
        thread.join(timeout=30)
    if errors:
        raise RuntimeError(f"the consumer failed: {errors[0]!r}") from errors[0]
    if thread.is_alive():
        raise RuntimeError("the consumer did not stop within 30 s of stop()")
    return drain, dataclasses.asdict(consumer.stats)


def _rq_jobs(redis: Redis, rq_queue: str = RQ_QUEUE) -> list[Job]:
    queue = Queue(rq_queue, connection=redis)
    jobs = Job.fetch_many(queue.get_job_ids(), connection=redis)
    if any(job is None for job in jobs):
        raise RuntimeError(f"{rq_queue} lists job ids whose job hash is missing")
    return jobs


def _verify_supworker(
    channel: BlockingChannel, redis: Redis, expected_ids: set[str], stats: dict[str, object], rq_queue: str = RQ_QUEUE
) -> None:
    """A figure is only worth printing if every message became exactly one item."""
    jobs = _rq_jobs(redis, rq_queue)
    items = [item for job in jobs for item in job.args[0]]
    ids = [item["job_id"] for item in items]
    problems = []
    if len(items) != len(expected_ids) or set(ids) != expected_ids:
        problems.append(
            f"{len(items):,} items in {len(jobs):,} RQ jobs, {len(set(ids)):,} distinct job ids,"
            f" {len(expected_ids - set(ids)):,} missing, {len(set(ids) - expected_ids):,} unexpected"
        )
    counts = [int(str(stats[name])) for name in ("enqueuedJobs", "rejectedMessages", "duplicateMessages")]
    if counts != [len(expected_ids), 0, 0]:
        problems.append(f"consumer stats {stats}")
    problems.extend(_leftovers(channel))
    if problems:
        raise RuntimeError("supworker's drain counted wrong: " + "; ".join(problems))


def _leftovers(channel: BlockingChannel) -> list[str]:
    """Messages still in RabbitMQ once the consumer's connection is closed (unacked ones are back)."""
    return [f"{count:,} messages left in {queue}" for queue in _bench_queues() if (count := _ready(channel, queue))]


# --- the bare loop -------------------------------------------------------------------------------
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
        drain = Drain("bare pika + `enqueue_many`, one RQ job per message", MESSAGES, time.perf_counter() - start,
                      time.process_time() - cpu)  # fmt: skip
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
def _table(process: Drain, in_process: Drain, bare: Drain, rq_jobs: int) -> Table:
    table = Table(
        f"Ingestion: drain {MESSAGES:,} notification messages RabbitMQ → RQ",
        ["pipeline", "messages timed", "seconds", "msgs/s", "vs bare loop", "consumer CPU s per 1,000"],
    )
    for drain in (process, in_process, bare):
        share = f"{drain.rate / bare.rate:.2f}"
        table.rows.append([drain.pipeline, drain.messages, drain.seconds, drain.rate, share,
                           f"{1000 * drain.cpu_seconds / drain.messages:.3f}"])  # fmt: skip
    times = process.rate / bare.rate
    table.notes.append(
        f"targets for the process: ≥ {TARGET_RATE:,} msgs/s {'met' if process.rate >= TARGET_RATE else 'NOT met'};"
        f" ≥ {TARGET_TIMES_BARE:.0f}x the bare loop {'met' if times >= TARGET_TIMES_BARE else 'NOT met'}"
    )
    table.notes.append(
        f"the process made {rq_jobs:,} RQ jobs (micro-batches of up to {jobtypes.job_type(ROUTING_KEY).batch_size});"
        " its clock starts at its first batch in Redis (Django's start-up is not counted), the in-process"
        " and bare loops' at connecting. CPU: the consumer process's own (psutil); for the in-process two,"
        " this whole process's. Publishing is not timed."
    )
    return table
