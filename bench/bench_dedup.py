"""Deduplication at scale: does a Redis full of jobId keys slow ingestion, and what does a key cost?

The consumer remembers every jobId for JOB_DEDUP_TTL (7 days): `supworker:seen:id:<jobId>` = the
jobId, with that TTL (supworker.enqueue, consumer._identity). A week of traffic leaves millions of
them, and every batch reads (MGET under WATCH) and writes (SET EX) among them. One
`manage.py consume_rabbit`, started from its Procfile line, drains the same number of fresh push
messages (BENCH_DEDUP_MESSAGES) into RQ from a Redis that is empty and from one that holds
BENCH_DEDUP_KEYS keys written as the consumer writes them, alternately (BENCH_DEDUP_ROUNDS times
each, a new process each time); then messages whose jobIds are all among those keys (a redelivery
storm: acked, nothing enqueued). Redis memory is read before the fill and after it, once Redis has
finished growing its hash tables: bytes per key.

Redis is a throw-away `redis-server` of the benchmark's own (free port, temporary directory, no
persistence), never the shared one; RabbitMQ is the shared one under the benchmark's own exchange
and queue names. All of it is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pika
import psutil
from django.conf import settings
from redis import Redis, RedisError
from rq import Queue

from bench import bench_ingest as ingest
from bench import deployed
from bench.table import Table
from testbeds.polling import wait_for
from testbeds.redis_sentinel_set import free_port

MESSAGES = int(os.environ.get("BENCH_DEDUP_MESSAGES", 200_000))
KEYS = int(os.environ.get("BENCH_DEDUP_KEYS", 10_000_000))
DUPLICATES = int(os.environ.get("BENCH_DEDUP_DUPLICATES", MESSAGES // 2))  # at most KEYS
ROUNDS = int(os.environ.get("BENCH_DEDUP_ROUNDS", 2))  # empty, full, empty, full, ...
TAG = "bench_dedup"
FILL_CHUNK = 20_000  # keys per script call: about 0.1 s of the server's time each

# The consumer writes its markers with one Lua SET ... EX per key (supworker.enqueue._MARK_SEEN);
# this writes the same commands, the ids generated in the server instead of sent: UUID-shaped like
# the fresh ones (36 characters: the same key and value sizes), `<ARGV[2]><12 hex digits of i>`.
_FILL = """
local seen, prefix, ttl = ARGV[1], ARGV[2], ARGV[5]
for i = tonumber(ARGV[3]), tonumber(ARGV[4]) - 1 do
  local id = prefix .. string.format('%012x', i)
  redis.call('SET', seen .. id, id, 'EX', ttl)
end
return 0
"""


class ThrowAwayRedis:
    """`redis-server` on a free port in its own directory; no RDB, no AOF."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="supworker-bench-dedup-"))
        self.port = free_port()
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                   "--save", "", "--appendonly", "no", "--logfile", str(self.dir / "redis.log"),
                   "--enable-debug-command", "local"]  # fmt: skip
        # Its own session: a Ctrl-C reaches only this process, whose `finally` shuts the server down.
        self.popen = subprocess.Popen(command, start_new_session=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = Redis.from_url(self.url, socket_timeout=60)
        self.handle = psutil.Process(self.popen.pid)
        try:
            wait_for(self._answers, 10, f"the throw-away redis-server on port {self.port}", 0.05)
        except BaseException:
            self.stop()
            raise

    def _answers(self) -> bool:
        if self.popen.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.popen.returncode}")
        with contextlib.suppress(RedisError):
            return bool(self.client.ping())
        return False

    def memory(self) -> tuple[int, int]:
        info = self.client.info("memory")
        return info["used_memory"], info["used_memory_rss"]

    def settle(self) -> float:
        """Wait until no hash table of database 0 is being rehashed; returns the seconds. A table that
        grew keeps its old bucket array (8 B a bucket) until then, which a Redis filled over days has
        long freed. Redis rehashes 1 ms per server tick (hz 10): hz 500 meanwhile, then back."""
        start, hz = time.perf_counter(), self.client.config_get("hz")["hz"]
        self.client.config_set("hz", 500)
        try:
            while True:
                asked = time.perf_counter()
                if b"rehashing target" not in self.client.execute_command("DEBUG", "HTSTATS", "0"):
                    return time.perf_counter() - start
                if asked - start > 600:
                    raise RuntimeError("Redis was still rehashing after 10 minutes")
                # DEBUG HTSTATS walks every bucket (seconds at 10 million keys), blocking the server:
                # leave it 80 % of the time to rehash.
                time.sleep(max(0.2, 4 * (time.perf_counter() - asked)))
        finally:
            self.client.config_set("hz", hz)

    def cpu_seconds(self) -> float:
        times = self.handle.cpu_times()
        return times.user + times.system

    def stop(self) -> None:
        """Shut it down (SIGTERM: with nothing to save it exits at once) and remove its directory; idempotent."""
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclasses.dataclass
class Drain:
    label: str
    messages: int  # those timed: the first batch lands before the clock starts
    seconds: float
    consumer_cpu: float
    redis_cpu: float
    memory: tuple[int, int]  # Redis used_memory and used_memory_rss when the drain started
    stats: dict[str, str]

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def run() -> Table:
    original = settings.CONFIG
    # supworker reads settings.CONFIG at call time: topology helpers then use the bench's names, and
    # nothing in this process can reach the shared Redis.
    settings.CONFIG = dataclasses.replace(
        original, rabbitmq_exchange=f"{TAG}_exchange", rabbitmq_queue_prefix=TAG,
        rabbitmq_queue_name=f"{TAG}_otp", redis_url="redis://127.0.0.1:1/0",
    )  # fmt: skip
    servers: list[ThrowAwayRedis] = []
    try:
        with deployed.channel(settings.CONFIG) as channel:
            ingest._declare(channel)
        servers.append(empty := ThrowAwayRedis())
        servers.append(full := ThrowAwayRedis())
        before = full.memory()
        prefix, fill_seconds = _fill(full.client, KEYS)
        settle_seconds = full.settle()
        after = full.memory()
        filled = _key_shape(full.client, f"{prefix}{random.randrange(KEYS):012x}")  # noqa: S311 - a sample

        drains: list[Drain] = []
        for round_ in range(1, ROUNDS + 1):  # alternated: whatever drifts during the run hits both
            for server, holds in ((empty, "empty Redis"), (full, f"{KEYS:,} keys")):
                fresh = [str(uuid.uuid4()) for _ in range(MESSAGES)]
                drains.append(_drain(server, holds + (f", round {round_}" if ROUNDS > 1 else ""), fresh))
                _verify(server, drains[-1], MESSAGES, fresh)
                if server is empty and (written := _key_shape(empty.client, fresh[0])) != filled:
                    raise RuntimeError(f"a filled key {filled} is not shaped as the one the consumer wrote {written}")
                # Its RQ jobs go; the empty server's markers too, the full one keeps them (a few more keys).
                Queue(ingest.RQ_QUEUE, connection=server.client).empty()
                if server is empty:
                    empty.client.flushdb()

        size = full.client.dbsize()
        old = [f"{prefix}{i:012x}" for i in random.sample(range(KEYS), min(DUPLICATES, KEYS))]
        drains.append(_drain(full, f"{KEYS:,} keys, all duplicates", old))
        _verify(full, drains[-1], len(old), [])
        if full.client.dbsize() != size:
            raise RuntimeError(f"duplicates changed Redis: {size:,} keys before, {full.client.dbsize():,} after")
    finally:
        for server in servers:
            server.stop()  # and its directory, the consumer's logs with it
        with (
            contextlib.suppress(Exception),
            deployed.channel(settings.CONFIG) as channel,
        ):  # the first failure is the one to see
            ingest._teardown(channel)
        settings.CONFIG = original
    return _table(drains, before, after, (fill_seconds, settle_seconds), filled)


def _fill(client: Redis, count: int) -> tuple[str, float]:
    """`count` markers as the consumer writes them, with its TTL; returns their id prefix and the seconds."""
    from supworker.enqueue import SEEN_PREFIX

    prefix, fill, start = str(uuid.uuid4())[:24], client.register_script(_FILL), time.perf_counter()
    for first in range(0, count, FILL_CHUNK):  # a UUID's first 24 characters: 8-4-4-4 and a dash
        fill(args=[f"{SEEN_PREFIX}id:", prefix, first, min(first + FILL_CHUNK, count), settings.CONFIG.job_dedup_ttl])
    seconds = time.perf_counter() - start
    if client.dbsize() != count:
        raise RuntimeError(f"the fill left {client.dbsize():,} keys, not {count:,}")
    return prefix, seconds


def _key_shape(client: Redis, job_id: str) -> tuple[object, ...]:
    """What a marker is made of: its value is the id, its encoding, memory and TTL (to the hour)."""
    from supworker.enqueue import SEEN_PREFIX

    key = f"{SEEN_PREFIX}id:{job_id}"
    if (value := client.get(key)) != job_id.encode():
        raise RuntimeError(f"{key} holds {value!r}, not its job id")
    return client.object("encoding", key).decode(), client.memory_usage(key), round(client.ttl(key) / 3600)


def _publish(job_ids: list[str]) -> None:
    properties = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    with deployed.channel(settings.CONFIG) as channel:
        queue = ingest._notification_queue()
        for n, job_id in enumerate(job_ids):
            data = ingest.push_body(n, job_id)
            channel.basic_publish(settings.CONFIG.rabbitmq_exchange, ingest.ROUTING_KEY, data, properties)
        # No publisher confirms (slow); the ready count proves every message arrived.
        ingest._wait_for(lambda: ingest._ready(channel, queue), len(job_ids), f"messages ready in {queue}", poll=0.05)


def _drain(server: ThrowAwayRedis, label: str, job_ids: list[str]) -> Drain:
    """Publish, then time one `manage.py consume_rabbit` from its first batch in Redis to its last."""
    from supworker.stats import CONSUMER_KEY

    _publish(job_ids)
    memory = server.memory()
    process = deployed.start("consumer", deployed.isolated_env(TAG, server.url), server.dir / "logs")
    stats_key = f"{CONSUMER_KEY}{socket.gethostname()}:{process.popen.pid}"

    def received() -> int:  # the consumer's own counter, written after every batch
        return int(server.client.hget(stats_key, "receivedMessages") or 0)

    try:
        ingest._wait_for(received, 1, "a first batch from the consumer", 0.005, process.alive, stall=60)
        first, start = received(), time.perf_counter()
        cpu, redis_cpu = process.cpu_seconds(), server.cpu_seconds()
        ingest._wait_for(received, len(job_ids), "messages taken by the consumer", 0.005, process.alive)
        seconds = time.perf_counter() - start
        cpu, redis_cpu = process.cpu_seconds() - cpu, server.cpu_seconds() - redis_cpu
    finally:
        deployed.stop([process])
    if process.popen.returncode != 0:
        raise RuntimeError(f"the consumer exited with {process.popen.returncode}: {process.output()[-2000:]}")
    stats = {key.decode(): value.decode() for key, value in server.client.hgetall(stats_key).items()}
    server.client.delete(stats_key)  # so that Redis holds only what the drain enqueued
    return Drain(label, len(job_ids) - first, seconds, cpu, redis_cpu, memory, stats)


def _verify(server: ThrowAwayRedis, drain: Drain, published: int, fresh: list[str]) -> None:
    """Every fresh message became exactly one item of one RQ job (RQ's queue was empty before); a duplicate none."""
    jobs = ingest._rq_jobs(server.client)
    items = [item["job_id"] for job in jobs for item in job.args[0]]
    problems = []
    if len(items) != len(fresh) or set(items) != set(fresh):
        problems.append(f"{len(items):,} items ({len(set(items)):,} distinct ids) in {len(jobs):,} RQ jobs,"
                        f" {len(set(fresh) - set(items)):,} expected ones missing")  # fmt: skip
    names = ("receivedMessages", "enqueuedJobs", "duplicateMessages", "rejectedMessages")
    if [int(drain.stats[name]) for name in names] != [published, len(fresh), published - len(fresh), 0]:
        problems.append(f"consumer stats {drain.stats}")
    with deployed.channel(settings.CONFIG) as channel:
        problems.extend(ingest._leftovers(channel))
    if problems:
        raise RuntimeError(f"{drain.label}: the drain counted wrong: " + "; ".join(problems))


def _table(drains: list[Drain], before: tuple[int, int], after: tuple[int, int], seconds: tuple[float, float],
           sample: tuple[object, ...]) -> Table:  # fmt: skip
    per_key, rss_per_key = (after[0] - before[0]) / KEYS, (after[1] - before[1]) / KEYS
    table = Table(
        f"Deduplication: one `consume_rabbit` draining push messages into RQ, {KEYS:,} jobId keys in Redis or none",
        ["Redis holds", "messages", "msgs/s", "consumer CPU s/1,000", "redis-server CPU s/1,000",
         "used_memory", "used_memory_rss", "bytes per key"],
    )  # fmt: skip
    empty, full = drains[0 : 2 * ROUNDS : 2], drains[1 : 2 * ROUNDS : 2]
    for drain in drains:
        table.rows.append([
            drain.label, drain.messages, drain.rate, f"{1000 * drain.consumer_cpu / drain.messages:.3f}",
            f"{1000 * drain.redis_cpu / drain.messages:.3f}", _mb(drain.memory[0]), _mb(drain.memory[1]),
            "" if drain in empty else f"{per_key:.1f}",
        ])  # fmt: skip
    rate = sum(d.rate for d in full) / sum(d.rate for d in empty)
    cpu = sum(d.consumer_cpu / d.messages for d in full) / sum(d.consumer_cpu / d.messages for d in empty)
    table.notes += [
        f"{KEYS:,} keys against empty Redis (drains alternated, {ROUNDS} of each, means): {rate:.2f} of the rate,"
        f" {cpu:.2f} of the consumer's CPU per message",
        f"fill: {KEYS:,} keys in {seconds[0]:.1f} s (Lua SET ... EX, {FILL_CHUNK:,} a call), rehashing finished"
        f" {seconds[1]:.1f} s later; used_memory"
        f" {_mb(before[0])} → {_mb(after[0])} ({per_key:.1f} B/key), used_memory_rss {_mb(before[1])} →"
        f" {_mb(after[1])} ({rss_per_key:.1f} B/key)",
        f"a key as the consumer wrote it and as filled: encoding {sample[0]}, MEMORY USAGE {sample[1]} B,"
        f" TTL {sample[2]} h; jobIds are UUID text (36 characters)",
        "each drain timed from the consumer's first batch in Redis to its last (Django's start-up not counted);"
        " CPU read with psutil; publishing not timed. Every fresh message became one item of an RQ job,"
        " every duplicate none.",
    ]
    return table


def _mb(size: int) -> str:
    return f"{size / 2**20:,.1f} MB"
