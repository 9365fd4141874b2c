"""Rate limiting with GCRA (the generic cell rate algorithm), in one process or shared through Redis.

GCRA keeps one number per key, the "theoretical arrival time", and allows a burst of
`limit` requests per `period` while smoothing to the same average rate afterwards.
`MemoryRateLimiter` counts in this process; `RedisRateLimiter` counts in Redis, so every
process behind one `bus.url` spends one budget (`open_rate_limiter` picks by URL).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("sup.ratelimit")


class RateLimiter(Protocol):
    async def hit(self, key: str, limit: int, period: float = 60.0) -> float:
        """Count one request against `key`; 0 if allowed, else the seconds to wait."""

    async def reset(self, key: str) -> None:
        """Forget `key` (e.g. after a successful login)."""

    async def peek(self, key: str, limit: int, period: float = 60.0) -> float:
        """What `hit` would answer now, without counting anything (to count failures only)."""


class MemoryRateLimiter:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self._now = monotonic
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def hit(self, key: str, limit: int, period: float = 60.0) -> float:
        now = self._now()
        interval = period / limit
        tat = max(self._tat.get(key, now), now)
        allow_at = tat - period + interval
        if now < allow_at:
            return allow_at - now
        self._tat[key] = tat + interval
        if len(self._tat) > self._max_keys:
            self._sweep(now)
        return 0.0

    async def reset(self, key: str) -> None:
        self._tat.pop(key, None)

    async def peek(self, key: str, limit: int, period: float = 60.0) -> float:
        now = self._now()
        allow_at = max(self._tat.get(key, now), now) - period + period / limit
        return max(0.0, allow_at - now)

    def _sweep(self, now: float) -> None:
        # A key whose arrival time has passed is back to a full burst: it can be forgotten.
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
        while len(self._tat) > self._max_keys:  # still full of active keys: drop the oldest
            del self._tat[next(iter(self._tat))]


# The same GCRA as MemoryRateLimiter, run inside Redis so that reading and moving the arrival
# time is one atomic step for every process. Time is Redis's own (TIME), so processes whose clocks
# disagree still agree on the budget. Microseconds as integers: exact in a Lua double for
# centuries, and formatted with %.0f so SET never stores an exponent. The key expires when it
# would be back to a full burst, so Redis holds only keys that are being limited. TIME in a script
# that writes needs Redis 5 or later (scripts replicate their effects).
# KEYS[1]: the key. ARGV: limit, period in microseconds, 1 to count (hit) or 0 not to (peek).
# Returns the microseconds to wait, 0 when allowed.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = math.max(1, math.floor(period / limit))
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allow_at = tat - period + interval
if now < allow_at then return allow_at - now end
if ARGV[3] == '1' then
  local new = tat + interval
  redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.max(1, math.ceil((new - now) / 1000)))
end
return 0
"""

# After Redis fails, how long this process counts by itself before it asks Redis again: one
# failed connection attempt per this many seconds, not one per request.
RETRY_SECONDS = 5.0
# Redis connections of one process for rate limits; one script takes well under a millisecond.
POOL_SIZE = 32
# How long a request may queue for one of them before it counts locally: a burst, not an outage.
POOL_WAIT_SECONDS = 5.0


class RedisRateLimiter:
    """GCRA in Redis: every process spends one budget per key.

    When Redis does not answer (down, unreachable, slower than `timeout`), the limits are counted
    in this process instead until it answers again: fail *soft*, neither open nor closed. Refusing
    everything would turn a Redis outage into a SUP outage, when Redis is elsewhere only a wake-up
    hint (DESIGN.md); letting everything through would give a password guesser unlimited tries.
    Counted per process, the budget is at most N times the setting with N processes.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "sup:",
        *,
        timeout: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        # Each install's keys apart from another's on a shared Redis (the bus namespace, chosen in sup/app).
        self._prefix = f"{prefix}ratelimit:"
        self._timeout = timeout
        self._now = monotonic
        self._redis: Any = None
        self._script: Any = None
        self.local = MemoryRateLimiter(monotonic)
        self._down_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether the limits are counted in Redis now (False while Redis does not answer)."""
        return self._now() >= self._down_until

    async def start(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("redis:// rate limits need the redis extra: pip install 'sup-messenger[redis]'") from exc
        # A bounded pool that a burst of requests queues on: the default pool raises "Too many
        # connections" past 100 at once, which would send a busy server to counting locally.
        pool = aioredis.BlockingConnectionPool.from_url(
            self._url,
            max_connections=POOL_SIZE,
            timeout=POOL_WAIT_SECONDS,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
        )
        self._redis = aioredis.Redis.from_pool(pool)
        self._script = self._redis.register_script(GCRA_SCRIPT)

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def hit(self, key: str, limit: int, period: float = 60.0) -> float:
        return await self._run(key, limit, period, count=True)

    async def peek(self, key: str, limit: int, period: float = 60.0) -> float:
        return await self._run(key, limit, period, count=False)

    async def reset(self, key: str) -> None:
        await self.local.reset(key)
        if self.shared:
            try:
                await self._redis.delete(self._prefix + key)
            except Exception as exc:
                self._failed(exc)

    async def _run(self, key: str, limit: int, period: float, *, count: bool) -> float:
        if self.shared:
            try:
                micros = await self._script(
                    keys=[self._prefix + key], args=[limit, math.ceil(period * 1_000_000), 1 if count else 0]
                )
                return int(micros) / 1_000_000
            except Exception as exc:
                self._failed(exc)
        local = self.local
        return await (local.hit(key, limit, period) if count else local.peek(key, limit, period))

    def _failed(self, exc: Exception) -> None:
        if self.shared:
            log.warning("redis rate limits failed (%s); counting in this process for %.0f s", exc, RETRY_SECONDS)
        self._down_until = self._now() + RETRY_SECONDS


def open_rate_limiter(url: str, prefix: str = "sup:") -> MemoryRateLimiter | RedisRateLimiter:
    """Counted where the bus is: in this process for memory://, in Redis for redis:// and rediss://."""
    if url.startswith("memory://"):
        return MemoryRateLimiter()
    if url.startswith(("redis://", "rediss://")):
        return RedisRateLimiter(url, prefix)
    raise ValueError(f"unsupported bus URL scheme: {url.split(':', 1)[0]!r}; use memory:// or redis://")
