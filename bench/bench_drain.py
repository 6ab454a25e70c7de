"""Draining a deep backlog: 1,000,000 messages already waiting in RabbitMQ, drained into RQ by
ONE `manage.py consume_rabbit` process started from its Procfile line with the operator's
defaults (only the exchange, queue names, Redis database 13 and the log directory are the
benchmark's own).

Issue 17 asks how cost grows with the work: whether the consumer slows down or grows while a
deep queue drains, and what the backlog costs RabbitMQ and the jobs cost Redis. It prints the
rate, the consumer's CPU per 1,000 messages and its RSS over the first and the last 10 % of
the backlog and overall (from the consumer's own counter in Redis, read every SAMPLE_S), and
RabbitMQ's memory with the full backlog and once drained. No RQ worker runs: the jobs pile up
in Redis as they would behind stopped or slower workers.

The backlog (MIX) is published first, pipelined with publisher confirms, and is not on the
drain's clock. BENCH_DRAIN_MESSAGES sets a smaller backlog for development.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import pika
from django.conf import settings
from pika.spec import Basic
from redis import Redis
from rq import Queue
from rq.job import Job

from bench import deployed
from bench.bench_ingest import _leftovers, _ready, _teardown, _wait_for, push_body
from bench.table import Table
from supworker.enqueue import SEEN_PREFIX

MESSAGES = int(os.environ.get("BENCH_DRAIN_MESSAGES", "1000000"))
REDIS_DB = 13  # shared with bench_ingest: the two must not run at the same time
TAG = "bench_drain"
SAMPLE_S = 0.1
CONFIRM_WINDOW = 5_000  # messages published ahead of RabbitMQ's confirms
FETCH_JOBS = 20  # RQ jobs read at a time when verifying (a push job carries 500 items)
MIX = "90 % notification.push, 5 % notification.email, 3 % device.register, 2 % LMS OTP e-mails"


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float  # perf_counter seconds
    enqueued: int  # the consumer's enqueuedJobs: messages in Redis, counted after each batch
    cpu: float  # the consumer's user + system CPU seconds
    rss_mb: float


def run() -> Table:
    from supworker.rabbit import topology

    if MESSAGES < 10_000:
        raise ValueError("BENCH_DRAIN_MESSAGES: at least 10,000, so that a tenth holds a few 500-message batches")
    original = settings.CONFIG
    redis_url = deployed.with_redis_db(original.redis_url, REDIS_DB)
    # topology and bench_ingest's helpers read settings.CONFIG: the names the consumer gets from its env.
    settings.CONFIG = dataclasses.replace(
        original, rabbitmq_exchange=f"{TAG}_exchange", rabbitmq_queue_prefix=TAG, rabbitmq_queue_name=f"{TAG}_otp",
        redis_url=redis_url,
    )  # fmt: skip
    redis = Redis.from_url(redis_url)
    work, ours = Path(tempfile.mkdtemp(prefix="supworker-bench-drain-")), False
    try:
        if keys := redis.dbsize():  # someone else's: left alone
            raise RuntimeError(f"Redis database {REDIS_DB} holds {keys} keys: is bench_ingest (which uses it) running?")
        ours = True  # whatever the database holds from here on: the RQ jobs, seen markers, consumer statistics
        with deployed.channel(settings.CONFIG) as channel:
            topology.declare(channel)
        broker = [_broker_memory()]
        start, cpu = time.perf_counter(), time.process_time()
        _Publisher().run()
        publish = (time.perf_counter() - start, time.process_time() - cpu)  # this process's CPU: building too
        _check_backlog()
        broker.append(_broker_memory())
        redis_before = _redis_used(redis)
        samples, stats = _drain(redis, redis_url, work)
        broker.append(_broker_memory())
        redis_after = _redis_used(redis)
        queues, job_bytes = _verify(redis, stats)
        seen_bytes = MESSAGES * (redis.memory_usage(f"{SEEN_PREFIX}id:{TAG}-{MESSAGES - 1}") or 0)  # all alike
    finally:
        if ours:
            redis.flushdb()
        with deployed.channel(settings.CONFIG) as channel:
            _teardown(channel)
        settings.CONFIG = original
        shutil.rmtree(work, ignore_errors=True)
    return _table(publish, broker, samples, (redis_before, redis_after, job_bytes, seen_bytes), queues)


# --- the backlog ---------------------------------------------------------------------------------
def _message(n: int, now_ms: int) -> tuple[str, str, bytes]:
    """(exchange, routing key, body) of message n; the kinds interleave, so every tenth of the
    backlog has the same mix (MIX)."""
    job_id, kind, exchange = f"{TAG}-{n}", n % 100, settings.CONFIG.rabbitmq_exchange
    if kind < 90:
        return exchange, "notification.push", push_body(n, job_id)
    if kind < 95:
        email = {"type": "email", "userId": str(uuid.uuid4()), "title": f"Weekly digest {n}", "jobId": job_id,
                 "body": "Here is what you missed this week.", "email": f"user{n}@example.com"}  # fmt: skip
        return exchange, "notification.email", json.dumps(email).encode()
    if kind < 98:
        device = {"userId": str(uuid.uuid4()), "fcmToken": f"bench-fcm-token-{uuid.uuid4().hex}{uuid.uuid4().hex}",
                  "platform": "android", "deviceId": f"device-{n}", "at": now_ms, "jobId": job_id}  # fmt: skip
        return exchange, "device.register", json.dumps(device).encode()
    otp = {"email": f"user{n}@example.com", "otp": f"{n % 1_000_000:06d}", "jobId": job_id,
           "metadata": {"userName": f"User {n}", "expiryMinutes": 10}}  # fmt: skip
    return "", settings.CONFIG.rabbitmq_queue_name, json.dumps(otp).encode()  # the LMS's queue, as it publishes


class _Publisher:
    """The backlog on pika's asynchronous connection: persistent and mandatory (an unroutable
    message fails the run), up to CONFIRM_WINDOW messages ahead of RabbitMQ's confirms."""

    def __init__(self) -> None:
        from django.conf import settings

        self.sent = self.confirmed = 0
        self.acked_ahead: set[int] = set()  # single acks above the confirmed prefix
        self.error, self.now_ms = "", int(time.time() * 1000)
        self.channel: Any = None
        self.properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
        self.connection = pika.SelectConnection(
            pika.URLParameters(settings.CONFIG.rabbitmq_urls[0]), on_open_callback=self._opened,
            on_open_error_callback=self._closed, on_close_callback=self._closed,
        )  # fmt: skip

    def run(self) -> None:
        self.connection.ioloop.start()
        if self.error or self.confirmed != MESSAGES:
            raise RuntimeError(f"publishing the backlog failed at {self.confirmed:,} confirmed: {self.error}")

    def _opened(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_return_callback(lambda *_: self._fail("RabbitMQ returned a message as unroutable"))
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._publish())

    def _publish(self) -> None:
        while self.sent < MESSAGES and self.sent - self.confirmed < CONFIRM_WINDOW and not self.error:
            self.channel.basic_publish(*_message(self.sent, self.now_ms), self.properties, mandatory=True)
            self.sent += 1

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        if isinstance(method, Basic.Nack):
            self._fail(f"RabbitMQ refused message {method.delivery_tag} (nack)")
        elif method.multiple:
            self.confirmed = max(self.confirmed, method.delivery_tag)
            self.acked_ahead = {tag for tag in self.acked_ahead if tag > self.confirmed}
        else:
            self.acked_ahead.add(method.delivery_tag)
        while self.confirmed + 1 in self.acked_ahead:
            self.acked_ahead.remove(self.confirmed + 1)
            self.confirmed += 1
        if self.confirmed == MESSAGES:
            self.connection.close()
        else:
            self._publish()

    def _fail(self, reason: str) -> None:
        self.error = self.error or reason
        if self.connection.is_open:
            self.connection.close()

    def _closed(self, _connection: Any, reason: BaseException) -> None:
        if self.confirmed != MESSAGES:
            self.error = self.error or repr(reason)
        self.connection.ioloop.stop()


def _check_backlog() -> None:
    from supworker.rabbit import topology

    queues = [source.queue for source in topology.sources()]
    # Confirmed persistent messages are in their queues: the count is exact.
    with deployed.channel(settings.CONFIG) as channel:
        if (ready := sum(_ready(channel, queue) for queue in queues)) != MESSAGES:
            raise RuntimeError(f"{ready:,} messages ready in {queues} after {MESSAGES:,} confirms")


# --- the drain ---------------------------------------------------------------------------------
def _drain(redis: Redis, redis_url: str, work: Path) -> tuple[list[Sample], dict[str, str]]:
    """Start the consumer on the full backlog; sample its counter, CPU and RSS until all is in Redis."""
    from supworker.stats import CONSUMER_KEY

    process = deployed.start("consumer", deployed.isolated_env(TAG, redis_url, LOG_DIR=str(work / "logs")), work)
    stats_key = f"{CONSUMER_KEY}{socket.gethostname()}:{process.popen.pid}"
    samples: list[Sample] = []

    def enqueued() -> int:
        return int(redis.hget(stats_key, "enqueuedJobs") or 0)

    def sample() -> int:
        count, times = enqueued(), process.handle.cpu_times()  # the consumer forks nothing
        samples.append(Sample(time.perf_counter(), count, times.user + times.system, process.rss_mb()))
        return count

    try:  # Django's start-up is not on the clock: it starts at the first sample after the first batch
        _wait_for(enqueued, 1, "a first batch from the consumer process", 0.005, process.alive, stall=60)
        _wait_for(sample, MESSAGES, "messages enqueued by the consumer process", SAMPLE_S, process.alive)
    finally:
        deployed.stop([process])
    if process.popen.returncode != 0:
        raise RuntimeError(f"the consumer process exited with {process.popen.returncode}: {process.output()[-2000:]}")
    return samples, {key.decode(): value.decode() for key, value in redis.hgetall(stats_key).items()}


def _verify(redis: Redis, stats: dict[str, str]) -> tuple[dict[str, tuple[int, int]], int]:
    """Every message became exactly one item of one RQ job, read a few jobs at a time with one
    byte per message. Returns each RQ queue's (jobs, items) and the job hashes' bytes in Redis."""
    done = bytearray(MESSAGES)
    queues: dict[str, tuple[int, int]] = {}
    job_bytes = duplicates = unknown = lost_hashes = 0
    for queue in Queue.all(connection=redis):
        jobs = items = 0
        for offset in range(0, queue.count, FETCH_JOBS):
            ids = queue.get_job_ids(offset, FETCH_JOBS)
            with redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.memory_usage(Job.key_for(job_id), samples=0)
                job_bytes += sum(size or 0 for size in pipe.execute())
            for job in Job.fetch_many(ids, connection=redis):
                if job is None:
                    lost_hashes += 1
                    continue
                jobs, items = jobs + 1, items + len(job.args[0])
                for item in job.args[0]:
                    number = item["job_id"].removeprefix(f"{TAG}-")
                    if not number.isdigit() or int(number) >= MESSAGES:
                        unknown += 1
                    elif done[int(number)]:
                        duplicates += 1
                    else:
                        done[int(number)] = 1
        queues[queue.name] = (jobs, items)
    problems = [f"{missing:,} messages never reached RQ"] if (missing := MESSAGES - done.count(1)) else []
    if duplicates or unknown or lost_hashes:
        problems.append(f"{duplicates:,} duplicate items, {unknown:,} unknown, {lost_hashes:,} job hashes gone")
    counts = [int(stats.get(name, -1)) for name in ("enqueuedJobs", "rejectedMessages", "duplicateMessages")]
    if counts != [MESSAGES, 0, 0]:
        problems.append(f"consumer stats {stats}")
    with deployed.channel(settings.CONFIG) as channel:
        problems.extend(_leftovers(channel))
    if problems:
        raise RuntimeError("the drain counted wrong: " + "; ".join(problems))
    return queues, job_bytes


# --- memory of the servers -----------------------------------------------------------------------
def _broker_memory() -> tuple[float, float, float] | None:
    """RabbitMQ's memory in MB, from `rabbitmqctl status` on the project's node (scripts/services.sh):
    what its memory alarm compares (RSS by default), what Erlang allocated, and of that what the
    queues hold (their processes, message binaries, message index). None: no such node here."""
    command = [str(deployed.ROOT / "scripts" / "services.sh"), "rabbitmqctl", "status", "--formatter", "json"]
    try:
        memory = json.loads(subprocess.run(command, capture_output=True, check=True, timeout=120).stdout)["memory"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None
    total = memory["total"]  # by strategy (rss, allocated, erlang) since RabbitMQ 3.8
    alarm = total[memory.get("strategy", "rss")] if isinstance(total, dict) else total
    erlang = total["erlang"] if isinstance(total, dict) else total
    queues = sum(memory.get(part, 0) for part in ("queue_procs", "quorum_queue_procs", "binary", "msg_index"))
    return alarm / 2**20, erlang / 2**20, queues / 2**20


def _redis_used(redis: Redis) -> int:
    return int(redis.info("memory")["used_memory"])


# --- result --------------------------------------------------------------------------------------
def _stage(name: str, first: Sample, last: Sample, rss: str, broker: str = "") -> list[object]:
    messages, seconds = last.enqueued - first.enqueued, last.at - first.at
    return [name, messages, seconds, messages / seconds, f"{1000 * (last.cpu - first.cpu) / messages:.3f}", rss, broker]


def _table(
    publish: tuple[float, float],
    broker: list[tuple[float, float, float] | None],
    samples: list[Sample],
    redis_memory: tuple[int, int, int, int],
    queues: dict[str, tuple[int, int]],
) -> Table:
    def mb(part: int) -> list[str]:  # the broker's memory at each reading: empty, full backlog, drained
        return [f"{reading[part]:,.0f}" if reading else "n/a" for reading in broker]

    start, end = samples[0], samples[-1]
    # Each stage spans two samples at least, even where one batch is most of a small run's tenth.
    tenth = next(s for s in samples[1:] if s.enqueued >= MESSAGES // 10)
    ninth = next((s for s in samples[:-1] if s.enqueued >= MESSAGES - MESSAGES // 10), samples[-2])
    (seconds, cpu), alarm = publish, mb(0)
    table = Table(
        f"Drain {MESSAGES:,} waiting messages into RQ: one `manage.py consume_rabbit` process",
        ["stage", "messages", "seconds", "msgs/s", "CPU s per 1,000", "consumer RSS MB", "broker memory MB"],
    )
    table.rows += [
        ["backlog published (confirmed)", MESSAGES, seconds, MESSAGES / seconds, f"{1000 * cpu / MESSAGES:.3f}", "",
         f"{alarm[0]} → {alarm[1]}"],
        _stage("first 10 %", start, tenth, f"{start.rss_mb:.0f} → {tenth.rss_mb:.0f}"),
        _stage("last 10 %", ninth, end, f"{ninth.rss_mb:.0f} → {end.rss_mb:.0f}", alarm[2]),
        _stage("overall", start, end, f"peak {max(s.rss_mb for s in samples):.0f}"),
    ]  # fmt: skip
    before, after, job_bytes, seen_bytes = redis_memory
    table.notes += [
        f"messages: {MIX}, persistent; RQ jobs made: "
        + ", ".join(f"{name} {jobs:,} jobs of {items:,} items" for name, (jobs, items) in sorted(queues.items()))
        + "; every message checked to be exactly one item.",
        f"clock: from the consumer's first batch in Redis (Django's start-up not counted), its counter read every"
        f" {SAMPLE_S} s. CPU: the consumer process's (psutil); on the publish row, this process's (building too).",
        "broker memory: `rabbitmqctl status`, the figure its memory alarm compares, empty → full backlog, then"
        f" drained; Erlang's allocation {' → '.join(mb(1))} MB, of it the queues' {' → '.join(mb(2))} MB.",
        f"Redis used_memory (a shared server: other databases move it too) {before / 2**20:,.0f} →"
        f" {after / 2**20:,.0f} MB, {(after - before) / MESSAGES:,.0f} bytes per message: RQ job hashes"
        f" {job_bytes / 2**20:,.0f} MB (MEMORY USAGE), seen markers ≈ {seen_bytes / 2**20:,.0f} MB. No RQ worker ran.",
    ]
    return table
