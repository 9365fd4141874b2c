"""Time as a dependency, so tests can move it."""

import time


class Clock:
    """Wall-clock time in milliseconds since the Unix epoch."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now(self) -> float:
        return time.time()


class FrozenClock(Clock):
    """A clock that only moves when told to (tests)."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._ms = start_ms if start_ms is not None else time.time_ns() // 1_000_000

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> float:
        return self._ms / 1000

    def advance(self, seconds: float) -> None:
        self._ms += int(seconds * 1000)
