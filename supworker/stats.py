"""Counters in Redis that monitoring reads: per job type, and per consumer process."""

from __future__ import annotations

import psutil
from redis import Redis
from redis.client import Pipeline

JOB_STATS_KEY = "supworker:stats:jobs"
CONSUMERS_KEY = "supworker:consumers"  # set of consumer names
CONSUMER_KEY = "supworker:consumer:"  # + name: a hash of its intake counters (rabbit/consumer.py Stats)
DURATION_KEY = "supworker:stats:durations"  # "<type>|le=<bucket>", "<type>|sum": a histogram
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def count_outcomes(connection: Redis | Pipeline, job_type: str, **counts: int) -> None:
    """Add to `<job_type>:<outcome>` counters, e.g. succeeded=3, retried=1."""
    for outcome, number in counts.items():
        if number:
            connection.hincrby(JOB_STATS_KEY, f"{job_type}:{outcome}", number)


def job_counts(connection: Redis) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in connection.hgetall(JOB_STATS_KEY).items()}


def observe_duration(connection: Redis | Pipeline, job_type: str, seconds: float, items: int = 1) -> None:
    """Count `items` items of `job_type` that took `seconds` each into the histogram."""
    for bucket in DURATION_BUCKETS:
        if seconds <= bucket:
            connection.hincrby(DURATION_KEY, f"{job_type}|le={bucket}", items)
    connection.hincrby(DURATION_KEY, f"{job_type}|le=+Inf", items)
    connection.hincrbyfloat(DURATION_KEY, f"{job_type}|sum", seconds * items)


def memory_usage(process: psutil.Process) -> dict[str, int]:
    """A process's memory in the shape of Node's `process.memoryUsage()`, from what Linux reports.

    `rss` is the resident set size, as in Node. Python has no V8 heap and keeps no used/reserved
    split of its own that can be read cheaply, so `heapTotal` and `heapUsed` are both the
    anonymous resident memory (RSS less file-backed and shared pages: the malloc heap, Python's
    object arenas, thread stacks) and `external` is the rest of the RSS (the interpreter,
    libraries, mapped files). `arrayBuffers` is 0: Python has none.
    """
    info = process.memory_info()
    shared = getattr(info, "shared", 0)  # Linux only; elsewhere all of the RSS counts as heap
    heap = info.rss - shared
    return {"rss": info.rss, "heapTotal": heap, "heapUsed": heap, "external": shared, "arrayBuffers": 0}
