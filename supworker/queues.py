"""The RQ queues (declared by the domain apps as worker kinds, supworker/jobtypes.py) as RQ and django-rq see them.

Priority is expressed the way RQ does it best: a worker listens to a high queue before the
normal one (`rqworker media` is `rqworker media_high media`), so under a backlog a high-priority job starts before
every waiting normal one, and each queue stays first in, first out.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from supworker import jobtypes
from supworker.config import RedisSentinel
from supworker.redis_sentinel import PrimaryCheckedConnection


def worker_queues(names: list[str], *, exact: bool = False) -> list[str]:
    """The queues a worker started with `names` listens to, in order.

    A worker kind stands for its queues (`media` -> media_high, media), unless the command
    names another queue of that kind too: then the names are queues, in the order typed
    (`media media_high` keeps media first, as it always did). Any other name is a queue, and a
    queue named twice keeps its first place. With `exact`, every name is a queue (`media`
    alone: the normal-priority queue only).
    """
    queues = [spec.name for spec in jobtypes.queues()]
    kinds = (
        {} if exact else {kind.name: [spec.name for spec in kind.queues] for kind in jobtypes.worker_kinds().values()}
    )
    known = (f"worker kinds: {', '.join(kinds)}; " if kinds else "") + f"queues: {', '.join(queues)}"
    if not names:
        raise ValueError(f"name what to work on ({known})")
    chosen: list[str] = []
    for name in names:
        if name in kinds and not set(names) & (set(kinds[name]) - {name}):
            expanded = kinds[name]
        elif name in queues:
            expanded = [name]
        else:
            raise ValueError(f"unknown {'queue' if exact else 'worker kind or queue'} {name!r} ({known})")
        chosen.extend(queue for queue in expanded if queue not in chosen)
    return chosen


# A Redis restart or failover must not stop the RQ processes: RQ quits on a connection error
# anywhere but its dequeue loop (waiting for a work-horse, saving a job's result), and a
# work-horse that cannot save a result leaves its job in StartedJobRegistry. So every command
# that fails to connect is retried with backoff, for at least 20 s (at most 40 s) in all.
# OSError too: redis-py retries a refused connect only when its errors include it.
REDIS_RETRY = Retry(
    EqualJitterBackoff(cap=4, base=0.25),
    retries=12,
    supported_errors=(RedisConnectionError, RedisTimeoutError, OSError),
)


def redis_connection_setting(redis_url: str) -> dict[str, object]:
    """django-rq's connection settings for `redis_url`, with REDIS_RETRY.

    django-rq builds a client from a URL with no retry at all (redis-py's `from_url` sets
    none); from HOST/PORT it passes REDIS_CLIENT_KWARGS on. A Unix socket stays a URL.
    """
    options = parse_url(redis_url)
    if "path" in options:
        return {"URL": redis_url}
    ssl = options.pop("connection_class", None) is SSLConnection
    return {
        "HOST": options.pop("host", "localhost"),
        "PORT": options.pop("port", 6379),
        "DB": options.pop("db", 0),
        "USERNAME": options.pop("username", None),
        "PASSWORD": options.pop("password", None),
        "SSL": ssl,
        "REDIS_CLIENT_KWARGS": {"socket_connect_timeout": 5, "socket_keepalive": True}
        | options
        | {"retry": REDIS_RETRY},
    }


# A sentinel that does not answer at once is skipped for the next one.
SENTINEL_TIMEOUTS = {"socket_connect_timeout": 1, "socket_timeout": 1}


def sentinel_connection_setting(sentinel: RedisSentinel) -> dict[str, object]:
    """django-rq's connection settings through Sentinel: each connection asks the sentinels for
    the primary when it connects and, while in use, every second (supworker/redis_sentinel.py),
    so a failover is followed without a restart; commands caught in it are retried with
    REDIS_RETRY."""
    return {
        "SENTINELS": sentinel.sentinels,
        "MASTER_NAME": sentinel.master,
        "DB": sentinel.db,
        "PASSWORD": sentinel.password or None,
        "SOCKET_TIMEOUT": None,  # as without Sentinel: a worker blocks in BLPOP
        "CONNECTION_KWARGS": {
            "connection_class": PrimaryCheckedConnection,
            "socket_connect_timeout": 5,
            "socket_keepalive": True,
            "retry": REDIS_RETRY,
        },
        "SENTINEL_KWARGS": SENTINEL_TIMEOUTS | {"password": sentinel.sentinel_password or None},
    }


def rq_queues_setting(redis_url: str, sentinel: RedisSentinel | None = None) -> dict[str, dict[str, object]]:
    """django-rq's RQ_QUEUES: every queue on the same Redis, with its default timeout."""
    connection = sentinel_connection_setting(sentinel) if sentinel else redis_connection_setting(redis_url)
    return {spec.name: connection | {"DEFAULT_TIMEOUT": spec.default_timeout} for spec in jobtypes.queues()}


def redis_client(redis_url: str, sentinel: RedisSentinel | None, **options: Any) -> Redis:
    """A client of supworker's Redis with these connection options, through Sentinel when set
    (for a process that manages its own connection, such as the consumer)."""
    if sentinel is None:
        return Redis.from_url(redis_url, **options)
    sentinels = Sentinel(
        sentinel.sentinels, sentinel_kwargs=SENTINEL_TIMEOUTS | {"password": sentinel.sentinel_password or None}
    )
    # One immediate retry: a command failed because the primary moved is sent to the new one.
    options.setdefault("retry", Retry(NoBackoff(), 1))
    return sentinels.master_for(
        sentinel.master,
        connection_class=PrimaryCheckedConnection,
        db=sentinel.db,
        password=sentinel.password or None,
        **options,
    )
