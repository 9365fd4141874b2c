"""Deleting an account: by an administrator, or by its owner (password and 2FA again).

Two steps. At once, in one transaction: every device is logged out (peers get
`keys.changed`), the user leaves every chat (the others get `chat.member.removed`), their
contacts, blocks, lists, stories, reactions, keys and device streams go, and the row is
emptied: no name, no password, no profile. It stays as a tombstone, so the messages they
sent keep naming their sender. Then a durable job erases what may be large, in batches:
each message they sent becomes a tombstone (content gone, the row and its seq stay, the
members get `message.deleted`, as for a delete for everyone), and their files, uploads in
progress and data exports are deleted, with their blobs. An hourly sweep finishes any
erasure a crash cut short.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from sup.blobs.store import BlobStore
from sup.clock import Clock
from sup.db.accounts import DeviceStore, UserStore
from sup.db.chats import MemberStore
from sup.db.database import Database, Row, Transaction
from sup.db.erasure import ErasureStore
from sup.db.exports import ExportStore
from sup.db.media import BLOB_COLUMNS, MediaStore
from sup.domain.accounts import AccountService, Principal
from sup.domain.admin import no_user, not_yourself
from sup.domain.audit import AuditLog
from sup.domain.chats import ChatService
from sup.domain.files import MediaFiles
from sup.domain.keychanges import KeyChanges
from sup.domain.messages import MessageService
from sup.errors import Code, DomainError
from sup.ids import is_uuid
from sup.jobs.scheduler import Scheduler

ERASE_JOB = "accounts.erase"
BATCH = 200  # messages or files per transaction: a short hold on SQLite's one writer
# A job hands over to a new one after this long, well inside the scheduler's timeout, so an
# account of any size is erased in steps that each finish.
JOB_BUDGET_SECONDS = 20.0
DELETED_NAME = "Deleted account"


def deleted_username(user_id: str) -> str:
    """What a deleted account is called: '-' is not allowed in usernames, so no one can register it."""
    return f"deleted-{user_id}"


@dataclass(slots=True, eq=False)
class AccountErasure:
    db: Database
    users: UserStore
    devices: DeviceStore
    members: MemberStore
    erasure: ErasureStore
    exports: ExportStore
    media: MediaStore
    accounts: AccountService
    chats: ChatService
    messages: MessageService
    files: MediaFiles
    blobs: BlobStore
    key_changes: KeyChanges
    audit: AuditLog
    scheduler: Scheduler
    clock: Clock

    def __post_init__(self) -> None:
        self.scheduler.register(ERASE_JOB, self._erase_job)
        self.scheduler.every("accounts.erase-sweep", 3600, self._sweep)

    async def delete_by_admin(self, actor: Principal | None, user_id: str) -> None:
        """An administrator deletes an account (None: `sup admin`)."""
        if actor is not None and actor.user_id == user_id:
            raise not_yourself("delete")
        await self._close(actor.user_id if actor else None, user_id, "admin")

    async def delete_own(
        self, who: Principal, *, password: str, totp_code: str | None, recovery_code: str | None
    ) -> None:
        """A user deletes their own account: the password again, and a 2FA code if 2FA is on."""
        await self.accounts.reauthenticate(who, password, totp_code, recovery_code)
        await self._close(who.user_id, who.user_id, "self")

    async def _close(self, actor_id: str | None, user_id: str, by: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            row = await self.users.lock(tx, user_id) if is_uuid(user_id) else None
            if row is None:
                raise no_user()
            if row["deleted_at"] is not None:
                raise DomainError(Code.CONFLICT, "This account was deleted already.")
            # Before leaving the chats: the peers who must hear of the devices are found through them.
            revoked = await self.devices.revoke_all_except(tx, user_id, None, now)
            await self.key_changes.record(tx, user_id, revoked, "removed", now)
            await self.chats.remove_everywhere(tx, user_id, now)
            await self.erasure.forget_personal(tx, user_id)
            await self.users.erase(tx, user_id, deleted_username(user_id), DELETED_NAME, now)
            details = {"username": row["username"], "by": by, "devices_revoked": len(revoked)}
            await self.audit.record(tx, actor_id, "user.deleted", user_id, details, now)
            await self.scheduler.enqueue(ERASE_JOB, user_id.encode(), dedupe_key=_dedupe(user_id), tx=tx)
            tx.after_commit(self._wake)

    async def _wake(self) -> None:
        self.scheduler.wake()

    # -- the erasure job ---------------------------------------------------------------------

    async def _erase_job(self, payload: bytes) -> None:
        """Tombstone the account's messages, take its reactions back, delete its files, uploads and exports.

        Idempotent: each step picks up what is left.
        """
        user_id = payload.decode()
        steps: list[tuple[Callable[[], Awaitable[list[Any]]], Callable[[list[Any]], Awaitable[None]]]] = [
            (lambda: self.erasure.messages_left(self.db, user_id, BATCH), self._tombstone),
            (lambda: self.erasure.reactions_left(self.db, user_id, BATCH), partial(self._withdraw, user_id)),
            (lambda: self.erasure.media_left(self.db, user_id, BATCH), self._delete_files),
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + JOB_BUDGET_SECONDS
        for left, erase in steps:
            while batch := await left():
                await erase(batch)
                if loop.time() > deadline:
                    await self.scheduler.enqueue(ERASE_JOB, payload)  # the rest in a job of its own
                    return
        async with self.db.transaction() as tx:
            uploads = await self.erasure.drop_uploads(tx, user_id)
            export_keys = await self.exports.delete_of_user(tx, user_id)
        for upload_id in uploads:
            await self.blobs.abort_parts(upload_id)
        await self.files.release(export_keys)

    async def _tombstone(self, rows: list[Row]) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            devices = _ChatDevices(self.members, tx)
            for row in rows:
                chat_id = row["chat_id"]
                await self.messages.tombstone(tx, chat_id, row["id"], row["seq"], now, devices=await devices(chat_id))

    async def _withdraw(self, user_id: str, reactions: list[Row]) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            devices = _ChatDevices(self.members, tx)
            for row in reactions:
                chat_id = row["chat_id"]
                await self.messages.withdraw_reaction(
                    tx, chat_id, row["message_id"], user_id, row["emoji"], now, devices=await devices(chat_id)
                )

    async def _delete_files(self, media_ids: list[str]) -> None:
        keys: list[str] = []
        async with self.db.transaction() as tx:
            for media_id in media_ids:
                gone = await self.media.delete(tx, media_id)
                if gone is not None:
                    keys += [gone[c] for c in BLOB_COLUMNS if gone[c] is not None]
        await self.files.release(keys)

    async def _sweep(self) -> None:
        """Hourly: queue the erasure again for deleted accounts with something left (a job that failed for good)."""
        for user_id in await self.erasure.unfinished(self.db, 100):
            await self.scheduler.enqueue(ERASE_JOB, user_id.encode(), dedupe_key=_dedupe(user_id))


def _dedupe(user_id: str) -> str:
    return f"{ERASE_JOB}:{user_id}"


class _ChatDevices:
    """The member devices of each chat, looked up once per transaction (a batch touches few chats)."""

    def __init__(self, members: MemberStore, tx: Transaction) -> None:
        self._members = members
        self._tx = tx
        self._known: dict[str, list[str]] = {}

    async def __call__(self, chat_id: str) -> list[str]:
        if chat_id not in self._known:
            self._known[chat_id] = [d["id"] for d in await self._members.devices(self._tx, chat_id)]
        return self._known[chat_id]
