"""Users: profiles, contacts and blocks."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from sup.clock import Clock
from sup.db.accounts import BlockStore, ContactStore, UserStore
from sup.db.database import Database, from_row
from sup.domain.accounts import (
    BIO_MAX,
    DISPLAY_NAME_MAX,
    Principal,
    User,
    check_text,
    find_by_username,
    user_from_row,
)
from sup.domain.attachments import MediaAttachments
from sup.errors import Code, DomainError
from sup.ids import is_uuid


class Contact(msgspec.Struct, frozen=True):
    user: User
    added_at: int


class BlockedUser(msgspec.Struct, frozen=True):
    user_id: str
    username: str
    blocked_at: int


class Page(msgspec.Struct, frozen=True):
    items: list
    next_cursor: str | None


UNSET = msgspec.UNSET


def _same_user(who: Principal, user_id: str) -> None:
    if who.user_id != user_id:
        raise DomainError(Code.FORBIDDEN, "You can only do this for your own account.")


@dataclass(slots=True, eq=False)
class UserService:
    db: Database
    users: UserStore
    contacts: ContactStore
    blocks: BlockStore
    attachments: MediaAttachments
    clock: Clock

    async def get_user(self, user_id: str) -> User:
        row = await self.users.get(self.db, user_id) if is_uuid(user_id) else None
        if row is None:
            raise DomainError(Code.NOT_FOUND, "No such user.")
        return user_from_row(row)

    async def _live_user(self, user_id: str) -> User:
        """A user one may add or block: a deleted account still shows its (empty) profile, but is no one."""
        row = await self.users.get(self.db, user_id) if is_uuid(user_id) else None
        if row is None or row["deleted_at"] is not None:
            raise DomainError(Code.NOT_FOUND, "No such user.")
        return user_from_row(row)

    async def get_by_username(self, username: str) -> User:
        row = await find_by_username(self.users, self.db, username)
        if row is None:
            raise DomainError(Code.NOT_FOUND, "No such user.")
        return user_from_row(row)

    async def update_profile(
        self,
        who: Principal,
        user_id: str,
        *,
        display_name: str | msgspec.UnsetType = UNSET,
        bio: str | msgspec.UnsetType = UNSET,
        avatar_media_id: str | msgspec.UnsetType | None = UNSET,
    ) -> User:
        _same_user(who, user_id)
        changes: dict[str, object] = {}
        if display_name is not UNSET:
            changes["display_name"] = check_text(display_name, "display_name", DISPLAY_NAME_MAX)
        if bio is not UNSET:
            changes["bio"] = check_text(bio, "bio", BIO_MAX)
        if avatar_media_id is not UNSET:
            if avatar_media_id is not None and not is_uuid(avatar_media_id):
                raise DomainError(Code.VALIDATION_FAILED, "avatar_media_id is a media id.", field="avatar_media_id")
            changes["avatar_media_id"] = avatar_media_id
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            if changes.get("avatar_media_id") is not None:
                await self.attachments.as_avatar(tx, user_id, changes["avatar_media_id"], now)
            await self.users.update_profile(tx, user_id, changes, now)
            return user_from_row(await self.users.get(tx, user_id))

    # -- contacts -----------------------------------------------------------------

    async def list_contacts(self, who: Principal, user_id: str, after: str | None, limit: int) -> Page:
        _same_user(who, user_id)
        rows = await self.contacts.page(self.db, user_id, after, limit + 1)
        items = [
            Contact(
                # The row's id and created_at are the contact entry's; the user's are renamed.
                user=from_row(User, r, id=r["contact_id"], created_at=r["user_created_at"]),
                added_at=r["created_at"],
            )
            for r in rows[:limit]
        ]
        return Page(items, items[-1].user.id if len(rows) > limit else None)

    async def add_contact(self, who: Principal, user_id: str, contact_id: str) -> Contact:
        _same_user(who, user_id)
        if contact_id == user_id:
            raise DomainError(Code.VALIDATION_FAILED, "You cannot add yourself as a contact.", field="user_id")
        contact = await self._live_user(contact_id)
        async with self.db.transaction() as tx:
            added_at = await self.contacts.add(tx, user_id, contact_id, self.clock.now_ms())
        return Contact(user=contact, added_at=added_at)

    async def remove_contact(self, who: Principal, user_id: str, contact_id: str) -> None:
        _same_user(who, user_id)
        async with self.db.transaction() as tx:
            if not is_uuid(contact_id) or not await self.contacts.remove(tx, user_id, contact_id):
                raise DomainError(Code.NOT_FOUND, "That user is not in your contacts.")

    # -- blocks -------------------------------------------------------------------

    async def list_blocked(self, who: Principal, user_id: str, after: str | None, limit: int) -> Page:
        _same_user(who, user_id)
        rows = await self.blocks.page(self.db, user_id, after, limit + 1)
        items = [BlockedUser(r["blocked_id"], r["username"], r["created_at"]) for r in rows[:limit]]
        return Page(items, items[-1].user_id if len(rows) > limit else None)

    async def block(self, who: Principal, user_id: str, blocked_id: str) -> BlockedUser:
        _same_user(who, user_id)
        if blocked_id == user_id:
            raise DomainError(Code.VALIDATION_FAILED, "You cannot block yourself.", field="user_id")
        target = await self._live_user(blocked_id)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.blocks.add(tx, user_id, blocked_id, now)
        return BlockedUser(target.id, target.username, now)

    async def unblock(self, who: Principal, user_id: str, blocked_id: str) -> None:
        _same_user(who, user_id)
        async with self.db.transaction() as tx:
            if not is_uuid(blocked_id) or not await self.blocks.remove(tx, user_id, blocked_id):
                raise DomainError(Code.NOT_FOUND, "That user is not blocked.")
