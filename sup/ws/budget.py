"""A connection's frame budget: a token bucket of `burst` frames refilled at `rate` a second.

A frame over the budget is refused, not queued (queueing is what let one client take the
server's memory). The first refusal is answered with an `error` frame; a client that goes on
sending `burst` more refused frames has ignored it and is closed (Close.RATE_LIMITED).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum


class Verdict(Enum):
    TAKE = "take"  # handle the frame
    WARN = "warn"  # refuse it, with an error frame
    DROP = "drop"  # refuse it quietly (the client was told)
    CLOSE = "close"  # the client ignores the refusals: close the connection


class FrameBudget:
    __slots__ = ("_at", "_burst", "_now", "_rate", "_refused", "_tokens")  # one per connection: no dict

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._now = monotonic
        self._at = monotonic()
        self._refused = 0  # frames refused since the last one taken

    def take(self) -> Verdict:
        now = self._now()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._refused = 0
            return Verdict.TAKE
        self._refused += 1
        if self._refused == 1:
            return Verdict.WARN
        return Verdict.CLOSE if self._refused > self._burst else Verdict.DROP

    def retry_after(self) -> float:
        """Seconds until the next frame would be taken."""
        return max(0.0, (1.0 - self._tokens) / self._rate)
