"""Administration: what a server administrator (a user with is_admin) sees and does to accounts.

Every change is one transaction that also writes its audit entry, so the log holds exactly
what happened. Account deletion is in erasure.py (it is also what a user does to their own).
Who is an administrator is checked before any of this is reached (AccountService.authenticate_admin).
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import Literal

import msgspec

from sup.clock import Clock
from sup.db.accounts import DeviceStore, InviteStore, RecoveryCodeStore, UserStore
from sup.db.database import Database, Row, Transaction, from_row
from sup.db.stats import StatsStore
from sup.domain.accounts import Principal, find_by_username, new_invite_code
from sup.domain.audit import AuditLog
from sup.domain.cursors import parse_cursor
from sup.domain.keychanges import KeyChanges
from sup.domain.tokens import hash_secret
from sup.errors import Code, DomainError
from sup.ids import is_uuid

UserStatus = Literal["active", "deactivated", "deleted"]
INVITE_MAX_USES = 10_000
INVITE_MAX_SECONDS = 365 * 86_400
INVITE_DEFAULT_SECONDS = 7 * 86_400


class AdminUser(msgspec.Struct, frozen=True, kw_only=True):
    """An account as an administrator sees it."""

    id: str
    username: str
    display_name: str
    is_admin: bool
    status: UserStatus
    two_factor: bool
    created_at: int
    last_seen_at: int | None
    deactivated_at: int | None
    deleted_at: int | None


class AdminDevice(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: int
    last_seen_at: int


class Storage(msgspec.Struct, frozen=True, kw_only=True):
    files: int
    bytes: int
    quota_bytes: int  # 0: no quota


class AdminUserDetail(msgspec.Struct, frozen=True, kw_only=True):
    user: AdminUser
    devices: list[AdminDevice]  # logged in now
    storage: Storage
    chats: int


class AdminUserPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AdminUser]
    next_cursor: str | None


class RegistrationInvite(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the SHA-256 of the code, in hex: the code itself is not stored
    created_by: str | None
    created_by_username: str | None
    created_at: int
    expires_at: int | None
    max_uses: int
    uses: int
    state: Literal["active", "used_up", "expired"]


class NewRegistrationInvite(msgspec.Struct, frozen=True, kw_only=True):
    code: str  # shown this once
    invite: RegistrationInvite


class RegistrationInvitePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[RegistrationInvite]
    next_cursor: str | None


class UserCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int
    active: int
    deactivated: int
    deleted: int
    admins: int


class MessageCounts(msgspec.Struct, frozen=True, kw_only=True):
    total: int
    deleted: int  # tombstones


class StorageCounts(msgspec.Struct, frozen=True, kw_only=True):
    files: int
    bytes: int  # as quotas count them
    stored_bytes: int  # originals, identical bytes once (thumbnails and clean copies not counted)


class ServerStats(msgspec.Struct, frozen=True, kw_only=True):
    users: UserCounts
    devices: int  # logged in
    chats: dict[str, int]  # by type: direct, group, channel
    messages: MessageCounts
    storage: StorageCounts
    jobs: dict[str, int]  # by state: queued, running, done, failed


def status_of(row: Row) -> UserStatus:
    if row["deleted_at"] is not None:
        return "deleted"
    return "deactivated" if row["deactivated_at"] is not None else "active"


def admin_user(row: Row) -> AdminUser:
    return from_row(
        AdminUser,
        row,
        is_admin=bool(row["is_admin"]),
        status=status_of(row),
        two_factor=row["totp_enabled_at"] is not None,
    )


def _invite(row: Row, now: int) -> RegistrationInvite:
    if row["uses"] >= row["max_uses"]:
        state = "used_up"
    elif row["expires_at"] is not None and row["expires_at"] <= now:
        state = "expired"
    else:
        state = "active"
    return from_row(RegistrationInvite, row, id=bytes(row["code_hash"]).hex(), state=state)


def no_user() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such user.")


def not_yourself(what: str) -> DomainError:
    return DomainError(Code.CONFLICT, f"Administrators cannot {what} their own account here.")


@dataclass(slots=True, eq=False)
class AdminService:
    db: Database
    users: UserStore
    devices: DeviceStore
    recovery_codes: RecoveryCodeStore
    invites: InviteStore
    stats_store: StatsStore
    audit: AuditLog
    key_changes: KeyChanges
    clock: Clock
    _: KW_ONLY
    quota_bytes: int

    # -- users -------------------------------------------------------------------------------

    async def list_users(
        self, *, search: str | None, status: UserStatus | None, after: str | None, limit: int
    ) -> AdminUserPage:
        """Accounts in the order they were made; `search` finds a part of a username or display name."""
        rows = await self.users.admin_page(self.db, search=search, status=status, after=after, limit=limit + 1)
        items = [admin_user(r) for r in rows[:limit]]
        return AdminUserPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)

    async def get_user(self, user_id: str) -> AdminUserDetail:
        row = await self.users.get(self.db, user_id) if is_uuid(user_id) else None
        if row is None:
            raise no_user()
        devices = await self.devices.list_active(self.db, user_id)
        storage = await self.stats_store.user_storage(self.db, user_id)
        return AdminUserDetail(
            user=admin_user(row),
            devices=[
                AdminDevice(id=d["id"], name=d["name"], created_at=d["created_at"], last_seen_at=d["last_seen_at"])
                for d in devices
            ],
            storage=Storage(files=storage["files"], bytes=int(storage["bytes"]), quota_bytes=self.quota_bytes),
            chats=await self.stats_store.user_chats(self.db, user_id),
        )

    async def find_user_id(self, username: str) -> str:
        """The id of the user a typed username names (for `sup admin`)."""
        row = await find_by_username(self.users, self.db, username)
        if row is None:
            raise DomainError(Code.NOT_FOUND, f"No user named {username!r}.")
        return row["id"]

    async def _target(self, tx: Transaction, user_id: str) -> Row:
        """The account an action is for, held until commit; 404 if none, 409 if it was deleted."""
        row = await self.users.lock(tx, user_id) if is_uuid(user_id) else None
        if row is None:
            raise no_user()
        if row["deleted_at"] is not None:
            raise DomainError(Code.CONFLICT, "This account was deleted.")
        return row

    async def deactivate(self, actor: Principal | None, user_id: str) -> AdminUser:
        """No login any more, every device logged out (their sockets close), until reactivated."""
        if actor is not None and actor.user_id == user_id:
            raise not_yourself("deactivate")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            if row["deactivated_at"] is None:
                await self.users.set_deactivated(tx, user_id, now, now)
            revoked = await self._revoke_all(tx, user_id, now)
            await self._record(
                tx,
                actor,
                "user.deactivated",
                user_id,
                row,
                now,
                devices_revoked=len(revoked),
                already=bool(row["deactivated_at"]),
            )
            return admin_user(await self.users.get(tx, user_id))

    async def reactivate(self, actor: Principal | None, user_id: str) -> AdminUser:
        """The account may log in again (its old devices stay logged out)."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            await self.users.set_deactivated(tx, user_id, None, now)
            await self._record(tx, actor, "user.reactivated", user_id, row, now, already=row["deactivated_at"] is None)
            return admin_user(await self.users.get(tx, user_id))

    async def reset_two_factor(self, actor: Principal | None, user_id: str) -> None:
        """2FA off and the recovery codes gone: the lost-phone case. The password still guards the account."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            if row["totp_secret"] is None:
                raise DomainError(Code.TOTP_NOT_ENABLED, "This account does not use two-factor authentication.")
            await self.users.set_totp(tx, user_id, secret=None, enabled_at=None, now=now)
            await self.recovery_codes.replace(tx, user_id, [])
            await self._record(tx, actor, "user.2fa_reset", user_id, row, now)

    async def revoke_devices(self, actor: Principal | None, user_id: str) -> list[str]:
        """Log every device of the account out at once; the ids of those that were logged in."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            revoked = await self._revoke_all(tx, user_id, now)
            await self._record(tx, actor, "user.devices_revoked", user_id, row, now, device_ids=revoked)
        return revoked

    async def revoke_device(self, actor: Principal | None, user_id: str, device_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            device = await self.devices.get_active(tx, device_id) if is_uuid(device_id) else None
            if device is None or device["user_id"] != user_id:
                raise DomainError(Code.NOT_FOUND, "This user has no such logged-in device.")
            await self.devices.revoke(tx, device_id, now)
            await self.key_changes.record(tx, user_id, [device_id], "removed", now)
            await self._record(tx, actor, "user.device_revoked", user_id, row, now, device_id=device_id)

    async def set_admin(self, actor: Principal | None, user_id: str, is_admin: bool) -> AdminUser:
        if actor is not None and actor.user_id == user_id:
            raise not_yourself("change the administrator role of")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self._target(tx, user_id)
            await self.users.set_admin(tx, user_id, is_admin, now)
            action = "user.admin_granted" if is_admin else "user.admin_revoked"
            await self._record(tx, actor, action, user_id, row, now, already=bool(row["is_admin"]) == is_admin)
            return admin_user(await self.users.get(tx, user_id))

    async def _revoke_all(self, tx: Transaction, user_id: str, now: int) -> list[str]:
        revoked = await self.devices.revoke_all_except(tx, user_id, None, now)
        await self.key_changes.record(tx, user_id, revoked, "removed", now)
        return revoked

    async def _record(
        self, tx: Transaction, actor: Principal | None, action: str, user_id: str, row: Row, now: int, **details: object
    ) -> None:
        await self.audit.record(
            tx, actor.user_id if actor else None, action, user_id, {"username": row["username"], **details}, now
        )

    # -- invites -----------------------------------------------------------------------------

    async def create_invite(
        self, actor: Principal, *, max_uses: int, expires_in_seconds: int | None
    ) -> NewRegistrationInvite:
        """A code for `auth.registration = "invite"`; `expires_in_seconds` None: until it is used up."""
        if not 1 <= max_uses <= INVITE_MAX_USES:
            raise DomainError(Code.VALIDATION_FAILED, f"max_uses is 1 to {INVITE_MAX_USES}.", field="max_uses")
        if expires_in_seconds is not None and not 60 <= expires_in_seconds <= INVITE_MAX_SECONDS:
            raise DomainError(
                Code.VALIDATION_FAILED,
                f"expires_in_seconds is 60 to {INVITE_MAX_SECONDS} (or null: never).",
                field="expires_in_seconds",
            )
        code = new_invite_code()
        code_hash = hash_secret(code)
        now = self.clock.now_ms()
        expires_at = None if expires_in_seconds is None else now + expires_in_seconds * 1000
        async with self.db.transaction() as tx:
            await self.invites.insert(
                tx, code_hash=code_hash, created_by=actor.user_id, now=now, expires_at=expires_at, max_uses=max_uses
            )
            invite = _invite(await self.invites.get(tx, code_hash), now)
            details = {"max_uses": max_uses, "expires_at": expires_at}
            await self.audit.record(tx, actor.user_id, "invite.created", invite.id, details, now)
        return NewRegistrationInvite(code=code, invite=invite)

    async def list_invites(self, *, before: str | None, limit: int) -> RegistrationInvitePage:
        """Every invite, newest first, with how far it was used."""
        rows = await self.invites.page(self.db, parse_cursor(before, ".", _invite_hash) if before else None, limit + 1)
        now = self.clock.now_ms()
        items = [_invite(r, now) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            next_cursor = f"{items[-1].created_at}.{items[-1].id}"
        return RegistrationInvitePage(items=items, next_cursor=next_cursor)

    async def revoke_invite(self, actor: Principal, invite_id: str) -> None:
        """Delete an invite: its code no longer registers anyone."""
        code_hash = _invite_hash(invite_id)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self.invites.get(tx, code_hash) if code_hash else None
            if row is None or not await self.invites.delete(tx, code_hash):
                raise DomainError(Code.NOT_FOUND, "No such invite.")
            details = {"uses": row["uses"], "max_uses": row["max_uses"]}
            await self.audit.record(tx, actor.user_id, "invite.revoked", invite_id, details, now)

    # -- the server ----------------------------------------------------------------------------

    async def stats(self) -> ServerStats:
        users = await self.stats_store.users(self.db)
        messages = await self.stats_store.messages(self.db)
        storage = await self.stats_store.storage(self.db)
        return ServerStats(
            users=UserCounts(
                total=users["total"],
                active=users["active"] or 0,
                deactivated=users["deactivated"] or 0,
                deleted=users["deleted"] or 0,
                admins=users["admins"] or 0,
            ),
            devices=await self.stats_store.active_devices(self.db),
            chats={kind: 0 for kind in ("direct", "group", "channel")} | await self.stats_store.chats_by_type(self.db),
            messages=MessageCounts(total=messages["total"], deleted=messages["deleted"] or 0),
            storage=StorageCounts(
                files=storage["files"], bytes=int(storage["bytes"]), stored_bytes=int(storage["stored_bytes"])
            ),
            jobs={state: 0 for state in ("queued", "running", "done", "failed")}
            | await self.stats_store.jobs_by_state(self.db),
        )


def _invite_hash(invite_id: str) -> bytes | None:
    if len(invite_id) != 64 or any(c not in "0123456789abcdef" for c in invite_id):
        return None
    return bytes.fromhex(invite_id)
