"""How fast jobs get into RQ: one enqueue per job, `enqueue_many` in one pipeline, and the
ceiling of raw Redis LPUSH in a pipeline. The consumer's batching design rests on this gap."""

from __future__ import annotations

import time
import uuid

from redis import Redis
from rq import Queue

from bench.table import Table

JOBS = 5000
BENCH_QUEUE = "bench_enqueue"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run() -> Table:
    from django.conf import settings

    # A separate database of the same Redis, so a benchmark never touches real queues.
    redis = Redis.from_url(settings.CONFIG.redis_url, db=14)
    redis.flushdb()
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

    results = []
    for label, fn in [("enqueue, one call a job", one_by_one), ("enqueue_many, one pipeline", many)]:
        redis.flushdb()
        results.append((label, _timed(fn)))
    redis.flushdb()
    ceiling = _timed(raw_pipeline)
    redis.flushdb()

    table = Table(
        f"RQ enqueue of {JOBS:,} jobs into Redis",
        ["method", "seconds", "jobs/s", "share of raw pipeline"],
    )
    for label, seconds in results:
        table.rows.append([label, seconds, JOBS / seconds, f"{ceiling / seconds:.2f}"])
    table.rows.append(["raw HSET+RPUSH pipeline (ceiling)", ceiling, JOBS / ceiling, "1.00"])
    return table
