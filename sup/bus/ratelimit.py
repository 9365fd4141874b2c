"""Rate limiting with GCRA (the generic cell rate algorithm).

GCRA keeps one number per key, the "theoretical arrival time", and allows a burst of
`limit` requests per `period` while smoothing to the same average rate afterwards.
The memory implementation is for one process; a Redis one (same interface) will serve
several.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


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
