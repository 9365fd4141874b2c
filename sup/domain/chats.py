"""Chats: direct (one per pair), groups and channels; members and roles.

Every change is one transaction that also appends its events (and, where people would
expect one, a system message); the transaction announces them once it has committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sup.clock import Clock
from sup.db.accounts import UserStore
from sup.db.chats import ChatRow, ChatStore, MemberRow, MemberStore, RoleStore
from sup.db.database import Database, Row, Transaction
from sup.db.messages import MessageStore
from sup.domain.access import ChatAccess, Membership, no_chat
from sup.domain.accounts import check_text
from sup.domain.attachments import MediaAttachments
from sup.domain.cursors import parse_cursor
from sup.domain.keydirectory import KeyDirectory
from sup.domain.permissions import DEFAULTS, RANK, Permission, from_names, to_names
from sup.domain.timeline import Message, Timeline, message_from_row
from sup.domain.views import view_of
from sup.errors import Code, DomainError
from sup.ids import canonical_id, is_uuid, uuid7

TITLE_MAX = 128
VISIBILITIES = ("private", "public")
DESCRIPTION_MAX = 2000
MAX_MEMBERS_AT_CREATION = 1000
ROLE_NAME_MAX = 64


class Role(msgspec.Struct, frozen=True):
    id: str
    kind: str
    name: str
    permissions: list[str]


class Chat(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    title: str
    description: str
    avatar_media_id: str | None
    encrypted: bool
    created_by: str | None
    created_at: int
    updated_at: int
    last_seq: int
    visibility: str = "private"  # public: found by search and joined by anyone (channels, plaintext groups)
    my_role: Role | None = None
    last_read_seq: int = 0
    unread_count: int = 0
    last_message: Message | None = None


class Member(msgspec.Struct, frozen=True):
    user_id: str
    username: str
    display_name: str
    role: Role
    joined_at: int
    # How far they have read; in a channel, null but for yourself (read positions are one's own).
    last_read_seq: int | None


def _member(row: Row, who_id: str, reads: bool) -> Member:
    """A member list's row; `reads`: whether others' read positions show."""
    return Member(
        user_id=row["user_id"],
        username=row["username"],
        display_name=row["display_name"],
        role=_role(
            {"id": row["role_id"], "kind": row["kind"], "name": row["role_name"], "permissions": row["permissions"]}
        ),
        joined_at=row["joined_at"],
        last_read_seq=row["last_read_seq"] if reads or row["user_id"] == who_id else None,
    )


def _role(row: Row) -> Role:
    flags = sum(Permission) if row["kind"] == "owner" else row["permissions"]
    return Role(id=row["id"], kind=row["kind"], name=row["name"], permissions=to_names(flags))


def chat_from_row(chat: ChatRow, member: MemberRow | None = None) -> Chat:
    my_role = None
    if member is not None:
        flags = sum(Permission) if member.kind == "owner" else member.permissions
        my_role = Role(member.role_id, member.kind, member.role_name, to_names(flags))
    return view_of(Chat, chat, my_role=my_role, last_read_seq=member.last_read_seq if member else 0)


class ChatPage(msgspec.Struct, frozen=True):
    items: list[Chat]
    next_cursor: str | None


class MemberPage(msgspec.Struct, frozen=True):
    """Members by user id. In a channel, whoever does not manage members sees only themselves."""

    items: list[Member]
    next_cursor: str | None
    member_count: int = 0  # every member, listed or not


@dataclass(slots=True, eq=False)
class ChatService:
    db: Database
    chats: ChatStore
    member_store: MemberStore
    role_store: RoleStore
    users: UserStore
    messages: MessageStore
    access: ChatAccess
    timeline: Timeline
    attachments: MediaAttachments
    keys: KeyDirectory
    clock: Clock

    # -- create, read ------------------------------------------------------------------

    async def create(
        self,
        who_id: str,
        *,
        type: str,
        member_ids: list[str],
        title: str = "",
        description: str = "",
        encrypted: bool | None = None,
        visibility: str = "private",
    ) -> tuple[Chat, bool]:
        """Create a chat; (chat, created). A direct chat that exists already is returned as it is."""
        others = sorted({m for m in member_ids if m != who_id})
        if any(not is_uuid(m) for m in others):
            raise DomainError(Code.VALIDATION_FAILED, "member_ids are user ids.", field="member_ids")
        title = check_text(title, "title", TITLE_MAX)
        description = check_text(description, "description", DESCRIPTION_MAX)
        if type == "direct":
            if len(others) != 1:
                raise DomainError(
                    Code.VALIDATION_FAILED, "A direct chat has exactly one other member.", field="member_ids"
                )
            if encrypted is False:
                raise DomainError(Code.VALIDATION_FAILED, "Direct chats are always end-to-end encrypted.")
            encrypted = True
        elif type == "channel":
            if encrypted:
                raise DomainError(Code.VALIDATION_FAILED, "Channels are public broadcasts and not encrypted.")
            encrypted = False
        else:
            encrypted = True if encrypted is None else encrypted
        if type != "direct" and not title:
            raise DomainError(Code.VALIDATION_FAILED, "A group or channel needs a title.", field="title")
        check_visibility(type, encrypted, visibility)
        if len(others) > MAX_MEMBERS_AT_CREATION:
            raise DomainError(Code.VALIDATION_FAILED, f"At most {MAX_MEMBERS_AT_CREATION} members at creation.")
        found = await self.users.existing(self.db, others)  # a deleted account is no one to chat with
        if missing := [m for m in others if m not in found]:
            raise DomainError(Code.NOT_FOUND, "Some members do not exist.", missing_user_ids=missing)
        for other in others:
            await self.access.check_not_blocked(self.db, who_id, other)
            if type == "direct":
                await self.access.check_not_blocked(self.db, other, who_id)

        now = self.clock.now_ms()
        direct_key = ":".join(sorted([who_id, others[0]])) if type == "direct" else None
        if direct_key:
            existing = await self.chats.get_direct(self.db, direct_key)
            if existing is not None:
                return await self._view(existing.id, who_id), False
        chat_id = uuid7(now)
        async with self.db.transaction() as tx:
            if not await self.chats.insert(
                tx,
                id=chat_id,
                type=type,
                title=title,
                description=description,
                encrypted=encrypted,
                direct_key=direct_key,
                created_by=who_id,
                now=now,
                visibility=visibility,
            ):  # another request created this direct chat a moment ago
                existing = await self.chats.get_direct(tx, direct_key)
                created = False
                chat_id = existing.id
            else:
                created = True
                roles = {}
                for kind, flags in DEFAULTS[type].items():
                    roles[kind] = uuid7(now)
                    await self.role_store.insert(
                        tx,
                        id=roles[kind],
                        chat_id=chat_id,
                        kind=kind,
                        name=kind.capitalize(),
                        permissions=int(flags),
                        now=now,
                    )
                creator_role = roles["member"] if type == "direct" else roles["owner"]
                await self.member_store.add(tx, chat_id, who_id, creator_role, now)
                for other in others:
                    await self.member_store.add(tx, chat_id, other, roles["member"], now)
                chat = chat_from_row(await self.chats.get(tx, chat_id))
                await self.timeline.to_chat(tx, chat_id, "chat.created", {"chat": chat}, now)
        return await self._view(chat_id, who_id), created

    async def get(self, who_id: str, chat_id: str, *, device_id: str | None = None) -> Chat:
        await self.access.access_chat(self.db, who_id, chat_id)
        return await self._view(chat_id, who_id, device_id)

    async def _view(self, chat_id: str, who_id: str, device_id: str | None = None) -> Chat:
        chat = await self.chats.get(self.db, chat_id)
        member = await self.member_store.get(self.db, chat_id, who_id)
        if chat is None or member is None:
            raise no_chat()
        return await self._decorate(chat, member, who_id, device_id)

    async def _decorate(self, chat: ChatRow, member: MemberRow, who_id: str, device_id: str | None) -> Chat:
        """The chat as I see it: my role, my unread count (as my device can read them), the last message."""
        view = chat_from_row(chat, member)
        last = await self.messages.last_visible(self.db, chat.id, who_id)
        readable_by = device_id if chat.encrypted else None
        unread = await self.messages.unread(self.db, chat.id, who_id, member.last_read_seq, readable_by=readable_by)
        return msgspec.structs.replace(view, unread_count=unread, last_message=message_from_row(last) if last else None)

    async def list_mine(self, who_id: str, before: str | None, limit: int, *, device_id: str | None = None) -> ChatPage:
        cursor = parse_cursor(before, "_", canonical_id) if before else None
        rows = await self.chats.page_for_user(self.db, who_id, cursor, limit + 1)
        items = [await self._decorate(chat, member, who_id, device_id) for chat, member, _ in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            chat, _, activity = rows[limit - 1]
            next_cursor = f"{activity}_{chat.id}"
        return ChatPage(items, next_cursor)

    # -- change --------------------------------------------------------------------------

    async def update(self, who_id: str, chat_id: str, changes: dict[str, Any]) -> Chat:
        now = self.clock.now_ms()
        clean: dict[str, Any] = {}
        if "title" in changes:
            clean["title"] = check_text(changes["title"], "title", TITLE_MAX)
        if "description" in changes:
            clean["description"] = check_text(changes["description"], "description", DESCRIPTION_MAX)
        if "avatar_media_id" in changes:
            media = changes["avatar_media_id"]
            if media is not None and not is_uuid(media):
                raise DomainError(Code.VALIDATION_FAILED, "avatar_media_id is a media id.", field="avatar_media_id")
            clean["avatar_media_id"] = media
        if "visibility" in changes:
            clean["visibility"] = changes["visibility"]
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            if membership.chat.type == "direct":
                raise DomainError(Code.FORBIDDEN, "A direct chat has no title or description to edit.")
            membership.require(Permission.EDIT_INFO, "edit the chat's info")
            if "visibility" in clean:
                check_visibility(membership.chat.type, membership.chat.encrypted, clean["visibility"])
            if clean.get("avatar_media_id") is not None:
                await self.attachments.as_avatar(tx, who_id, clean["avatar_media_id"], now)
            if "title" in clean and not clean["title"]:
                raise DomainError(Code.VALIDATION_FAILED, "A group or channel needs a title.", field="title")
            await self.chats.update(tx, chat_id, clean, now)
            chat = chat_from_row(await self.chats.get(tx, chat_id))
            await self.timeline.to_chat(tx, chat_id, "chat.updated", {"chat": chat}, now)
            if "title" in clean and clean["title"] != membership.chat.title:
                await self.timeline.system(
                    tx, chat_id, who_id, {"action": "title_changed", "title": clean["title"]}, now
                )
            if clean.get("visibility", membership.chat.visibility) != membership.chat.visibility:
                # Members should know when anyone at all may join and read along, or no longer.
                action = {"action": "visibility_changed", "visibility": clean["visibility"]}
                await self.timeline.system(tx, chat_id, who_id, action, now)
        return await self._view(chat_id, who_id)

    async def delete(self, who_id: str, chat_id: str) -> None:
        """Delete a chat for everyone: the owner of a group or channel, either member of a direct chat."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            if membership.chat.type != "direct" and membership.member.kind != "owner":
                raise DomainError(Code.FORBIDDEN, "Only the owner can delete this chat.")
            await self.timeline.to_chat(tx, chat_id, "chat.deleted", {"chat_id": chat_id}, now)
            await self.attachments.chat_going(tx, chat_id)
            await self.chats.delete(tx, chat_id)

    async def leave(self, who_id: str, chat_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            if membership.chat.type == "direct":
                raise DomainError(Code.CONFLICT, "You cannot leave a direct chat; delete it instead.")
            await self._remove_member(tx, membership, who_id, who_id, now)

    async def _remove_member(
        self, tx: Transaction, membership: Membership, actor_id: str, user_id: str, now: int
    ) -> None:
        chat_id = membership.chat.id
        leaving = await self.member_store.get(tx, chat_id, user_id)
        if leaving.kind == "owner":
            successor = await self.member_store.successor(tx, chat_id, user_id)
            if successor is None:  # the last one out: nothing is left to keep
                await self.timeline.to_chat(tx, chat_id, "chat.deleted", {"chat_id": chat_id}, now)
                await self.attachments.chat_going(tx, chat_id)
                await self.chats.delete(tx, chat_id)
                return
            owner_role = await self.role_store.by_kind(tx, chat_id, "owner")
            await self.member_store.set_role(tx, chat_id, successor["user_id"], owner_role["id"])
        # The leaving member's devices hear it too, then stop hearing anything.
        await self.timeline.membership_changed(
            tx,
            membership.chat.type,
            chat_id,
            [user_id],
            "chat.member.removed",
            {"chat_id": chat_id, "user_id": user_id},
            now,
            notice={"action": "member_removed" if actor_id != user_id else "member_left", "user_id": user_id},
            actor_id=actor_id,
        )
        await self.member_store.remove(tx, chat_id, user_id)
        if membership.chat.encrypted:
            await self.keys.member_left(tx, chat_id)
        return

    async def remove_everywhere(self, tx: Transaction, user_id: str, now: int) -> None:
        """The user's account is being deleted: out of every chat, as if they had left each one.

        Ownership passes on, a chat they were the last member of is deleted, and the others get the
        usual system message and `chat.member.removed` event.
        """
        for chat_id in await self.member_store.chat_ids_of(tx, user_id):
            membership = await self.access.access_chat(tx, user_id, chat_id)
            await self._remove_member(tx, membership, user_id, user_id, now)

    # -- members -------------------------------------------------------------------------

    async def members(self, who_id: str, chat_id: str, after: str | None, limit: int) -> MemberPage:
        membership = await self.access.access_chat(self.db, who_id, chat_id)
        count = await self.member_store.count(self.db, chat_id)
        if not membership.sees_members:  # a channel's subscriber: their own membership, and the count
            mine = await self.member_store.listed(self.db, chat_id, who_id) if after is None or after < who_id else None
            return MemberPage([_member(mine, who_id, True)] if mine else [], None, count)
        rows = await self.member_store.list(self.db, chat_id, after, limit + 1)
        reads = membership.chat.type != "channel"  # in a channel, only one's own read position
        items = [_member(r, who_id, reads) for r in rows[:limit]]
        return MemberPage(items, items[-1].user_id if len(rows) > limit else None, count)

    async def add_members(self, who_id: str, chat_id: str, user_ids: list[str]) -> list[str]:
        """Add users; return the ones that were not members yet."""
        targets = sorted(set(user_ids))
        if not targets or any(not is_uuid(u) for u in targets):
            raise DomainError(Code.VALIDATION_FAILED, "user_ids are user ids.", field="user_ids")
        found = await self.users.existing(self.db, targets)
        if missing := [u for u in targets if u not in found]:
            raise DomainError(Code.NOT_FOUND, "Some users do not exist.", missing_user_ids=missing)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            if membership.chat.type == "direct":
                raise DomainError(Code.FORBIDDEN, "A direct chat has exactly two members.")
            membership.require(Permission.ADD_MEMBERS, "add members")
            for target in targets:
                await self.access.check_not_blocked(tx, who_id, target)
            member_role = await self.role_store.by_kind(tx, chat_id, "member")
            added = [
                t
                for t in targets
                if await self.member_store.add(tx, chat_id, t, member_role["id"], now, membership.chat.last_seq)
            ]
            if added:
                notice = {"action": "members_added", "user_ids": added}
                chat_type = membership.chat.type
                if chat_type != "channel":  # the system message moves last_seq: the event's chat shows it
                    await self.timeline.system(tx, chat_id, who_id, notice, now)
                chat = chat_from_row(await self.chats.get(tx, chat_id))
                await self.timeline.membership_changed(
                    tx, chat_type, chat_id, added, "chat.member.added", {"chat": chat, "user_ids": added}, now
                )
        return added

    async def remove_member(self, who_id: str, chat_id: str, user_id: str) -> None:
        if user_id == who_id:
            await self.leave(who_id, chat_id)
            return
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            target = await self._find_member(tx, chat_id, user_id)
            if membership.chat.type == "direct":
                raise DomainError(Code.FORBIDDEN, "A direct chat has exactly two members.")
            membership.require(Permission.REMOVE_MEMBERS, "remove members")
            if RANK[target.kind] >= membership.rank and membership.member.kind != "owner":
                raise DomainError(Code.FORBIDDEN, "You cannot remove someone whose role is not below yours.")
            await self._remove_member(tx, membership, who_id, user_id, now)

    async def set_member_role(self, who_id: str, chat_id: str, user_id: str, role_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            membership.require(Permission.MANAGE_ROLES, "manage roles")
            target = await self._find_member(tx, chat_id, user_id)
            role = await self._find_role(tx, chat_id, role_id)
            if role["kind"] == "owner" or target.kind == "owner":
                raise DomainError(Code.FORBIDDEN, "Ownership is not handed out by changing roles.")
            if membership.member.kind != "owner" and (
                RANK[role["kind"]] >= membership.rank or RANK[target.kind] >= membership.rank
            ):
                raise DomainError(Code.FORBIDDEN, "You can only manage roles below your own.")
            await self.member_store.set_role(tx, chat_id, user_id, role_id)
            await self.timeline.membership_changed(
                tx,
                membership.chat.type,
                chat_id,
                [user_id],
                "chat.member.updated",
                {"chat_id": chat_id, "user_id": user_id, "role_id": role_id},
                now,
            )

    async def _find_member(self, tx: Transaction, chat_id: str, user_id: str) -> MemberRow:
        """A member of the chat, to act on; NOT_FOUND if the user is not one."""
        target = await self.member_store.get(tx, chat_id, user_id) if is_uuid(user_id) else None
        if target is None:
            raise DomainError(Code.NOT_FOUND, "That user is not a member of this chat.")
        return target

    async def _find_role(self, tx: Transaction, chat_id: str, role_id: str) -> Row:
        """A role of the chat, to act on; NOT_FOUND if it has none of that id."""
        role = await self.role_store.get(tx, chat_id, role_id) if is_uuid(role_id) else None
        if role is None:
            raise DomainError(Code.NOT_FOUND, "No such role in this chat.")
        return role

    # -- roles ---------------------------------------------------------------------------

    async def roles(self, who_id: str, chat_id: str) -> list[Role]:
        await self.access.access_chat(self.db, who_id, chat_id)
        return [_role(r) for r in await self.role_store.for_chat(self.db, chat_id)]

    async def create_role(self, who_id: str, chat_id: str, name: str, permissions: list[str]) -> Role:
        name = check_text(name, "name", ROLE_NAME_MAX)
        if not name:
            raise DomainError(Code.VALIDATION_FAILED, "A role needs a name.", field="name")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            membership.require(Permission.MANAGE_ROLES, "manage roles")
            role_id = uuid7(now)
            await self.role_store.insert(
                tx,
                id=role_id,
                chat_id=chat_id,
                kind="custom",
                name=name,
                permissions=int(from_names(permissions)),
                now=now,
            )
            role = _role(await self.role_store.get(tx, chat_id, role_id))
            await self.timeline.to_chat(tx, chat_id, "chat.role.updated", {"chat_id": chat_id, "role": role}, now)
        return role

    async def update_role(
        self, who_id: str, chat_id: str, role_id: str, name: str | None, permissions: list[str] | None
    ) -> Role:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            membership.require(Permission.MANAGE_ROLES, "manage roles")
            row = await self._find_role(tx, chat_id, role_id)
            if row["kind"] == "owner":
                raise DomainError(Code.FORBIDDEN, "The owner role always holds every permission.")
            if row["kind"] == "admin" and membership.member.kind != "owner":
                raise DomainError(Code.FORBIDDEN, "Only the owner changes the admin role.")
            new_name = check_text(name, "name", ROLE_NAME_MAX) if name is not None else row["name"]
            if not new_name:
                raise DomainError(Code.VALIDATION_FAILED, "A role needs a name.", field="name")
            flags = int(from_names(permissions)) if permissions is not None else row["permissions"]
            await self.role_store.update(tx, role_id, new_name, flags)
            role = _role(await self.role_store.get(tx, chat_id, role_id))
            await self.timeline.to_chat(tx, chat_id, "chat.role.updated", {"chat_id": chat_id, "role": role}, now)
        return role


def check_visibility(chat_type: str, encrypted: bool, visibility: str) -> None:
    """Public chats are channels and unencrypted groups: anyone may join one and read along."""
    if visibility not in VISIBILITIES:
        raise DomainError(Code.VALIDATION_FAILED, "visibility is private or public.", field="visibility")
    if visibility == "public" and (chat_type == "direct" or encrypted):
        raise DomainError(
            Code.VALIDATION_FAILED,
            "Only channels and unencrypted groups can be public: anyone could join an end-to-end encrypted"
            " group and read it. Share an invite link instead.",
            field="visibility",
        )
