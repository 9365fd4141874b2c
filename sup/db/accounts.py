"""SQL for accounts: users, devices, refresh-token sessions, recovery codes, invites."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sup.db.database import Queryable, Row, changed_one, fetch_in, insert_row, keyset_page, update_row

_USER_COLUMNS = (
    "id, username, display_name, bio, avatar_media_id, password_hash, is_admin, "
    "totp_secret, totp_enabled_at, totp_last_step, created_at, updated_at, last_seen_at, deactivated_at, deleted_at"
)
# What LIKE would read as a wildcard in a search term, escaped with a backslash.
_DEVICES = "SELECT id, user_id, name, created_at, last_seen_at FROM user_devices"
_INVITES = (
    "SELECT i.code_hash, i.created_by, u.username AS created_by_username, i.created_at, i.expires_at,"
    " i.max_uses, i.uses FROM invites i LEFT JOIN users u ON u.id = i.created_by"
)
# A user's contacts and blocks, each with the listed user's profile, paged by the listed user's id.
_CONTACTS = (
    "SELECT c.contact_id, c.created_at, u.username, u.display_name, u.bio, u.avatar_media_id,"
    " u.created_at AS user_created_at FROM contacts c JOIN users u ON u.id = c.contact_id"
    " WHERE c.user_id = $1"
)
_BLOCKS = (
    "SELECT b.blocked_id, b.created_at, u.username FROM blocked_users b"
    " JOIN users u ON u.id = b.blocked_id WHERE b.user_id = $1"
)
_LIKE_SPECIAL = str.maketrans({"\\": "\\\\", "%": "\\%", "_": "\\_"})
_STATUS_WHERE = {
    "active": "deactivated_at IS NULL AND deleted_at IS NULL",
    "deactivated": "deactivated_at IS NOT NULL AND deleted_at IS NULL",
    "deleted": "deleted_at IS NOT NULL",
}


async def hold_user_row(tx: Queryable, user_id: str) -> None:
    """Hold the user's row until commit (a write that changes nothing but takes the row's lock):
    what must happen one at a time per user waits here for the transaction before it."""
    await tx.execute("UPDATE users SET updated_at = updated_at WHERE id = $1", user_id)


class UserStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        id: str,
        username: str,
        password_hash: str,
        display_name: str,
        is_admin: bool,
        now: int,
    ) -> bool:
        """Insert a user; False when the username is taken. `username` is already in its key form."""
        user = {
            "id": id,
            "username": username,
            "username_key": username,
            "display_name": display_name,
            "password_hash": password_hash,
            "is_admin": is_admin,
            "created_at": now,
            "updated_at": now,
        }
        return await insert_row(tx, "users", user, "ON CONFLICT (username_key) DO NOTHING")

    async def get(self, db: Queryable, user_id: str) -> Row | None:
        return await db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)

    async def get_by_username(self, db: Queryable, key: str) -> Row | None:
        """The user whose username_key is `key` (the domain's username_key(), already applied)."""
        return await db.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE username_key = $1", key)

    async def get_many(self, db: Queryable, user_ids: list[str]) -> list[Row]:
        return await fetch_in(db, f"SELECT {_USER_COLUMNS} FROM users WHERE id IN ($ids)", user_ids)

    async def existing(self, db: Queryable, user_ids: list[str]) -> set[str]:
        """Which of these ids are accounts that were not deleted."""
        return {row["id"] for row in await self.get_many(db, user_ids) if row["deleted_at"] is None}

    async def update_profile(self, tx: Queryable, user_id: str, changes: dict[str, Any], now: int) -> None:
        allowed = {"display_name", "bio", "avatar_media_id"}
        assert set(changes) <= allowed, changes
        if not changes:
            return
        await update_row(tx, "users", user_id, changes, now)

    async def set_password_hash(self, tx: Queryable, user_id: str, password_hash: str, now: int) -> None:
        await tx.execute(
            "UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1", user_id, password_hash, now
        )

    async def set_totp(
        self, tx: Queryable, user_id: str, *, secret: bytes | None, enabled_at: int | None, now: int
    ) -> None:
        await tx.execute(
            "UPDATE users SET totp_secret = $2, totp_enabled_at = $3, totp_last_step = 0,"
            " updated_at = $4 WHERE id = $1",
            user_id,
            secret,
            enabled_at,
            now,
        )

    async def presence(self, db: Queryable, user_id: str) -> Row | None:
        return await db.fetchrow("SELECT presence_visibility, last_seen_at FROM users WHERE id = $1", user_id)

    async def set_presence_visibility(self, tx: Queryable, user_id: str, visibility: str) -> None:
        await tx.execute("UPDATE users SET presence_visibility = $2 WHERE id = $1", user_id, visibility)

    async def set_last_seen(self, tx: Queryable, user_id: str, now: int) -> None:
        await tx.execute("UPDATE users SET last_seen_at = $2 WHERE id = $1", user_id, now)

    async def enable_totp(self, tx: Queryable, user_id: str, now: int) -> None:
        await tx.execute("UPDATE users SET totp_enabled_at = $2, updated_at = $2 WHERE id = $1", user_id, now)

    async def lock_active(self, tx: Queryable, user_id: str) -> bool:
        """Hold the user's row until commit, if the account is not deactivated; False if it is.

        A login that checked the password while an admin deactivated the account waits here
        for that transaction, then sees the account deactivated and opens no device.
        """
        return await changed_one(
            tx, "UPDATE users SET updated_at = updated_at WHERE id = $1 AND deactivated_at IS NULL", user_id
        )

    async def lock(self, tx: Queryable, user_id: str) -> Row | None:
        """The user's row, held until commit (one administrative change at a time per user)."""
        await hold_user_row(tx, user_id)
        return await self.get(tx, user_id)

    async def set_deactivated(self, tx: Queryable, user_id: str, deactivated_at: int | None, now: int) -> None:
        await tx.execute(
            "UPDATE users SET deactivated_at = $2, updated_at = $3 WHERE id = $1", user_id, deactivated_at, now
        )

    async def set_admin(self, tx: Queryable, user_id: str, is_admin: bool, now: int) -> None:
        await tx.execute("UPDATE users SET is_admin = $2, updated_at = $3 WHERE id = $1", user_id, is_admin, now)

    async def erase(self, tx: Queryable, user_id: str, username: str, display_name: str, now: int) -> None:
        """Empty a deleted account's row: a name no one can register, no password, no profile, no 2FA."""
        await tx.execute(
            "UPDATE users SET username = $2, username_key = $2, display_name = $3, bio = '', avatar_media_id = NULL,"
            " password_hash = '!', is_admin = $4, totp_secret = NULL, totp_enabled_at = NULL,"
            " presence_visibility = 'nobody', last_seen_at = NULL, deactivated_at = COALESCE(deactivated_at, $5),"
            " deleted_at = $5, updated_at = $5 WHERE id = $1",
            user_id,
            username,
            display_name,
            False,
            now,
        )

    async def admin_page(
        self, db: Queryable, *, search: str | None, status: str | None, after: str | None, limit: int
    ) -> list[Row]:
        """Users by id (creation order), optionally those whose username or display name contains `search`."""
        where, args = [], []
        if search:
            args.append("%" + search.lower().translate(_LIKE_SPECIAL) + "%")
            n = len(args)
            where.append(f"(username_key LIKE ${n} ESCAPE '\\' OR lower(display_name) LIKE ${n} ESCAPE '\\')")
        if status:
            where.append(_STATUS_WHERE[status])
        if after:
            args.append(after)
            where.append(f"id > ${len(args)}")
        args.append(limit)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        return list(
            await db.fetch(f"SELECT {_USER_COLUMNS} FROM users{condition} ORDER BY id LIMIT ${len(args)}", *args)
        )

    async def claim_totp_step(self, tx: Queryable, user_id: str, step: int) -> bool:
        """Record a TOTP time step as used; False if it (or a later one) was used already."""
        return await changed_one(
            tx, "UPDATE users SET totp_last_step = $2 WHERE id = $1 AND totp_last_step < $2", user_id, step
        )


class DeviceStore:
    async def insert(self, tx: Queryable, *, id: str, user_id: str, name: str, now: int) -> None:
        device = {"id": id, "user_id": user_id, "name": name, "created_at": now, "last_seen_at": now}
        await insert_row(tx, "user_devices", device)

    async def get_active(self, db: Queryable, device_id: str) -> Row | None:
        return await db.fetchrow(f"{_DEVICES} WHERE id = $1 AND revoked_at IS NULL", device_id)

    async def list_active(self, db: Queryable, user_id: str) -> list[Row]:
        return list(
            await db.fetch(f"{_DEVICES} WHERE user_id = $1 AND revoked_at IS NULL ORDER BY created_at, id", user_id)
        )

    async def active_ids_of(self, db: Queryable, user_ids: Sequence[str]) -> list[str]:
        rows = await fetch_in(
            db, "SELECT id FROM user_devices WHERE user_id IN ($ids) AND revoked_at IS NULL", user_ids
        )
        return [r["id"] for r in rows]

    async def active_among(self, db: Queryable, device_ids: Sequence[str]) -> set[str]:
        """Which of these devices are still active (not revoked, not logged out)."""
        rows = await fetch_in(db, "SELECT id FROM user_devices WHERE id IN ($ids) AND revoked_at IS NULL", device_ids)
        return {r["id"] for r in rows}

    async def known_ids(self, db: Queryable, device_ids: Sequence[str]) -> list[str]:
        """Which of these ids are devices at all (active or revoked)."""
        return [r["id"] for r in await fetch_in(db, "SELECT id FROM user_devices WHERE id IN ($ids)", device_ids)]

    async def rename(self, tx: Queryable, user_id: str, device_id: str, name: str) -> bool:
        return await changed_one(
            tx,
            "UPDATE user_devices SET name = $3 WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL",
            user_id,
            device_id,
            name,
        )

    async def touch(self, tx: Queryable, device_id: str, now: int) -> None:
        await tx.execute("UPDATE user_devices SET last_seen_at = $2 WHERE id = $1", device_id, now)

    async def revoke(self, tx: Queryable, device_id: str, now: int) -> bool:
        """Revoke one device and drop its refresh tokens and push subscription; False if it was not active."""
        await tx.execute("DELETE FROM sessions WHERE device_id = $1", device_id)
        await tx.execute("DELETE FROM push_subscriptions WHERE device_id = $1", device_id)
        return await changed_one(
            tx, "UPDATE user_devices SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL", device_id, now
        )

    async def revoke_all_except(self, tx: Queryable, user_id: str, keep_device_id: str | None, now: int) -> list[str]:
        """Revoke every active device of the user but one; return the ones revoked."""
        for table in ("sessions", "push_subscriptions"):
            await tx.execute(
                f"DELETE FROM {table} WHERE device_id IN (SELECT id FROM user_devices"
                " WHERE user_id = $1 AND id IS DISTINCT FROM $2)",
                user_id,
                keep_device_id,
            )
        rows = await tx.fetch(
            "UPDATE user_devices SET revoked_at = $3 WHERE user_id = $1 AND revoked_at IS NULL"
            " AND id IS DISTINCT FROM $2 RETURNING id",
            user_id,
            keep_device_id,
            now,
        )
        return [r["id"] for r in rows]


class LoginAddressStore:
    """Addresses (as keyed hashes) each user has logged in from, and when."""

    async def remember(self, tx: Queryable, user_id: str, address_hash: bytes, now: int, forget_before: int) -> None:
        await tx.execute(
            "INSERT INTO login_addresses (user_id, address_hash, last_login_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, address_hash) DO UPDATE SET last_login_at = excluded.last_login_at",
            user_id,
            address_hash,
            now,
        )
        await tx.execute(
            "DELETE FROM login_addresses WHERE user_id = $1 AND last_login_at < $2", user_id, forget_before
        )

    async def known(self, db: Queryable, user_id: str, address_hash: bytes, since: int) -> bool:
        row = await db.fetchrow(
            "SELECT 1 AS known FROM login_addresses WHERE user_id = $1 AND address_hash = $2 AND last_login_at >= $3",
            user_id,
            address_hash,
            since,
        )
        return row is not None


class SessionStore:
    """Refresh tokens, stored as SHA-256 hashes; one chain of rotations per device."""

    async def insert(self, tx: Queryable, *, token_hash: bytes, device_id: str, now: int, expires_at: int) -> None:
        session = {"token_hash": token_hash, "device_id": device_id, "created_at": now, "expires_at": expires_at}
        await insert_row(tx, "sessions", session)

    async def consume(self, tx: Queryable, token_hash: bytes, now: int) -> Row | None:
        """Mark an unused, unexpired token used and return its device; None otherwise.

        A single conditional UPDATE, so two concurrent refreshes cannot both win.
        """
        return await tx.fetchrow(
            "UPDATE sessions SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL"
            " AND expires_at > $2 RETURNING device_id",
            token_hash,
            now,
        )

    async def get(self, db: Queryable, token_hash: bytes) -> Row | None:
        return await db.fetchrow(
            "SELECT device_id, used_at, expires_at FROM sessions WHERE token_hash = $1", token_hash
        )

    async def prune_expired(self, tx: Queryable, device_id: str, now: int) -> None:
        # Used tokens stay until they expire, only so that their reuse is recognised.
        await tx.execute("DELETE FROM sessions WHERE device_id = $1 AND expires_at <= $2", device_id, now)


class RecoveryCodeStore:
    async def replace(self, tx: Queryable, user_id: str, code_hashes: list[bytes]) -> None:
        await tx.execute("DELETE FROM recovery_codes WHERE user_id = $1", user_id)
        for code_hash in code_hashes:
            await tx.execute("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)", user_id, code_hash)

    async def consume(self, tx: Queryable, user_id: str, code_hash: bytes, now: int) -> bool:
        return await changed_one(
            tx,
            "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
            user_id,
            code_hash,
            now,
        )

    async def remaining(self, db: Queryable, user_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL", user_id)


class InviteStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        code_hash: bytes,
        created_by: str | None,
        now: int,
        expires_at: int | None,
        max_uses: int,
    ) -> None:
        invite = {
            "code_hash": code_hash,
            "created_by": created_by,
            "created_at": now,
            "expires_at": expires_at,
            "max_uses": max_uses,
        }
        await insert_row(tx, "invites", invite)

    async def page(self, db: Queryable, before: tuple[int, bytes] | None, limit: int) -> list[Row]:
        """Invites, newest first; the cursor is (created_at, code_hash) of the last one seen."""
        order = " ORDER BY i.created_at DESC, i.code_hash DESC LIMIT $1"
        if before is None:
            return list(await db.fetch(_INVITES + order, limit))
        return list(
            await db.fetch(
                _INVITES + " WHERE i.created_at < $2 OR (i.created_at = $2 AND i.code_hash < $3)" + order,
                limit,
                *before,
            )
        )

    async def get(self, db: Queryable, code_hash: bytes) -> Row | None:
        return await db.fetchrow(f"{_INVITES} WHERE i.code_hash = $1", code_hash)

    async def delete(self, tx: Queryable, code_hash: bytes) -> bool:
        return await changed_one(tx, "DELETE FROM invites WHERE code_hash = $1", code_hash)

    async def claim(self, tx: Queryable, code_hash: bytes, now: int) -> bool:
        """Use one of the invite's uses; False if unknown, expired or used up."""
        return await changed_one(
            tx,
            "UPDATE invites SET uses = uses + 1 WHERE code_hash = $1 AND uses < max_uses"
            " AND (expires_at IS NULL OR expires_at > $2)",
            code_hash,
            now,
        )


class ContactStore:
    async def add(self, tx: Queryable, user_id: str, contact_id: str, now: int) -> int:
        """Add a contact (again is harmless); return when it was first added."""
        contact = {"user_id": user_id, "contact_id": contact_id, "created_at": now}
        await insert_row(tx, "contacts", contact, "ON CONFLICT (user_id, contact_id) DO NOTHING")
        return await tx.fetchval(
            "SELECT created_at FROM contacts WHERE user_id = $1 AND contact_id = $2", user_id, contact_id
        )

    async def ids(self, db: Queryable, user_id: str) -> set[str]:
        return {r["contact_id"] for r in await db.fetch("SELECT contact_id FROM contacts WHERE user_id = $1", user_id)}

    async def remove(self, tx: Queryable, user_id: str, contact_id: str) -> bool:
        return await changed_one(tx, "DELETE FROM contacts WHERE user_id = $1 AND contact_id = $2", user_id, contact_id)

    async def page(self, db: Queryable, user_id: str, after: str | None, limit: int) -> list[Row]:
        return await keyset_page(db, _CONTACTS, "c.contact_id", user_id, after, limit)


class BlockStore:
    async def add(self, tx: Queryable, user_id: str, blocked_id: str, now: int) -> None:
        block = {"user_id": user_id, "blocked_id": blocked_id, "created_at": now}
        await insert_row(tx, "blocked_users", block, "ON CONFLICT (user_id, blocked_id) DO NOTHING")

    async def remove(self, tx: Queryable, user_id: str, blocked_id: str) -> bool:
        return await changed_one(
            tx, "DELETE FROM blocked_users WHERE user_id = $1 AND blocked_id = $2", user_id, blocked_id
        )

    async def page(self, db: Queryable, user_id: str, after: str | None, limit: int) -> list[Row]:
        return await keyset_page(db, _BLOCKS, "b.blocked_id", user_id, after, limit)

    async def is_blocked(self, db: Queryable, blocker_id: str, blocked_id: str) -> bool:
        return bool(
            await db.fetchval(
                "SELECT 1 FROM blocked_users WHERE user_id = $1 AND blocked_id = $2", blocker_id, blocked_id
            )
        )
