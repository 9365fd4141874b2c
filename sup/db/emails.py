"""SQL for email: each user's verified address, and the single-use tokens mailed to verify or reset."""

from __future__ import annotations

from sup.db.database import Queryable, Row, changed_one, insert_row


class EmailStore:
    async def address_of(self, db: Queryable, user_id: str) -> Row | None:
        return await db.fetchrow(
            "SELECT address, address_key, verified_at FROM user_emails WHERE user_id = $1", user_id
        )

    async def owner_of(self, db: Queryable, address_key: str) -> str | None:
        """The user whose verified address this is."""
        return await db.fetchval("SELECT user_id FROM user_emails WHERE address_key = $1", address_key)

    async def set_verified(self, tx: Queryable, user_id: str, address: str, address_key: str, now: int) -> None:
        await tx.execute(
            "INSERT INTO user_emails (user_id, address, address_key, verified_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id) DO UPDATE SET address = excluded.address,"
            " address_key = excluded.address_key, verified_at = excluded.verified_at",
            user_id,
            address,
            address_key,
            now,
        )

    async def remove(self, tx: Queryable, user_id: str) -> bool:
        return await changed_one(tx, "DELETE FROM user_emails WHERE user_id = $1", user_id)

    async def insert_token(
        self, tx: Queryable, *, token_hash: bytes, user_id: str, purpose: str, address: str, now: int, expires_at: int
    ) -> None:
        token = {
            "token_hash": token_hash,
            "user_id": user_id,
            "purpose": purpose,
            "address": address,
            "created_at": now,
            "expires_at": expires_at,
        }
        await insert_row(tx, "email_tokens", token)

    async def drop_unused(self, tx: Queryable, user_id: str, purpose: str) -> None:
        """Forget the user's tokens of this purpose not used yet: only the newest one works."""
        await tx.execute(
            "DELETE FROM email_tokens WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL", user_id, purpose
        )

    async def prune(self, tx: Queryable, user_id: str, now: int) -> None:
        await tx.execute("DELETE FROM email_tokens WHERE user_id = $1 AND expires_at <= $2", user_id, now)

    async def consume(
        self, tx: Queryable, token_hash: bytes, purpose: str, now: int, user_id: str | None
    ) -> Row | None:
        """Mark an unused, unexpired token used (of `user_id`, when given) and return it; None otherwise.

        One conditional UPDATE, so two uses at once cannot both succeed.
        """
        return await tx.fetchrow(
            "UPDATE email_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL"
            " AND expires_at > $3 AND user_id = COALESCE($4, user_id) RETURNING user_id, address",
            token_hash,
            purpose,
            now,
            user_id,
        )

    async def pending(self, db: Queryable, user_id: str, now: int) -> str | None:
        """The address waiting for verification, if a token for it is still good."""
        return await db.fetchval(
            "SELECT address FROM email_tokens WHERE user_id = $1 AND purpose = 'verify' AND used_at IS NULL"
            " AND expires_at > $2 ORDER BY created_at DESC LIMIT 1",
            user_id,
            now,
        )
