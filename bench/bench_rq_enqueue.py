"""How fast jobs get into RQ: RQ's per-job cost, which the consumer's micro-batches rest on, as
deployed and in isolation, 20,000 of each (BENCH_RQ_ENQUEUE_COUNT).

- as deployed: `manage.py consume_rabbit` started from its Procfile line with the operator's
  settings (its own queue names and Redis database 14), draining messages waiting in RabbitMQ into
  RQ (bench_ingest's drain): `notification.push`, 500 items an RQ job, and `media.image`, one RQ
  job a message as every media job. Timed from its first batch in Redis to its last (Django's
  start-up is not counted); its CPU read from outside (psutil). Every message must become exactly
  one item.
- in-process, RQ alone: `enqueue` one call a job, `enqueue_many` in one pipeline, and the ceiling,
  raw Redis HSET+RPUSH in one pipeline.
Publishing is not timed; the queues, exchange and Redis database are removed or emptied at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pika
from redis import Redis
from rq import Queue

from bench import bench_ingest, deployed
from bench.table import Table

JOBS = int(os.environ.get("BENCH_RQ_ENQUEUE_COUNT", "20000"))
REDIS_DB = 14  # the cleanup and rq_enqueue benchmarks' (tests use 8-11 and 15, the others 12 and 13)
TAG = "benchrq"
BENCH_QUEUE = "bench_enqueue"


@dataclasses.dataclass
class Row:
    label: str
    items: int  # messages (the consumer) or jobs (RQ alone) timed
    rq_jobs: int
    seconds: float
    cpu: float  # CPU seconds: the consumer process's, or this process's for RQ alone

    @property
    def rate(self) -> float:
        return self.items / self.seconds


def _timed(label: str, fn: Callable[[], object]) -> Row:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return Row(label, JOBS, JOBS, time.perf_counter() - start, time.process_time() - cpu)


def _image_messages(count: int) -> tuple[list[bytes], set[str]]:
    bodies = [
        json.dumps(
            {
                "type": "image",
                "s3Key": f"media/bench/{uuid.uuid4().hex}/photo.jpg",
                "userId": str(uuid.uuid4()),
                "messageId": str(uuid.uuid4()),
                "originalName": f"IMG_{n:05d}.jpg",
                "jobId": f"bench-image-{n}",
            }
        ).encode()
        for n in range(count)
    ]
    return bodies, {f"bench-image-{n}" for n in range(count)}


def _deployed(redis: Redis, redis_url: str, work: Path) -> list[Row]:
    """consume_rabbit draining JOBS push messages, then JOBS image messages."""
    from django.conf import settings

    from supworker import jobtypes

    rows = []
    connection = pika.BlockingConnection(pika.URLParameters(settings.CONFIG.rabbitmq_urls[0]))
    try:
        channel = connection.channel()
        bench_ingest._declare(channel)
        for routing_key, domain, messages in [
            ("notification.push", "notification", bench_ingest._messages(JOBS)),
            ("media.image", "media", _image_messages(JOBS)),
        ]:
            job_type = jobtypes.job_type(routing_key)
            rq_queue = job_type.queue_for(None)
            bodies, expected_ids = messages
            bench_ingest._fill(channel, redis, bodies, routing_key, domain)
            drain, stats, rq_jobs = bench_ingest._drain_process(redis, redis_url, work, TAG, JOBS, rq_queue)
            bench_ingest._verify_supworker(channel, redis, expected_ids, stats, rq_queue)
            per_job = "one RQ job a message" if job_type.batch_size == 1 else f"{job_type.batch_size} items an RQ job"
            label = f"`manage.py consume_rabbit` (process), {routing_key}: {per_job}"
            rows.append(Row(label, drain.messages, rq_jobs, drain.seconds, drain.cpu_seconds))
    finally:
        if connection.is_open:
            bench_ingest._teardown(connection.channel())
            connection.close()
    return rows


def _rq_alone(redis: Redis) -> tuple[list[Row], Row]:
    queue = Queue(BENCH_QUEUE, connection=redis)

    def one_by_one() -> None:
        for i in range(JOBS):
            queue.enqueue("bench.noop", i, job_id=str(uuid.uuid4()))

    def many() -> None:
        queue.enqueue_many([Queue.prepare_data("bench.noop", (i,), job_id=str(uuid.uuid4())) for i in range(JOBS)])

    def raw_pipeline() -> None:
        with redis.pipeline(transaction=False) as pipe:
            for i in range(JOBS):
                pipe.hset(f"raw:{i}", mapping={"data": "x" * 200, "status": "queued"})
                pipe.rpush("raw:queue", i)
            pipe.execute()

    rows = []
    for label, fn in [("RQ enqueue, one call a job (in-process)", one_by_one),
                      ("RQ enqueue_many, one pipeline (in-process)", many)]:  # fmt: skip
        redis.flushdb()
        rows.append(_timed(label, fn))
        if queue.count != JOBS:
            raise RuntimeError(f"{label}: {queue.count:,} jobs in RQ, expected {JOBS:,}")
    redis.flushdb()
    ceiling = _timed("raw HSET+RPUSH pipeline (in-process; the ceiling)", raw_pipeline)
    if redis.llen("raw:queue") != JOBS:
        raise RuntimeError(f"the raw pipeline left {redis.llen('raw:queue'):,} entries, expected {JOBS:,}")
    redis.flushdb()
    return rows, ceiling


def run() -> Table:
    from django.conf import settings

    original = settings.CONFIG
    redis_url = deployed.with_redis_db(original.redis_url, REDIS_DB)
    # supworker reads settings.CONFIG at call time: declaring, filling and tearing down the topology
    # here uses the names the consumer process gets from its environment (deployed.isolated_env).
    settings.CONFIG = deployed.own_config(original, TAG, redis_url)
    redis = Redis.from_url(redis_url)
    work = Path(tempfile.mkdtemp(prefix="supworker-bench-rq-enqueue-"))
    try:
        redis.flushdb()
        processes = _deployed(redis, redis_url, work)
        alone, ceiling = _rq_alone(redis)
    finally:
        redis.flushdb()
        settings.CONFIG = original
        shutil.rmtree(work, ignore_errors=True)
    return _table(processes, alone, ceiling)


def _table(processes: list[Row], alone: list[Row], ceiling: Row) -> Table:
    table = Table(
        f"RQ enqueue: {JOBS:,} messages through the consumer as deployed, {JOBS:,} jobs through RQ alone",
        ["path", "items timed", "RQ jobs", "seconds", "items/s", "share of raw pipeline", "CPU s per 1,000 items"],
    )
    for row in [*processes, *alone, ceiling]:
        table.rows.append([row.label, row.items, row.rq_jobs, row.seconds, row.rate, f"{row.rate / ceiling.rate:.2f}",
                           f"{1000 * row.cpu / row.items:.3f}"])  # fmt: skip
    table.notes.append(
        "items: messages for the consumer (its clock starts at its first batch in Redis, so that batch is not timed;"
        " RQ jobs counts them all), jobs for RQ alone. CPU: the consumer process's own (psutil); in-process rows,"
        " this process's. The consumer also validates, seals and deduplicates every message and acks RabbitMQ."
    )
    return table
