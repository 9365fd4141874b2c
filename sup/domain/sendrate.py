"""How many messages one device may send: one budget for REST and the WebSocket together.

Both transports count against the same limiter key, so a client cannot double its rate by
sending over both, and a flood over the socket is refused exactly as it would be over HTTP.
"""

from __future__ import annotations

from sup.bus.ratelimit import RateLimiter
from sup.errors import RateLimited


class SendRate:
    def __init__(self, limiter: RateLimiter | None, per_minute: int) -> None:
        self._limiter = limiter  # None: rate limits are off (ratelimit.enabled = false)
        self._per_minute = per_minute

    async def check(self, device_id: str) -> None:
        """Count one send of this device; RateLimited (429) when it is over its budget."""
        if self._limiter is None:
            return
        wait = await self._limiter.hit(f"device-sends:{device_id}", self._per_minute)
        if wait:
            raise RateLimited(wait, "This device sends too many messages; wait before sending more.")
