"""SQL for chats, their roles and their members; chats and memberships come back as typed rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from sup.db.database import Queryable, Row, changed_one, fetch_in, from_row, insert_row, keyset_page, update_row

_CHAT_COLUMNS = (
    "c.id, c.type, c.title, c.description, c.avatar_media_id, c.encrypted, c.created_by, c.last_seq,"
    " c.last_message_at, c.created_at, c.updated_at, c.visibility"
)
CHAT_COLUMNS = _CHAT_COLUMNS  # for other stores that read chats (search)
# When a chat was last active: its last message, or its creation.
_ACTIVITY = "COALESCE(c.last_message_at, c.created_at)"
_ROLES = "SELECT id, chat_id, kind, name, permissions, created_at FROM chat_roles"
_MEMBER_COLUMNS = "m.user_id, m.role_id, m.joined_at, m.last_read_seq, r.kind, r.permissions, r.name AS role_name"
# A member as the member list shows them.
_LISTED = (
    "SELECT m.user_id, m.role_id, m.joined_at, m.last_read_seq, r.kind, r.name AS role_name, r.permissions,"
    " u.username, u.display_name FROM chat_members m JOIN chat_roles r ON r.id = m.role_id"
    " JOIN users u ON u.id = m.user_id WHERE m.chat_id = $1"
)


class ChatRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str  # direct, group or channel
    title: str
    description: str
    avatar_media_id: str | None
    encrypted: bool
    created_by: str | None
    last_seq: int
    last_message_at: int | None
    created_at: int
    updated_at: int
    visibility: str = "private"  # or public: found by search, joined by anyone


class MemberRow(msgspec.Struct, frozen=True, kw_only=True):
    """A membership with its role."""

    user_id: str
    role_id: str
    joined_at: int
    last_read_seq: int
    kind: str  # the role's kind: owner, admin, member or custom
    permissions: int
    role_name: str


class Audience(msgspec.Struct, frozen=True):
    """Who a chat's messages reach: every member, and each active device with whether it published keys."""

    member_ids: list[str]
    devices: list[tuple[str, str, bool]]  # (device id, user id, has published E2E keys)

    @property
    def device_ids(self) -> list[str]:
        return [device_id for device_id, _, _ in self.devices]

    def keyed(self) -> dict[str, str]:
        """device id -> user id, for the devices an encrypted message must name."""
        return {device_id: user_id for device_id, user_id, keyed in self.devices if keyed}


def chat_row(row: Row) -> ChatRow:
    return from_row(ChatRow, row, encrypted=bool(row["encrypted"]))


def member_row(row: Row) -> MemberRow:
    return from_row(MemberRow, row)


def _chat_or_none(row: Row | None) -> ChatRow | None:
    return None if row is None else chat_row(row)


class ChatStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        id: str,
        type: str,
        title: str,
        description: str,
        encrypted: bool,
        direct_key: str | None,
        created_by: str,
        now: int,
        visibility: str = "private",
    ) -> bool:
        """Insert a chat; False when a direct chat for this pair already exists."""
        return await changed_one(
            tx,
            "INSERT INTO chats (id, type, title, description, encrypted, direct_key, created_by, created_at,"
            " updated_at, visibility) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)"
            " ON CONFLICT (direct_key) DO NOTHING",
            id,
            type,
            title,
            description,
            encrypted,
            direct_key,
            created_by,
            now,
            visibility,
        )

    async def get(self, db: Queryable, chat_id: str) -> ChatRow | None:
        return _chat_or_none(await db.fetchrow(f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.id = $1", chat_id))

    async def get_direct(self, db: Queryable, direct_key: str) -> ChatRow | None:
        return _chat_or_none(
            await db.fetchrow(f"SELECT {_CHAT_COLUMNS} FROM chats c WHERE c.direct_key = $1", direct_key)
        )

    async def update(self, tx: Queryable, chat_id: str, changes: dict[str, Any], now: int) -> None:
        assert set(changes) <= {"title", "description", "avatar_media_id", "visibility"}, changes
        if not changes:
            return
        await update_row(tx, "chats", chat_id, changes, now)

    async def delete(self, tx: Queryable, chat_id: str) -> None:
        await tx.execute("DELETE FROM chats WHERE id = $1", chat_id)

    async def page_for_user(
        self, db: Queryable, user_id: str, before: tuple[int, str] | None, limit: int
    ) -> list[tuple[ChatRow, MemberRow, int]]:
        """My chats with my membership in each and its activity time, most recently active first.

        The cursor is (activity time, chat id).
        """
        rows = await keyset_page(
            db,
            f"SELECT {_CHAT_COLUMNS}, {_MEMBER_COLUMNS}, {_ACTIVITY} AS activity"
            " FROM chat_members m JOIN chats c ON c.id = m.chat_id JOIN chat_roles r ON r.id = m.role_id"
            " WHERE m.user_id = $1",
            (_ACTIVITY, "c.id"),
            user_id,
            before,
            limit,
            descending=True,
        )
        return [(chat_row(row), member_row(row), row["activity"]) for row in rows]


class RoleStore:
    async def insert(
        self, tx: Queryable, *, id: str, chat_id: str, kind: str, name: str, permissions: int, now: int
    ) -> None:
        role = {"id": id, "chat_id": chat_id, "kind": kind, "name": name, "permissions": permissions, "created_at": now}
        await insert_row(tx, "chat_roles", role)

    async def for_chat(self, db: Queryable, chat_id: str) -> list[Row]:
        return list(await db.fetch(f"{_ROLES} WHERE chat_id = $1 ORDER BY created_at, id", chat_id))

    async def get(self, db: Queryable, chat_id: str, role_id: str) -> Row | None:
        return await db.fetchrow(f"{_ROLES} WHERE chat_id = $1 AND id = $2", chat_id, role_id)

    async def by_kind(self, db: Queryable, chat_id: str, kind: str) -> Row:
        return await db.fetchrow(
            f"{_ROLES} WHERE chat_id = $1 AND kind = $2 ORDER BY created_at LIMIT 1", chat_id, kind
        )

    async def update(self, tx: Queryable, role_id: str, name: str, permissions: int) -> None:
        await tx.execute("UPDATE chat_roles SET name = $2, permissions = $3 WHERE id = $1", role_id, name, permissions)


class MemberStore:
    async def add(self, tx: Queryable, chat_id: str, user_id: str, role_id: str, now: int, read_seq: int = 0) -> bool:
        member = {
            "chat_id": chat_id,
            "user_id": user_id,
            "role_id": role_id,
            "joined_at": now,
            "last_read_seq": read_seq,
        }
        return await insert_row(tx, "chat_members", member, "ON CONFLICT (chat_id, user_id) DO NOTHING")

    async def remove(self, tx: Queryable, chat_id: str, user_id: str) -> bool:
        return await changed_one(tx, "DELETE FROM chat_members WHERE chat_id = $1 AND user_id = $2", chat_id, user_id)

    async def with_chat(
        self, db: Queryable, chat_id: str, user_id: str, client_id: str | None = None
    ) -> tuple[ChatRow, MemberRow, str | None] | None:
        """One query for the hot path: the chat, my membership in it, and (with a client_id) the id
        of my message already sent with it; None if I am not a member.

        The retry check rides along so that a send's idempotency costs no round trip of its own.
        """
        retry = "(SELECT x.id FROM messages x WHERE x.sender_id = $2 AND x.client_id = $3)" if client_id else "NULL"
        args = (chat_id, user_id, client_id) if client_id else (chat_id, user_id)
        row = await db.fetchrow(
            f"SELECT {_CHAT_COLUMNS}, {_MEMBER_COLUMNS}, {retry} AS retry_of FROM chat_members m"
            " JOIN chat_roles r ON r.id = m.role_id JOIN chats c ON c.id = m.chat_id"
            " WHERE m.chat_id = $1 AND m.user_id = $2",
            *args,
        )
        return None if row is None else (chat_row(row), member_row(row), row["retry_of"])

    async def blocked_between(self, db: Queryable, chat_id: str, user_id: str) -> bool:
        """Whether a block stands between the user and any other member, in either direction."""
        return bool(
            await db.fetchval(
                "SELECT 1 FROM chat_members o JOIN blocked_users b ON (b.user_id = o.user_id AND b.blocked_id = $2)"
                " OR (b.user_id = $2 AND b.blocked_id = o.user_id) WHERE o.chat_id = $1 AND o.user_id <> $2 LIMIT 1",
                chat_id,
                user_id,
            )
        )

    async def get(self, db: Queryable, chat_id: str, user_id: str) -> MemberRow | None:
        """The membership with its role's kind and permissions, or None."""
        row = await db.fetchrow(
            f"SELECT {_MEMBER_COLUMNS} FROM chat_members m JOIN chat_roles r ON r.id = m.role_id"
            " WHERE m.chat_id = $1 AND m.user_id = $2",
            chat_id,
            user_id,
        )
        return None if row is None else member_row(row)

    async def list(self, db: Queryable, chat_id: str, after: str | None, limit: int) -> list[Row]:
        return await keyset_page(db, _LISTED, "m.user_id", chat_id, after, limit)

    async def listed(self, db: Queryable, chat_id: str, user_id: str) -> Row | None:
        """One member as `list` shows them."""
        return await db.fetchrow(f"{_LISTED} AND m.user_id = $2", chat_id, user_id)

    async def count(self, db: Queryable, chat_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM chat_members WHERE chat_id = $1", chat_id)

    async def manager_devices(self, db: Queryable, chat_id: str, flags: int, also: Sequence[str] = ()) -> list[str]:
        """The active devices of the members whose role holds any of `flags` (the owner holds all),
        and of the members `also` names."""
        named = "".join(f", ${i + 3}" for i in range(len(also)))
        rows = await db.fetch(
            "SELECT d.id FROM chat_members m JOIN chat_roles r ON r.id = m.role_id"
            " JOIN user_devices d ON d.user_id = m.user_id AND d.revoked_at IS NULL WHERE m.chat_id = $1"
            f" AND (r.kind = 'owner' OR (r.permissions & $2) <> 0 OR m.user_id IN (NULL{named}))",
            chat_id,
            flags,
            *also,
        )
        return [r["id"] for r in rows]

    async def chat_ids_of(self, db: Queryable, user_id: str) -> list[str]:
        """Every chat the user is a member of."""
        rows = await db.fetch("SELECT chat_id FROM chat_members WHERE user_id = $1 ORDER BY chat_id", user_id)
        return [r["chat_id"] for r in rows]

    async def counts(self, db: Queryable, chat_ids: list[str]) -> dict[str, int]:
        """How many members each of these chats has (absent: none, or no such chat)."""
        rows = await fetch_in(
            db, "SELECT chat_id, COUNT(*) AS n FROM chat_members WHERE chat_id IN ($ids) GROUP BY chat_id", chat_ids
        )
        return {row["chat_id"]: row["n"] for row in rows}

    async def user_ids(self, db: Queryable, chat_id: str) -> list[str]:
        return [r["user_id"] for r in await db.fetch("SELECT user_id FROM chat_members WHERE chat_id = $1", chat_id)]

    async def devices(self, db: Queryable, chat_id: str) -> list[Row]:
        """Every active device of every member: who receives the chat's events."""
        return list(
            await db.fetch(
                "SELECT d.id, d.user_id FROM chat_members m JOIN user_devices d ON d.user_id = m.user_id"
                " WHERE m.chat_id = $1 AND d.revoked_at IS NULL",
                chat_id,
            )
        )

    async def audience(self, db: Queryable, chat_id: str) -> Audience:
        """Every member and every active device of theirs (one query: the send path's).

        Not a deactivated member: such an account has no device, and an encrypted message waits
        for no one who cannot log in.
        """
        # The chat's members first, whatever the planner believes: a generic plan made while `users`
        # had no statistics walked every user and probed the chat for each (Postgres: 42 % of its
        # time in the send path; docs/performance.md). MATERIALIZED keeps Postgres from folding the
        # CTE back into the join; SQLite reads it the same way.
        rows = await db.fetch(
            "WITH m AS MATERIALIZED (SELECT user_id FROM chat_members WHERE chat_id = $1)"
            " SELECT m.user_id, d.id, k.device_id IS NOT NULL AS keyed FROM m"
            " JOIN users u ON u.id = m.user_id AND u.deactivated_at IS NULL"
            " LEFT JOIN user_devices d ON d.user_id = m.user_id AND d.revoked_at IS NULL"
            " LEFT JOIN device_keys k ON k.device_id = d.id",
            chat_id,
        )
        members = sorted({row["user_id"] for row in rows})
        devices = [(row["id"], row["user_id"], bool(row["keyed"])) for row in rows if row["id"] is not None]
        return Audience(members, devices)

    async def set_role(self, tx: Queryable, chat_id: str, user_id: str, role_id: str) -> None:
        await tx.execute(
            "UPDATE chat_members SET role_id = $3 WHERE chat_id = $1 AND user_id = $2", chat_id, user_id, role_id
        )

    async def mark_read(self, tx: Queryable, chat_id: str, user_id: str, seq: int) -> bool:
        return await changed_one(
            tx,
            "UPDATE chat_members SET last_read_seq = $3 WHERE chat_id = $1 AND user_id = $2 AND last_read_seq < $3",
            chat_id,
            user_id,
            seq,
        )

    async def successor(self, db: Queryable, chat_id: str, leaving_user: str) -> Row | None:
        """Who inherits ownership: the longest-standing admin, else the longest-standing member."""
        return await db.fetchrow(
            "SELECT m.user_id FROM chat_members m JOIN chat_roles r ON r.id = m.role_id"
            " WHERE m.chat_id = $1 AND m.user_id <> $2"
            " ORDER BY CASE r.kind WHEN 'admin' THEN 0 ELSE 1 END, m.joined_at, m.user_id LIMIT 1",
            chat_id,
            leaving_user,
        )

    async def peers(self, db: Queryable, user_id: str) -> list[str]:
        """Everyone who shares a direct chat or a group with the user (for presence and key changes).

        Not a channel: its subscribers do not see each other, nor does its staff see them this way.
        """
        rows = await db.fetch(
            "SELECT DISTINCT o.user_id FROM chat_members m JOIN chats c ON c.id = m.chat_id AND c.type <> 'channel'"
            " JOIN chat_members o ON o.chat_id = m.chat_id WHERE m.user_id = $1 AND o.user_id <> $1",
            user_id,
        )
        return [r["user_id"] for r in rows]
