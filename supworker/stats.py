"""Counters in Redis that monitoring reads: per job type, and per consumer process."""

from __future__ import annotations

from redis import Redis
from redis.client import Pipeline

JOB_STATS_KEY = "supworker:stats:jobs"
CONSUMERS_KEY = "supworker:consumers"  # set of consumer names
CONSUMER_KEY = "supworker:consumer:"  # + name: a hash of the LMS worker's statistics


def count_outcomes(connection: Redis | Pipeline, job_type: str, **counts: int) -> None:
    """Add to `<job_type>:<outcome>` counters, e.g. succeeded=3, retried=1."""
    for outcome, number in counts.items():
        if number:
            connection.hincrby(JOB_STATS_KEY, f"{job_type}:{outcome}", number)


def job_counts(connection: Redis) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in connection.hgetall(JOB_STATS_KEY).items()}
