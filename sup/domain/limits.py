"""A budget for every family of requests, so no route is unlimited.

Each request is counted against one family: per user once the caller is known, else per
client address. The families with their own budget are the ones that cost the most or can be
used to guess (sends, search, invite codes, prekey bundles, uploads); everything else shares
`requests_per_user` or `requests_per_ip`. Some routes count twice, on purpose: the login routes
also pass LoginThrottle's failure counts, uploads their `uploads_per_user` starts, email routes
their hourly budgets, prekey bundles the limit per pair of users.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sup.bus.ratelimit import RateLimiter
from sup.config import RateLimitConfig
from sup.errors import RateLimited


class Family(StrEnum):
    """What a route counts against; also the first part of its rate-limit key."""

    SENDS = "sends"
    SEARCH = "search"
    JOINS = "joins"
    PREKEY_FETCHES = "prekey-fetches"
    UPLOADS = "upload-requests"
    REQUESTS = "requests"  # every other route of a logged-in user
    ANONYMOUS = "anonymous"  # every route before a user is known, per client address


@dataclass(frozen=True, slots=True)
class Budget:
    """So many a minute for each key, counted by the shared limiter; no limiter (rate limits off): no limit."""

    limiter: RateLimiter | None
    per_minute: int

    async def spend(self, key: str) -> float:
        """Count one for `key`: 0 while it is within the budget, else the seconds to wait."""
        if self.limiter is None:
            return 0.0
        return await self.limiter.hit(key, self.per_minute)


class RequestLimits:
    def __init__(self, limiter: RateLimiter, config: RateLimitConfig) -> None:
        self._limiter = limiter
        self._enabled = config.enabled
        self.per_minute = {
            Family.SENDS: config.sends_per_user,
            Family.SEARCH: config.search_per_user,
            Family.JOINS: config.joins_per_user,
            Family.PREKEY_FETCHES: config.prekey_fetches_per_user,
            Family.UPLOADS: config.upload_requests_per_user,
            Family.REQUESTS: config.requests_per_user,
            Family.ANONYMOUS: config.requests_per_ip,
        }

    async def check(self, family: Family, subject: str) -> None:
        """Count one request of `subject` (a user id, or an address for ANONYMOUS); 429 past the budget."""
        if not self._enabled:
            return
        wait = await self._limiter.hit(f"{family.value}:{subject}", self.per_minute[family])
        if wait:
            raise RateLimited(wait, f"Too many requests of this kind ({family.value}); try again later.")

    async def check_send(self, user_id: str) -> None:
        """One message sent by `user_id`, over either transport: REST and WebSocket share this budget."""
        await self.check(Family.SENDS, user_id)
