"""How fast passwords may be guessed, without handing anyone the power to lock an owner out.

The policy (docs/api.md#rate-limits):

- Failures are counted, not attempts: a correct password costs nothing.
- Failed logins per (account, address) and per address beyond their limits are refused (429).
  Only traffic from that address fills them, so guessing from elsewhere cannot refuse the owner.
- Failed logins per account, from all addresses together, beyond `auth_per_account` slow each
  further attempt down, by a delay that grows with the excess up to `auth_max_delay`, but never
  refuse it: a refusal there is exactly the lockout an attacker wants.
- A recognised client skips both the refusals and the delay: one at an address the account
  logged in from within the refresh-token lifetime (kept in the database as a keyed hash, so
  every process knows it and it survives restarts), or one that presents a refresh token of
  one of the account's active devices. A device id alone is not proof: the key directory shows
  every user's device ids to every other user.

The failure counts are checked before the password is and counted after it failed, so a burst
of concurrent guesses from one address can pass the check together: the per-address request
limit (`auth_per_ip`, counted up front) bounds that burst.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sup.bus.ratelimit import RateLimiter
from sup.clock import Clock
from sup.config import RateLimitConfig
from sup.db.accounts import DeviceStore, LoginAddressStore, SessionStore
from sup.db.database import Database, Transaction
from sup.domain.tokens import hash_secret
from sup.errors import Code, DomainError, RateLimited

# What counts as a guess that failed: a wrong password, or a wrong second factor after a right one.
FAILURES = frozenset({Code.INVALID_CREDENTIALS, Code.INVALID_TOTP})
_NOBODY = "00000000-0000-0000-0000-000000000000"


@dataclass(slots=True, eq=False)
class LoginThrottle:
    db: Database
    limiter: RateLimiter
    limits: RateLimitConfig
    addresses: LoginAddressStore
    sessions: SessionStore
    devices: DeviceStore
    address_key: bytes
    clock: Clock
    remember_seconds: int

    async def check_ip(self, ip: str) -> None:
        """Every authentication request from an address, successful or not (it guards the hasher)."""
        if self.limits.enabled:
            wait = await self.limiter.hit(f"auth:ip:{ip}", self.limits.auth_per_ip)
            if wait:
                raise RateLimited(wait)

    async def recognised(self, user_id: str | None, ip: str, refresh_token: str | None) -> bool:
        """Whether this client has shown before that it is the account's: by its address or a refresh token."""
        since = self.clock.now_ms() - self.remember_seconds * 1000
        # An unknown user costs the same query, so timing does not tell which usernames exist.
        known = await self.addresses.known(self.db, user_id or _NOBODY, self._address_hash(user_id, ip), since)
        if known or user_id is None or not refresh_token:
            return known
        session = await self.sessions.get(self.db, hash_secret(refresh_token))
        device = await self.devices.get_active(self.db, session["device_id"]) if session else None
        return device is not None and device["user_id"] == user_id

    @asynccontextmanager
    async def login(self, account: str, ip: str, recognised: bool) -> AsyncIterator[None]:
        """Around one password check for `account` (a user id, or the name tried if there is none)."""
        pair, address, whole = self._login_limits(account, ip)
        if self.limits.enabled and not recognised:
            await self._refuse_over(pair, address)
            wait = await self.limiter.peek(*whole)
            if wait:  # the account is being guessed at: slow down, never refuse
                await asyncio.sleep(min(wait, self.limits.auth_max_delay))
        try:
            yield
        except DomainError as error:
            if error.code in FAILURES:
                await self._count(pair, address, whole)
            raise

    async def logged_in(self, tx: Transaction, user_id: str, account: str, ip: str, now: int) -> None:
        """Remember the address (in the login's transaction); its failed guesses are forgiven."""
        await self.addresses.remember(
            tx, user_id, self._address_hash(user_id, ip), now, forget_before=now - self.remember_seconds * 1000
        )
        await self.limiter.reset(self._login_limits(account, ip)[0][0])

    @asynccontextmanager
    async def check(self, user_id: str) -> AsyncIterator[None]:
        """Around a password or 2FA check by a logged-in user: failures beyond the limit get 429."""
        limit = (f"auth:user:{user_id}", self.limits.auth_per_account)
        if self.limits.enabled:
            await self._refuse_over(limit)
        try:
            yield
        except DomainError as error:
            if error.code in FAILURES:
                await self._count(limit)
            raise

    def _login_limits(self, account: str, ip: str) -> tuple[tuple[str, int], tuple[str, int], tuple[str, int]]:
        limits = self.limits
        return (
            (f"auth:fail:{account}:{ip}", limits.auth_failures_per_account_ip),
            (f"auth:fail:ip:{ip}", limits.auth_failures_per_ip),
            (f"auth:fail:{account}", limits.auth_per_account),
        )

    async def _refuse_over(self, *limits: tuple[str, int]) -> None:
        for key, limit in limits:
            wait = await self.limiter.peek(key, limit)
            if wait:
                raise RateLimited(wait)

    async def _count(self, *limits: tuple[str, int]) -> None:
        if self.limits.enabled:
            for key, limit in limits:
                await self.limiter.hit(key, limit)

    def _address_hash(self, user_id: str | None, ip: str) -> bytes:
        message = f"{user_id or _NOBODY}\n{ip}".encode()
        return hmac.new(self.address_key, message, hashlib.sha256).digest()[:16]
