"""POST /shutdown: every worker and consumer finishes what it holds and stops.

Workers get RQ's own shutdown command (a warm shutdown: the running job completes). Consumers
watch a Redis key: one started before the request stops after acking its batch; one started
later (a restart) ignores it.
"""

from __future__ import annotations

import time
from typing import Any

from rq import Worker
from rq.command import send_shutdown_command

from supworker.enqueue import redis_connection
from supworker.stats import CONSUMERS_KEY

SHUTDOWN_KEY = "supworker:shutdown-requested"


def request_shutdown() -> dict[str, Any]:
    connection = redis_connection()
    workers = Worker.all(connection=connection)
    for worker in workers:
        send_shutdown_command(connection, worker.name)
    connection.set(SHUTDOWN_KEY, repr(time.time()), ex=86400)
    consumers = sorted(name.decode() for name in connection.smembers(CONSUMERS_KEY))
    return {"workers": sorted(w.name for w in workers), "consumers": consumers}


def requested_since(started_at: float) -> bool:
    """Whether a shutdown was asked for after a process that started at `started_at`."""
    value = redis_connection().get(SHUTDOWN_KEY)
    return value is not None and float(value) > started_at
