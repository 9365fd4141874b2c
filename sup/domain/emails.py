"""Email: a verified address on the account, password reset by email, invites by email.

Mail goes out through the `send_email` hook (the built-in SMTP mailer, or a plugin); without one,
every endpoint here answers `not_configured`. Tokens are long random strings mailed once, stored
only as hashes, single-use, and short-lived.

A password reset never tells whether an account or an address exists: every request that passes
the rate limits gets the same answer at once, and the lookup and the mail happen afterwards, in a
task this service owns.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from dataclasses import dataclass, field

from sup.bus.ratelimit import RateLimiter
from sup.clock import Clock
from sup.config import EmailConfig, RateLimitConfig
from sup.db.accounts import DeviceStore, UserStore
from sup.db.database import Database
from sup.db.emails import EmailStore
from sup.domain.accounts import AccountService, Principal, check_password, find_by_username, username_key
from sup.domain.keychanges import KeyChanges
from sup.domain.passwords import PasswordHasher
from sup.domain.tokens import hash_secret
from sup.errors import Code, DomainError, RateLimited
from sup.plugins.hookspecs import OutgoingEmail
from sup.plugins.host import Hooks

log = logging.getLogger("sup.email")

# Plain ASCII addresses: a local part without quoting or spaces, a domain of dot-separated labels
# (internationalised domains in their xn-- form). Stricter than RFC 5322, as mail providers are.
EMAIL_REGEX = (
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_EMAIL = re.compile(EMAIL_REGEX)
EMAIL_MAX = 254  # RFC 5321's limit on a path
LOGIN_MAX = 254
HOUR = 3600.0


def check_email(address: str) -> tuple[str, str]:
    """The address as given (trimmed) and its key (lower case), or 422."""
    address = address.strip()
    local = address.rpartition("@")[0]
    if len(address) > EMAIL_MAX or _EMAIL.fullmatch(address) is None or local.startswith(".") or ".." in local:
        raise DomainError(Code.VALIDATION_FAILED, "That is not an email address SUP can send to.", field="email")
    return address, address.lower()


def not_configured() -> DomainError:
    return DomainError(
        Code.NOT_CONFIGURED, "This server sends no email: its operator has not set up SMTP ([email] smtp_host)."
    )


def _bad_token() -> DomainError:
    return DomainError(Code.INVALID_EMAIL_TOKEN, "This link or code is not valid: unknown, expired or used already.")


@dataclass(frozen=True, slots=True)
class EmailStatus:
    address: str | None  # the verified address
    verified_at: int | None
    pending: str | None  # an address waiting for its verification code
    available: bool  # whether this server sends email at all


@dataclass(slots=True, eq=False)
class EmailService:
    db: Database
    users: UserStore
    devices: DeviceStore
    emails: EmailStore
    hasher: PasswordHasher
    accounts: AccountService
    key_changes: KeyChanges
    hooks: Hooks
    limiter: RateLimiter
    limits: RateLimitConfig
    config: EmailConfig
    public_url: str
    clock: Clock
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)

    def __post_init__(self) -> None:
        self.public_url = self.public_url.rstrip("/")

    @property
    def available(self) -> bool:
        return self.hooks.implements("send_email")

    def _require(self) -> None:
        if not self.available:
            raise not_configured()

    # -- the account's address -----------------------------------------------------------------

    async def status(self, who: Principal) -> EmailStatus:
        row = await self.emails.address_of(self.db, who.user_id)
        pending = await self.emails.pending(self.db, who.user_id, self.clock.now_ms())
        return EmailStatus(
            address=row["address"] if row else None,
            verified_at=row["verified_at"] if row else None,
            pending=pending,
            available=self.available,
        )

    async def set_address(self, who: Principal, address: str, password: str, ip: str) -> EmailStatus:
        """Mail a verification code to a new address; it becomes the account's once verified."""
        self._require()
        address, key = check_email(address)
        # The narrowest limit first: asking again for one address does not use up the client's allowance.
        await self._limit(f"email:to:{key}", self.limits.email_per_address)
        await self._limit(f"email:user:{who.user_id}", self.limits.email_per_address)
        await self._limit(f"email:ip:{ip}", self.limits.email_per_ip)
        row = await self.accounts.verify_password(who, password)
        token = new_email_token()
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.emails.prune(tx, who.user_id, now)
            await self.emails.drop_unused(tx, who.user_id, "verify")
            await self.emails.insert_token(
                tx,
                token_hash=hash_secret(token),
                user_id=who.user_id,
                purpose="verify",
                address=address,
                now=now,
                expires_at=now + round(self.config.verify_token_hours * 3_600_000),
            )
        self._queue(self._verification_mail(row["username"], address, token))
        return await self.status(who)

    async def verify(self, who: Principal, token: str, ip: str) -> EmailStatus:
        """Confirm the address a code was mailed to: it becomes the account's verified address."""
        await self.accounts.check_ip_rate(ip)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            # Another user's code is refused like an unknown one, and stays unused.
            used = await self.emails.consume(tx, hash_secret(token), "verify", now, who.user_id)
            if used is None:
                raise _bad_token()
            address, key = check_email(used["address"])
            owner = await self.emails.owner_of(tx, key)
            if owner is not None and owner != who.user_id:
                raise DomainError(Code.EMAIL_TAKEN, "This address is already the verified address of another account.")
            await self.emails.set_verified(tx, who.user_id, address, key, now)
            # Reset links mailed to the address before are for an address the account no longer has.
            await self.emails.drop_unused(tx, who.user_id, "reset")
        return await self.status(who)

    async def remove_address(self, who: Principal, password: str) -> None:
        """Take the verified address off the account (no password reset by email then)."""
        await self.accounts.verify_password(who, password)
        async with self.db.transaction() as tx:
            await self.emails.remove(tx, who.user_id)
            await self.emails.drop_unused(tx, who.user_id, "reset")
            await self.emails.drop_unused(tx, who.user_id, "verify")

    # -- password reset ----------------------------------------------------------------------

    async def request_reset(self, login: str, ip: str) -> None:
        """Mail a reset code to the verified address of the account named (by address or username), if any.

        The same answer, as fast, whether or not there is such an account: the work happens later.
        """
        self._require()
        key = login.strip().lower() if "@" in login else username_key(login[:LOGIN_MAX])
        await self._limit(f"email:to:{key}", self.limits.email_per_address)
        await self._limit(f"email:ip:{ip}", self.limits.email_per_ip)
        self._spawn(self._send_reset(login.strip()))

    async def _send_reset(self, login: str) -> None:
        user_id = address = None
        if "@" in login:
            user_id = await self.emails.owner_of(self.db, login.lower())
        else:
            user = await find_by_username(self.users, self.db, login)
            user_id = user["id"] if user else None
        row = await self.emails.address_of(self.db, user_id) if user_id else None
        if user_id is None or row is None:
            return  # nobody to tell; the asker learns nothing either way
        address = row["address"]
        if self.limits.enabled and await self.limiter.hit(
            f"email:to:{row['address_key']}", self.limits.email_per_address, HOUR
        ):
            log.info("password reset for a user not mailed: too many mails to the address this hour")
            return
        user = await self.users.get(self.db, user_id)
        token = new_email_token()
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.emails.prune(tx, user_id, now)
            await self.emails.drop_unused(tx, user_id, "reset")
            await self.emails.insert_token(
                tx,
                token_hash=hash_secret(token),
                user_id=user_id,
                purpose="reset",
                address=address,
                now=now,
                expires_at=now + round(self.config.reset_token_minutes * 60_000),
            )
        await self._deliver(self._reset_mail(user["username"], address, token))

    async def confirm_reset(self, token: str, new_password: str, ip: str) -> None:
        """Set a new password with a mailed reset code (once); every device of the account is logged out."""
        await self.accounts.check_ip_rate(ip)
        check_password(new_password)  # before the code is used up: a too-short password does not cost it
        password_hash = await self.hasher.hash(new_password)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            used = await self.emails.consume(tx, hash_secret(token), "reset", now, None)
            if used is None:
                raise _bad_token()
            user_id = used["user_id"]
            await self.emails.drop_unused(tx, user_id, "reset")
            await self.users.set_password_hash(tx, user_id, password_hash, now)
            revoked = await self.devices.revoke_all_except(tx, user_id, None, now)
            await self.key_changes.record(tx, user_id, revoked, "removed", now)

    # -- invites -----------------------------------------------------------------------------

    async def send_invite(self, address: str, code: str, expires_at_ms: int | None) -> None:
        """Mail an invite code now; raise if it cannot be handed over."""
        self._require()
        await deliver(self.hooks, invite_mail(address, code, expires_at_ms, self.public_url))

    # -- sending -----------------------------------------------------------------------------

    async def _deliver(self, message: OutgoingEmail) -> None:
        await deliver(self.hooks, message)

    def _queue(self, message: OutgoingEmail) -> None:
        self._spawn(self._deliver(message))

    def _spawn(self, work) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("sending an email failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Let the mails being sent finish (for `timeout` seconds at most)."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _limit(self, key: str, limit: int) -> None:
        if self.limits.enabled:
            wait = await self.limiter.hit(key, limit, HOUR)
            if wait:
                raise RateLimited(wait, "Too many emails asked for; try again later.")

    # -- the mails ---------------------------------------------------------------------------

    def _link(self, screen: str, token: str) -> str:
        # Only server.public_url: a link built from the request's Host header could point a reset
        # code at whoever sent that header. The token is in the fragment, which no server logs.
        return f"\n\n    {self.public_url}/{screen}#token={token}\n\nor" if self.public_url else ""

    def _verification_mail(self, username: str, address: str, token: str) -> OutgoingEmail:
        hours = f"{self.config.verify_token_hours:g}"
        text = (
            f"Someone, hopefully you, asked to use this address for the SUP account {username!r}.\n\n"
            f"To confirm it, open{self._link('verify-email', token)} enter this code in the app:\n\n    {token}\n\n"
            f"It works for {hours} hours. If this was not you, ignore this mail: nothing changes.\n"
        )
        return OutgoingEmail(to=address, subject="Confirm your email address for SUP", text=text)

    def _reset_mail(self, username: str, address: str, token: str) -> OutgoingEmail:
        minutes = f"{self.config.reset_token_minutes:g}"
        text = (
            f"Someone, hopefully you, asked to reset the password of the SUP account {username!r}.\n\n"
            f"To choose a new password, open{self._link('reset-password', token)} enter this code in the app:"
            f"\n\n    {token}\n\n"
            f"It works once, for {minutes} minutes. A reset logs out every device of the account.\n"
            "If you did not ask for this, ignore this mail: your password stays as it is.\n"
        )
        return OutgoingEmail(to=address, subject="Reset your SUP password", text=text)


async def deliver(hooks: Hooks, message: OutgoingEmail) -> None:
    """Hand one mail to the `send_email` hook now; raise if no plugin took it."""
    if not await hooks.first("send_email", message=message):
        raise not_configured()


def invite_mail(address: str, code: str, expires_at_ms: int | None, public_url: str) -> OutgoingEmail:
    """The mail of an invite code (`sup admin invite --email`)."""
    address, _ = check_email(address)
    public_url = public_url.rstrip("/")
    where = public_url or "a SUP server"
    how = f"open {public_url}/register#invite={code} or, in the app," if public_url else "in the app,"
    until = "" if expires_at_ms is None else f"It works until {_utc(expires_at_ms)} UTC.\n"
    text = (
        f"You are invited to {where}, an end-to-end encrypted messenger.\n\n"
        f"To sign up, {how} enter this invite code when you register:\n\n    {code}\n\n{until}"
    )
    return OutgoingEmail(to=address, subject="Your invitation to SUP", text=text)


def new_email_token() -> str:
    return "supe_" + secrets.token_urlsafe(32)


def _utc(ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%d %H:%M")
