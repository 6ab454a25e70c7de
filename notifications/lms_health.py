"""GET /health/lms: the LMS OTP worker's health object, for the OTP e-mails supworker sends in its place.

The fields are the LMS worker's `WorkerHealthCheck`: status, stats, uptime, memoryUsage, lastError.
supworker splits the LMS worker's one process in two: `consume_rabbit` takes the OTP queue
(`RABBITMQ_QUEUE_NAME`) and RQ workers send the e-mails. So:

- `status`: `running` when a consumer is live (its last heartbeat within three
  `HEARTBEAT_INTERVAL_MS`) and an RQ worker listens to a queue OTP e-mails go to; `stopped`
  when neither; `degraded` when only one (OTPs wait, in RabbitMQ or in Redis).
- `stats`: the counters of notifications/otp_stats.py; times in ISO 8601 (UTC), as a Node
  `Date` turns into JSON, and null until the first OTP e-mail.
- `uptime`: seconds since the longest-running live consumer started; 0 when none is live.
- `memoryUsage`: of the live consumers, summed (supworker.stats.memory_usage says how Python's
  figures map to Node's). The RQ workers' memory is not in it.
- `lastError`: the last OTP e-mail failure, masked, or null.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from redis import Redis
from rq import Worker
from rq.worker import BaseWorker

from notifications import otp_stats
from supworker import jobtypes
from supworker.enqueue import redis_connection
from supworker.stats import CONSUMER_KEY, CONSUMERS_KEY

MEMORY_FIELDS = ("rss", "heapTotal", "heapUsed", "external", "arrayBuffers")
LIVE_HEARTBEATS = 3  # a consumer silent for this many heartbeat intervals is not counted live


def report() -> dict[str, Any]:
    connection = redis_connection()
    consumers = live_consumers(connection)
    workers = otp_workers(connection)
    stats = otp_stats.read(connection)
    now = time.time()
    memory = dict.fromkeys(MEMORY_FIELDS, 0)
    for consumer in consumers:
        for field, value in json.loads(consumer.get("memoryUsage", "{}")).items():
            if field in memory:
                memory[field] += int(value)
    started = min((float(c["startTime"]) for c in consumers), default=now)
    error = stats.lastError
    return {
        "status": "running" if consumers and workers else "degraded" if consumers or workers else "stopped",
        "stats": {
            "processedJobs": stats.processedJobs,
            "failedJobs": stats.failedJobs,
            "retriedJobs": stats.retriedJobs,
            "startTime": iso(stats.startTime),
            "lastProcessedAt": iso(stats.lastProcessedAt),
        },
        "uptime": round(max(now - started, 0.0), 3),
        "memoryUsage": memory,
        "lastError": error | {"at": iso(error["at"])} if error else None,
    }


def live_consumers(connection: Redis) -> list[dict[str, str]]:
    """The statistics hashes of consumers whose last heartbeat is recent."""
    oldest = time.time() - LIVE_HEARTBEATS * settings.CONFIG.heartbeat_interval_ms / 1000
    live = []
    for name in sorted(connection.smembers(CONSUMERS_KEY)):
        fields = {k.decode(): v.decode() for k, v in connection.hgetall(CONSUMER_KEY + name.decode()).items()}
        if float(fields.get("heartbeatAt", 0)) >= oldest:
            live.append(fields)
    return live


def otp_workers(connection: Redis) -> list[BaseWorker]:
    """RQ workers listening to a queue that OTP e-mails go to."""
    policy = jobtypes.job_type("otp.email")
    queues = {policy.queue, policy.high_queue}
    return [w for w in Worker.all(connection=connection) if queues & set(w.queue_names())]


def iso(timestamp: float | None) -> str | None:
    """Unix time as a Node Date is written in JSON: 2025-01-01T12:00:00.000Z."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
