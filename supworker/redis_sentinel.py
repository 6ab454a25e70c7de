"""A Sentinel-managed Redis connection that notices when the primary has moved.

redis-py asks the sentinels for the primary only when a connection (re)connects. After a
failover the old primary keeps accepting writes until the sentinels turn it into a replica,
which they do only at their next look at it (every 10 s): a connection left open to it meanwhile
would enqueue jobs, finish them and ack RabbitMQ on a server whose data is about to be thrown
away. So a connection asks the sentinels again at most every CHECK_SECONDS while in use, and
when the primary has moved it drops the connection and fails the command with a
ConnectionError, which REDIS_RETRY (or the caller) retries on the new primary. A failure, not a
silent reconnect: a transaction's WATCH does not survive the change of server.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.sentinel import SentinelManagedConnection

log = logging.getLogger(__name__)

# Costs one round trip to a sentinel per connection and second of use.
CHECK_SECONDS = 1.0


class PrimaryCheckedConnection(SentinelManagedConnection):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._checked_at = 0.0

    def connect(self) -> None:
        new = self._sock is None  # the pool calls this on every checkout: only a new socket counts as checked
        super().connect()
        if new:
            self._checked_at = time.monotonic()

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sock is None:
            # redis-py's own reconnect, when a command is retried, goes back to the address the
            # connection had: this one asks the sentinels.
            self.connect()
        elif check_health and time.monotonic() - self._checked_at >= CHECK_SECONDS:
            self._checked_at = time.monotonic()
            self._check_primary()
        super().send_packed_command(command, check_health)

    def read_response(
        self, disable_decoding: bool = False, *, disconnect_on_error: bool = True, push_request: bool = False
    ) -> Any:
        # redis-py's Sentinel connection defaults this to False, unlike every other connection: a
        # read interrupted (RQ's SIGTERM handler raises out of BLPOP) left the reply unread on
        # the socket, and the next command on the connection read it as its own.
        return super().read_response(
            disable_decoding=disable_decoding, disconnect_on_error=disconnect_on_error, push_request=push_request
        )

    def _check_primary(self) -> None:
        try:
            primary = self.connection_pool.get_master_address()
        except RedisConnectionError:
            return  # no sentinel answers, or none knows a primary now: keep the one in hand
        if primary != (self.host, self.port):
            log.warning("the Redis primary moved from %s:%s to %s:%s; reconnecting", self.host, self.port, *primary)
            self.disconnect()
            raise RedisConnectionError(f"the Redis primary moved to {primary[0]}:{primary[1]}")
