"""SQL for joining chats: invite links and the join requests that wait for an admin."""

from __future__ import annotations

import msgspec

from sup.db.database import Queryable, Row, changed_one, insert_row, keyset_page

_INVITE_COLUMNS = (
    "id, chat_id, code, name, created_by, requires_approval, expires_at, max_uses, uses, revoked_at, created_at"
)
# A join request as the list of waiting ones shows it.
_REQUESTS = (
    "SELECT r.chat_id, r.user_id, r.invite_id, r.created_at, u.username, u.display_name"
    " FROM chat_join_requests r JOIN users u ON u.id = r.user_id WHERE r.chat_id = $1"
)
INVITE_USERS = 256  # sup.domain.permissions.Permission.INVITE_USERS (this layer does not import the domain)


class InviteRow(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    chat_id: str
    code: str
    name: str
    created_by: str | None
    requires_approval: bool
    expires_at: int | None
    max_uses: int | None
    uses: int
    revoked_at: int | None
    created_at: int


def _invite(row: Row | None) -> InviteRow | None:
    if row is None:
        return None
    return InviteRow(**{**dict(row), "requires_approval": bool(row["requires_approval"])})


class ChatInviteStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        id: str,
        chat_id: str,
        code: str,
        name: str,
        created_by: str,
        requires_approval: bool,
        expires_at: int | None,
        max_uses: int | None,
        now: int,
    ) -> None:
        await tx.execute(
            f"INSERT INTO chat_invites ({_INVITE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, NULL, $9)",
            id,
            chat_id,
            code,
            name,
            created_by,
            requires_approval,
            expires_at,
            max_uses,
            now,
        )

    async def get(self, db: Queryable, chat_id: str, invite_id: str) -> InviteRow | None:
        return _invite(
            await db.fetchrow(
                f"SELECT {_INVITE_COLUMNS} FROM chat_invites WHERE chat_id = $1 AND id = $2", chat_id, invite_id
            )
        )

    async def by_code(self, db: Queryable, code: str) -> InviteRow | None:
        return _invite(await db.fetchrow(f"SELECT {_INVITE_COLUMNS} FROM chat_invites WHERE code = $1", code))

    async def page(self, db: Queryable, chat_id: str, after: str | None, limit: int) -> list[InviteRow]:
        """A chat's links, newest first; `after` is the id of the last one of the previous page."""
        rows = await keyset_page(
            db,
            f"SELECT {_INVITE_COLUMNS} FROM chat_invites WHERE chat_id = $1",
            "id",
            chat_id,
            after,
            limit,
            descending=True,
        )
        return [invite for invite in map(_invite, rows) if invite is not None]

    async def revoke(self, tx: Queryable, invite_id: str, now: int) -> None:
        await tx.execute("UPDATE chat_invites SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", invite_id, now)

    async def use(self, tx: Queryable, invite_id: str, now: int) -> bool:
        """Count one join through a link, if it still takes one (one statement: concurrent joins
        cannot go past its use limit)."""
        return await changed_one(
            tx,
            "UPDATE chat_invites SET uses = uses + 1 WHERE id = $1 AND revoked_at IS NULL"
            " AND (expires_at IS NULL OR expires_at > $2) AND (max_uses IS NULL OR uses < max_uses)",
            invite_id,
            now,
        )

    async def count_approved(self, tx: Queryable, invite_id: str) -> None:
        """A request made through a link was approved: one more join through it, whatever its state now."""
        await tx.execute("UPDATE chat_invites SET uses = uses + 1 WHERE id = $1", invite_id)


class JoinRequestStore:
    async def add(self, tx: Queryable, chat_id: str, user_id: str, invite_id: str | None, now: int) -> bool:
        request = {"chat_id": chat_id, "user_id": user_id, "invite_id": invite_id, "created_at": now}
        return await insert_row(tx, "chat_join_requests", request, "ON CONFLICT (chat_id, user_id) DO NOTHING")

    async def get(self, db: Queryable, chat_id: str, user_id: str) -> Row | None:
        return await db.fetchrow(f"{_REQUESTS} AND r.user_id = $2", chat_id, user_id)

    async def remove(self, tx: Queryable, chat_id: str, user_id: str) -> bool:
        return await changed_one(
            tx, "DELETE FROM chat_join_requests WHERE chat_id = $1 AND user_id = $2", chat_id, user_id
        )

    async def page(self, db: Queryable, chat_id: str, after: str | None, limit: int) -> list[Row]:
        """Waiting requests, oldest first (by user id within the same millisecond)."""
        cursor = None
        if after is not None:
            created_at, _, user_id = after.partition("_")
            cursor = (int(created_at), user_id)
        return await keyset_page(db, _REQUESTS, ("r.created_at", "r.user_id"), chat_id, cursor, limit)

    async def managers(self, db: Queryable, chat_id: str) -> list[str]:
        """Members who may invite and approve: the owner, and roles with invite_users."""
        rows = await db.fetch(
            "SELECT m.user_id FROM chat_members m JOIN chat_roles r ON r.id = m.role_id"
            " WHERE m.chat_id = $1 AND (r.kind = 'owner' OR (r.permissions & $2) <> 0)",
            chat_id,
            INVITE_USERS,
        )
        return [row["user_id"] for row in rows]

    async def blocked_by_managers(self, db: Queryable, chat_id: str, user_id: str, link_creator: str | None) -> bool:
        """Whether the chat's owner or an admin, or whoever made the link, blocks the user."""
        return bool(
            await db.fetchval(
                "SELECT 1 FROM blocked_users b WHERE b.blocked_id = $2 AND (b.user_id = $3 OR EXISTS ("
                "SELECT 1 FROM chat_members a JOIN chat_roles r ON r.id = a.role_id"
                " WHERE a.chat_id = $1 AND a.user_id = b.user_id AND r.kind IN ('owner', 'admin'))) LIMIT 1",
                chat_id,
                user_id,
                link_creator,
            )
        )
