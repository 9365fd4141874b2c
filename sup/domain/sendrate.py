"""How many messages one device may send: one budget for REST and the WebSocket together.

Both transports count against the same limiter key, so a client cannot double its rate by
sending over both, and a flood over the socket is refused exactly as it would be over HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

from sup.domain.limits import Budget
from sup.errors import RateLimited


@dataclass(slots=True, eq=False)
class SendRate:
    budget: Budget

    async def check(self, device_id: str) -> None:
        """Count one send of this device; RateLimited (429) when it is over its budget."""
        if wait := await self.budget.spend(f"device-sends:{device_id}"):
            raise RateLimited(wait, "This device sends too many messages; wait before sending more.")
