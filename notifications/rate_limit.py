"""Per-channel send rates that hold across every worker process: a fixed one-second window in Redis.

One Lua call increments the window's counter by what a worker wants and answers how many it
may send now, so two workers can never both take the last slots of a second.
"""

from __future__ import annotations

import time

from redis import Redis

_GRANT = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], 2000) end
local before = used - tonumber(ARGV[1])
local free = tonumber(ARGV[2]) - before
if free <= 0 then return 0 end
if free > tonumber(ARGV[1]) then free = tonumber(ARGV[1]) end
return free
"""
KEY_PREFIX = "supworker:rate:"


class RateLimiter:
    """`take(n)` blocks until some sends are allowed (at most `max_wait` seconds) and says how many."""

    def __init__(self, redis: Redis, channel: str, per_second: int, max_wait: float = 10.0):
        self.redis = redis
        self.channel = channel
        self.per_second = per_second  # 0: no limit
        self.max_wait = max_wait
        self._script = redis.register_script(_GRANT)

    def take(self, wanted: int = 1) -> int:
        """How many of `wanted` sends may go now; 0 when the limit held for longer than max_wait."""
        if self.per_second <= 0 or wanted <= 0:
            return wanted
        deadline = time.monotonic() + self.max_wait
        while True:
            now = time.time()
            window = int(now)
            granted = int(self._script(keys=[f"{KEY_PREFIX}{self.channel}:{window}"], args=[wanted, self.per_second]))
            if granted:
                return granted
            if time.monotonic() >= deadline:
                return 0
            time.sleep(max(window + 1 - now, 0.001))  # until the next window opens


class Allowance:
    """Sends granted by a limiter, taken from Redis in chunks rather than one call per message."""

    def __init__(self, limiter: RateLimiter):
        self.limiter = limiter
        self.left = 0

    def grant(self, wanted: int) -> bool:
        """Whether one more message may go now; asks the limiter for up to `wanted` when empty."""
        if self.left == 0:
            self.left = self.limiter.take(wanted)
        if self.left == 0:
            return False
        self.left -= 1
        return True
