"""Accounts: registration, login (every login is a device), tokens, 2FA, devices.

check_* functions validate, do_*/verbs mutate; every write happens in one transaction.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import msgspec

from sup.clock import Clock
from sup.config import AuthConfig
from sup.db.accounts import (
    DeviceStore,
    InviteStore,
    RecoveryCodeStore,
    SessionStore,
    UserStore,
)
from sup.db.database import Database, Queryable, Row, Transaction, from_row
from sup.domain import totp
from sup.domain.passwords import PasswordHasher
from sup.domain.throttle import LoginThrottle
from sup.domain.tokens import AccessTokens, hash_secret, new_refresh_token
from sup.errors import Code, DomainError
from sup.ids import is_uuid, uuid7
from sup.plugins.hookspecs import DeviceAdded, UserRegistered
from sup.plugins.host import Hooks

if TYPE_CHECKING:
    from sup.domain.keychanges import Change, KeyChanges

# A username is kept, shown and compared in one form: its key (username_key below), which
# must be 3 to 32 of a-z, 0-9, '_' and '.', not starting or ending with '.', without '..'.
# ASCII only, so no two scripts can mix into a look-alike (Latin "a" and Cyrillic U+0430 look the same).
USERNAME_REGEX = r"(?!.*[.][.])[a-z0-9_][a-z0-9_.]{1,30}[a-z0-9_]"
_USERNAME = re.compile(USERNAME_REGEX)
USERNAME_MAX_INPUT = 64  # longer input names no one: refused before it is normalised
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
DEVICE_NAME_MAX = 64
# How long after a rotation the old refresh token may ask again for the answer it lost.
REFRESH_RETRY_MS = 10_000
DISPLAY_NAME_MAX = 64
BIO_MAX = 500


class User(msgspec.Struct, frozen=True):
    """A user's public profile."""

    id: str
    username: str
    display_name: str
    bio: str
    avatar_media_id: str | None
    created_at: int


class Device(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: int
    last_seen_at: int
    current: bool


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an authenticated device of a user."""

    user_id: str
    device_id: str


@dataclass(frozen=True, slots=True)
class IssuedSession:
    access_token: str
    refresh_token: str
    expires_in: int
    device_id: str
    user: User


@dataclass(frozen=True, slots=True)
class TotpSetup:
    secret: str
    provisioning_uri: str


def user_from_row(row: Row) -> User:
    return from_row(User, row)


def username_key(username: str) -> str:
    """What makes two usernames one: NFKC, then case folding ("Alice", "ALICE" and fullwidth "Alice" are "alice").

    Registration stores a name in this form; every lookup (login, by-username) goes through it.
    """
    return unicodedata.normalize("NFKC", username).casefold()


def check_username(username: str) -> str:
    """The username as it is stored (its key), or 422 if that is not a valid username."""
    key = username_key(username) if len(username) <= USERNAME_MAX_INPUT else ""
    if _USERNAME.fullmatch(key) is None:
        raise DomainError(
            Code.VALIDATION_FAILED,
            "A username is 3 to 32 ASCII letters, digits, '_' or '.', not starting or ending with '.' "
            "and without '..'; letters are kept in lower case.",
            field="username",
        )
    return key


async def find_by_username(users: UserStore, db: Queryable, username: str) -> Row | None:
    """The user a typed username names (normalised as registration stored it), or None."""
    if len(username) > USERNAME_MAX_INPUT:
        return None
    return await users.get_by_username(db, username_key(username))


def check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise DomainError(
            Code.VALIDATION_FAILED,
            f"A password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long.",
            field="password",
        )


def check_text(value: str, field: str, limit: int) -> str:
    """Trimmed text of at most `limit` characters, without control characters (newline and tab aside)."""
    value = value.strip()
    if len(value) > limit or any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
        raise DomainError(
            Code.VALIDATION_FAILED,
            f"{field} is at most {limit} characters, without control characters.",
            field=field,
        )
    return value


def check_device_name(name: str) -> str:
    name = check_text(name, "device_name", DEVICE_NAME_MAX).replace("\n", " ").replace("\t", " ")
    if not name:
        raise DomainError(Code.VALIDATION_FAILED, f"A device name is 1 to {DEVICE_NAME_MAX} characters.")
    return name


_BAD_CREDENTIALS = "Wrong username or password."


@dataclass(slots=True, eq=False)
class AccountService:
    db: Database
    users: UserStore
    devices: DeviceStore
    sessions: SessionStore
    recovery_codes: RecoveryCodeStore
    invites: InviteStore
    hasher: PasswordHasher
    tokens: AccessTokens
    totp_box: totp.TotpBox
    throttle: LoginThrottle
    clock: Clock
    auth: AuthConfig
    key_changes: KeyChanges
    hooks: Hooks = field(default_factory=Hooks.none)

    # -- rate limits -------------------------------------------------------------

    async def check_ip_rate(self, ip: str) -> None:
        await self.throttle.check_ip(ip)

    # -- registration and login --------------------------------------------------

    async def register(
        self,
        *,
        username: str,
        password: str,
        display_name: str = "",
        invite_code: str | None = None,
        device_name: str = "",
        ip: str,
    ) -> IssuedSession:
        await self.check_ip_rate(ip)
        if self.auth.registration == "closed":
            raise DomainError(Code.REGISTRATION_CLOSED, "Registration is closed on this server.")
        if self.auth.registration == "invite" and not invite_code:
            raise DomainError(Code.INVALID_INVITE, "An invite code is required to register here.")
        username = check_username(username)
        check_password(password)
        display_name = check_text(display_name, "display_name", DISPLAY_NAME_MAX)
        password_hash = await self.hasher.hash(password)
        now = self.clock.now_ms()
        user_id = uuid7(now)
        async with self.db.transaction() as tx:
            if self.auth.registration == "invite" and not await self.invites.claim(
                tx, hash_secret(invite_code or ""), now
            ):
                raise DomainError(Code.INVALID_INVITE, "The invite code is unknown, expired or used up.")
            if not await self.users.insert(
                tx,
                id=user_id,
                username=username,
                password_hash=password_hash,
                display_name=display_name.strip() or username,
                is_admin=False,
                now=now,
            ):
                raise DomainError(Code.USERNAME_TAKEN, "That username is taken.", field="username")
            session = await self._open_device(tx, user_id, device_name, now)
            user = user_from_row(await self.users.get(tx, user_id))
            await self._devices_changed(tx, user_id, [session[1]], "added", now)
            self._tell(tx, "user_registered", UserRegistered(user_id, username, now))
        return self._issued(session, user)

    async def login(
        self,
        *,
        username: str,
        password: str,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        device_name: str = "",
        refresh_token: str | None = None,
        ip: str,
    ) -> IssuedSession:
        """Log in; `refresh_token`, one this client held before, lets it through limits set off by others."""
        await self.throttle.check_ip(ip)
        row = await find_by_username(self.users, self.db, username)
        user_id = row["id"] if row else None
        recognised = await self.throttle.recognised(user_id, ip, refresh_token)
        account = user_id or "name:" + username_key(username[:USERNAME_MAX_INPUT])
        async with self.throttle.login(account, ip, recognised):
            # Unknown user and wrong password take the same path, time and answer.
            ok = await self.hasher.verify(row["password_hash"] if row else None, password)
            if row is None or not ok:
                raise DomainError(Code.INVALID_CREDENTIALS, _BAD_CREDENTIALS)
            now = self.clock.now_ms()
            rehash = self.hasher.needs_rehash(row["password_hash"])
            new_hash = await self.hasher.hash(password) if rehash else None
            async with self.db.transaction() as tx:
                if row["totp_enabled_at"] is not None:
                    await self._check_second_factor(tx, row, totp_code, recovery_code, now)
                if not await self.users.lock_active(tx, row["id"]):  # said only to who knows the password
                    raise DomainError(Code.ACCOUNT_DEACTIVATED, "An administrator has deactivated this account.")
                if new_hash:
                    await self.users.set_password_hash(tx, row["id"], new_hash, now)
                session = await self._open_device(tx, row["id"], device_name, now)
                await self._devices_changed(tx, row["id"], [session[1]], "added", now)
                await self.throttle.logged_in(tx, row["id"], account, ip, now)
        return self._issued(session, user_from_row(row))

    async def _check_second_factor(
        self, tx, row: Row, totp_code: str | None, recovery_code: str | None, now: int
    ) -> None:
        if recovery_code:
            if not await self.recovery_codes.consume(
                tx, row["id"], self.totp_box.hash_recovery_code(recovery_code), now
            ):
                raise DomainError(Code.INVALID_TOTP, "That recovery code is not valid or was used already.")
            return
        if not totp_code:
            raise DomainError(Code.TOTP_REQUIRED, "This account uses two-factor authentication: send totp_code.")
        await self._claim_totp_code(tx, row, totp_code)

    async def _claim_totp_code(self, tx, row: Row, code: str) -> None:
        secret = self.totp_box.open(row["id"], row["totp_secret"]) if row["totp_secret"] else None
        step = totp.matching_step(secret, code, self.clock.now()) if secret else None
        if step is None:
            raise DomainError(Code.INVALID_TOTP, "The two-factor code is wrong.")
        if not await self.users.claim_totp_step(tx, row["id"], step):
            raise DomainError(Code.INVALID_TOTP, "That two-factor code was used already; wait for the next one.")

    async def _open_device(self, tx, user_id: str, device_name: str, now: int) -> tuple[str, str, str]:
        device_id = uuid7(now)
        name = check_device_name(device_name) if device_name.strip() else "Unnamed device"
        await self.devices.insert(tx, id=device_id, user_id=user_id, name=name, now=now)
        refresh = await self._new_refresh(tx, device_id, now)
        self._tell(tx, "device_added", DeviceAdded(user_id, device_id, now))
        return user_id, device_id, refresh

    def _tell(self, tx: Transaction, hook: str, event: object) -> None:
        """Tell the plugins observing `hook` once `tx` has committed."""
        tx.after_commit(partial(self.hooks.notify, hook, event))

    async def _new_refresh(self, tx, device_id: str, now: int, token: str | None = None) -> str:
        token = token or new_refresh_token()
        await self.sessions.insert(
            tx,
            token_hash=hash_secret(token),
            device_id=device_id,
            now=now,
            expires_at=now + self.auth.refresh_token_ttl * 1000,
        )
        return token

    def _issued(self, session: tuple[str, str, str], user: User) -> IssuedSession:
        user_id, device_id, refresh = session
        ttl = self.auth.access_token_ttl
        access = self.tokens.issue(device_id=device_id, user_id=user_id, expires_at_ms=self.clock.now_ms() + ttl * 1000)
        return IssuedSession(access, refresh, ttl, device_id, user)

    async def _devices_changed(
        self, tx: Transaction, user_id: str, device_ids: list[str], change: Change, now: int
    ) -> None:
        await self.key_changes.record(tx, user_id, device_ids, change, now)

    # -- tokens ------------------------------------------------------------------

    async def refresh(self, refresh_token: str) -> IssuedSession:
        """Rotate a refresh token. A token presented twice revokes its device (RFC 9700).

        Except within REFRESH_RETRY_MS of its rotation while its successor is still unused:
        that is a client that never received the answer (a page reloaded mid-refresh, a
        dropped connection), and it gets the same successor again. Whoever else holds it
        then shares one token with the rightful client, and the first of them to rotate it
        makes the other's next refresh a reuse, so theft is still caught.
        """
        token_hash = hash_secret(refresh_token)
        successor = self.tokens.successor(refresh_token)
        now = self.clock.now_ms()
        outcome: Code | None = None
        async with self.db.transaction() as tx:
            consumed = await self.sessions.consume(tx, token_hash, now)
            if consumed is not None:
                device = await self.devices.get_active(tx, consumed["device_id"])
                if device is not None:
                    await self.sessions.prune_expired(tx, device["id"], now)
                    await self._new_refresh(tx, device["id"], now, successor)
            else:
                known = await self.sessions.get(tx, token_hash)
                device = None
                if known is not None and known["used_at"] is not None:
                    device = await self.devices.get_active(tx, known["device_id"])
                    if device is not None and not await self._answer_lost(tx, known, successor, now):
                        # Two parties hold this token; we cannot tell which is the thief.
                        if await self.devices.revoke(tx, device["id"], now):
                            await self._devices_changed(tx, device["user_id"], [device["id"]], "removed", now)
                        outcome = Code.REFRESH_TOKEN_REUSED
            if device is None:
                outcome = outcome or Code.INVALID_REFRESH_TOKEN
            elif outcome is None:
                await self.devices.touch(tx, device["id"], now)
                user = user_from_row(await self.users.get(tx, device["user_id"]))
        if outcome is Code.REFRESH_TOKEN_REUSED:
            raise DomainError(outcome, "This refresh token was already used; the session has been ended.")
        if outcome is not None:
            raise DomainError(Code.INVALID_REFRESH_TOKEN, "The refresh token is not valid or has expired.")
        return self._issued((user.id, device["id"], successor), user)

    async def _answer_lost(self, tx: Transaction, known: Row, successor: str, now: int) -> bool:
        if now - known["used_at"] > REFRESH_RETRY_MS:
            return False
        issued = await self.sessions.get(tx, hash_secret(successor))
        return issued is not None and issued["used_at"] is None and issued["device_id"] == known["device_id"]

    async def authenticate(self, access_token: str) -> Principal:
        """The caller behind an access token; its device must still be active."""
        claims = self.tokens.verify(access_token, self.clock.now_ms())
        device = await self.devices.get_active(self.db, claims.device_id)
        if device is None or device["user_id"] != claims.user_id:
            raise DomainError(Code.INVALID_TOKEN, "This session has ended; log in again.")
        return Principal(claims.user_id, claims.device_id)

    async def authenticate_admin(self, access_token: str | None) -> Principal:
        """The caller behind an administrator's access token; for anyone else, 404 as for a path that does not exist.

        Only an administrator's own expired token answers `token_expired`, so that their client refreshes it.
        """
        now = self.clock.now_ms()
        try:
            if access_token is None:
                raise _nothing_here()
            who = await self.authenticate(access_token)
        except DomainError as error:
            if error.code is Code.TOKEN_EXPIRED and access_token is not None:
                claims = self.tokens.verify(access_token, now, expired_too=True)
                if await self._is_admin(claims.user_id):
                    raise
            raise _nothing_here() from None
        if not await self._is_admin(who.user_id):
            raise _nothing_here()
        return who

    async def _is_admin(self, user_id: str) -> bool:
        row = await self.users.get(self.db, user_id)
        return row is not None and bool(row["is_admin"]) and row["deactivated_at"] is None

    async def reauthenticate(
        self, who: Principal, password: str, totp_code: str | None, recovery_code: str | None
    ) -> None:
        """Check that the caller is the account's owner again: the password, and a second factor if 2FA is on.

        For what cannot be undone (deleting the account): a stolen access token alone is not enough.
        """
        row = await self.verify_password(who, password)
        if row["totp_enabled_at"] is not None:
            async with self.throttle.check(who.user_id), self.db.transaction() as tx:
                await self._check_second_factor(tx, row, totp_code, recovery_code, self.clock.now_ms())

    async def logout(self, who: Principal) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.devices.revoke(tx, who.device_id, now)
            await self._devices_changed(tx, who.user_id, [who.device_id], "removed", now)

    async def change_password(self, who: Principal, current: str, new: str) -> None:
        """Change the password; every other device is logged out at once."""
        async with self.throttle.check(who.user_id):
            row = await self.users.get(self.db, who.user_id)
            if row is None or not await self.hasher.verify(row["password_hash"], current):
                raise DomainError(Code.INVALID_CREDENTIALS, "The current password is wrong.")
        check_password(new)
        new_hash = await self.hasher.hash(new)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.users.set_password_hash(tx, who.user_id, new_hash, now)
            revoked = await self.devices.revoke_all_except(tx, who.user_id, who.device_id, now)
            await self._devices_changed(tx, who.user_id, revoked, "removed", now)

    # -- two-factor authentication -------------------------------------------------

    async def begin_totp(self, who: Principal, password: str) -> TotpSetup:
        row = await self.verify_password(who, password)
        if row["totp_enabled_at"] is not None:
            raise DomainError(Code.TOTP_ALREADY_ENABLED, "Two-factor authentication is already on.")
        secret = totp.new_secret()
        async with self.db.transaction() as tx:
            await self.users.set_totp(
                tx,
                who.user_id,
                secret=self.totp_box.seal(who.user_id, secret),
                enabled_at=None,
                now=self.clock.now_ms(),
            )
        return TotpSetup(secret, totp.provisioning_uri(secret, row["username"], self.auth.totp_issuer))

    async def confirm_totp(self, who: Principal, code: str) -> list[str]:
        """Turn 2FA on with a first valid code; return the one-time recovery codes."""
        row = await self.users.get(self.db, who.user_id)
        if row["totp_enabled_at"] is not None:
            raise DomainError(Code.TOTP_ALREADY_ENABLED, "Two-factor authentication is already on.")
        if row["totp_secret"] is None:
            raise DomainError(Code.TOTP_NOT_PENDING, "Start with POST /api/v1/auth/2fa/enable.")
        codes = totp.new_recovery_codes()
        now = self.clock.now_ms()
        async with self.throttle.check(who.user_id), self.db.transaction() as tx:
            await self._claim_totp_code(tx, row, code)
            await self.users.enable_totp(tx, who.user_id, now)
            await self.recovery_codes.replace(tx, who.user_id, [self.totp_box.hash_recovery_code(c) for c in codes])
        return codes

    async def disable_totp(
        self, who: Principal, password: str, totp_code: str | None, recovery_code: str | None
    ) -> None:
        row = await self.verify_password(who, password)
        if row["totp_enabled_at"] is None:
            raise DomainError(Code.TOTP_NOT_ENABLED, "Two-factor authentication is not on.")
        now = self.clock.now_ms()
        async with self.throttle.check(who.user_id), self.db.transaction() as tx:
            await self._check_second_factor(tx, row, totp_code, recovery_code, now)
            await self.users.set_totp(tx, who.user_id, secret=None, enabled_at=None, now=now)
            await self.recovery_codes.replace(tx, who.user_id, [])

    async def regenerate_recovery_codes(self, who: Principal, totp_code: str) -> list[str]:
        row = await self.users.get(self.db, who.user_id)
        if row["totp_enabled_at"] is None:
            raise DomainError(Code.TOTP_NOT_ENABLED, "Two-factor authentication is not on.")
        codes = totp.new_recovery_codes()
        async with self.throttle.check(who.user_id), self.db.transaction() as tx:
            await self._claim_totp_code(tx, row, totp_code)
            await self.recovery_codes.replace(tx, who.user_id, [self.totp_box.hash_recovery_code(c) for c in codes])
        return codes

    async def two_factor_status(self, who: Principal) -> tuple[bool, int]:
        row = await self.users.get(self.db, who.user_id)
        return row["totp_enabled_at"] is not None, await self.recovery_codes.remaining(self.db, who.user_id)

    async def verify_password(self, who: Principal, password: str) -> Row:
        """The user's row if `password` is theirs, else INVALID_CREDENTIALS; tries count like logins.

        Also for other services' changes that need more than an access token (email), so that a
        stolen token alone cannot, say, redirect password resets to its thief."""
        async with self.throttle.check(who.user_id):
            row = await self.users.get(self.db, who.user_id)
            if row is None or not await self.hasher.verify(row["password_hash"], password):
                raise DomainError(Code.INVALID_CREDENTIALS, "The password is wrong.")
        return row

    # -- devices -------------------------------------------------------------------

    async def list_devices(self, who: Principal) -> list[Device]:
        return [
            from_row(Device, row, current=row["id"] == who.device_id)
            for row in await self.devices.list_active(self.db, who.user_id)
        ]

    async def rename_device(self, who: Principal, device_id: str, name: str) -> Device:
        name = check_device_name(name)
        if not is_uuid(device_id):
            raise _no_device()
        async with self.db.transaction() as tx:
            if not await self.devices.rename(tx, who.user_id, device_id, name):
                raise _no_device()
            row = await self.devices.get_active(tx, device_id)
        return Device(row["id"], row["name"], row["created_at"], row["last_seen_at"], row["id"] == who.device_id)

    async def revoke_device(self, who: Principal, device_id: str) -> None:
        """Log one of my devices out; its tokens stop working at once."""
        if not is_uuid(device_id):
            raise _no_device()
        async with self.db.transaction() as tx:
            device = await self.devices.get_active(tx, device_id)
            # Another user's device looks exactly like one that does not exist.
            if device is None or device["user_id"] != who.user_id:
                raise _no_device()
            now = self.clock.now_ms()
            await self.devices.revoke(tx, device_id, now)
            await self._devices_changed(tx, who.user_id, [device_id], "removed", now)

    # -- administration (sup admin ...) ------------------------------------------------

    async def create_user(self, username: str, password: str, *, is_admin: bool = False) -> User:
        username = check_username(username)
        check_password(password)
        password_hash = await self.hasher.hash(password)
        now = self.clock.now_ms()
        user_id = uuid7(now)
        async with self.db.transaction() as tx:
            if not await self.users.insert(
                tx,
                id=user_id,
                username=username,
                password_hash=password_hash,
                display_name=username,
                is_admin=is_admin,
                now=now,
            ):
                raise DomainError(Code.USERNAME_TAKEN, f"The username {username!r} is taken.")
            self._tell(tx, "user_registered", UserRegistered(user_id, username, now))
            return user_from_row(await self.users.get(tx, user_id))

    async def reset_password(self, username: str, password: str) -> None:
        """Set a new password and log out every device of the user."""
        check_password(password)
        row = await find_by_username(self.users, self.db, username)
        if row is None:
            raise DomainError(Code.NOT_FOUND, f"No user named {username!r}.")
        password_hash = await self.hasher.hash(password)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.users.set_password_hash(tx, row["id"], password_hash, now)
            revoked = await self.devices.revoke_all_except(tx, row["id"], None, now)
            await self._devices_changed(tx, row["id"], revoked, "removed", now)

    async def create_invite(
        self, *, created_by: str | None = None, max_uses: int = 1, ttl_seconds: int | None = None
    ) -> str:
        # ttl_seconds=None is "never"; 0 or less would be an invite dead on arrival, not a never-expiring one.
        if max_uses < 1 or (ttl_seconds is not None and ttl_seconds <= 0):
            raise ValueError(f"an invite needs max_uses >= 1 and ttl_seconds > 0 (got {max_uses}, {ttl_seconds})")
        code = new_invite_code()
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.invites.insert(
                tx,
                code_hash=hash_secret(code),
                created_by=created_by,
                now=now,
                expires_at=None if ttl_seconds is None else now + ttl_seconds * 1000,
                max_uses=max_uses,
            )
        return code


def new_invite_code() -> str:
    """An invite code: only its hash is stored, so it is shown once, when made."""
    return "supi_" + secrets.token_urlsafe(12)


def _no_device() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such device.")


def _nothing_here() -> DomainError:
    return DomainError(Code.NOT_FOUND, "There is nothing at this path.")
