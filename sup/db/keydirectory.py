"""SQL for the E2E key directory: identity keys, prekeys and group sender keys."""

from __future__ import annotations

from collections.abc import Sequence

from sup.db.database import Queryable, Row, fetch_in, insert_row

# Handing out a one-time prekey deletes it in the same statement. On Postgres, SKIP LOCKED
# lets concurrent fetches (from any process) each take a different key instead of queueing
# on the same row and then finding it gone; SQLite has one writer, so a plain subselect is safe.
_TAKE_ONE_TIME = {
    "postgres": (
        "DELETE FROM one_time_prekeys WHERE device_id = $1 AND key_id = ("
        " SELECT key_id FROM one_time_prekeys WHERE device_id = $1 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED)"
        " RETURNING key_id, public_key"
    ),
    "sqlite": (
        "DELETE FROM one_time_prekeys WHERE device_id = $1 AND key_id = ("
        " SELECT key_id FROM one_time_prekeys WHERE device_id = $1 ORDER BY key_id LIMIT 1)"
        " RETURNING key_id, public_key"
    ),
}

_DEVICE_KEYS = (
    "SELECT k.device_id, k.user_id, k.identity_key, s.key_id, s.public_key, s.signature, s.created_at,"
    " d.name AS device_name"
    " FROM device_keys k"
    " JOIN user_devices d ON d.id = k.device_id AND d.revoked_at IS NULL"
    " JOIN signed_prekeys s ON s.device_id = k.device_id AND s.superseded_at IS NULL"
)


class KeyDirectoryStore:
    def __init__(self, dialect: str) -> None:
        self._take_one_time = _TAKE_ONE_TIME[dialect]

    # -- identity and signed prekeys ---------------------------------------------------

    async def identity_key(self, db: Queryable, device_id: str) -> bytes | None:
        value = await db.fetchval("SELECT identity_key FROM device_keys WHERE device_id = $1", device_id)
        return bytes(value) if value is not None else None

    async def set_identity(self, tx: Queryable, user_id: str, device_id: str, identity_key: bytes, now: int) -> None:
        """Store a new identity key; a changed one takes every prekey of the old one with it."""
        await tx.execute("DELETE FROM device_keys WHERE device_id = $1", device_id)
        await tx.execute(
            "INSERT INTO device_keys (device_id, user_id, identity_key, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $4)",
            device_id,
            user_id,
            identity_key,
            now,
        )

    async def signed_prekey_ids(self, db: Queryable, device_id: str) -> set[int]:
        rows = await db.fetch("SELECT key_id FROM signed_prekeys WHERE device_id = $1", device_id)
        return {row["key_id"] for row in rows}

    async def add_signed_prekey(
        self, tx: Queryable, device_id: str, key_id: int, public_key: bytes, signature: bytes, now: int
    ) -> None:
        """Make this the current signed prekey; the previous one stays, superseded, for late initiators."""
        await tx.execute(
            "UPDATE signed_prekeys SET superseded_at = $2 WHERE device_id = $1 AND superseded_at IS NULL",
            device_id,
            now,
        )
        prekey = {
            "device_id": device_id,
            "key_id": key_id,
            "public_key": public_key,
            "signature": signature,
            "created_at": now,
        }
        await insert_row(tx, "signed_prekeys", prekey)

    async def prune_superseded(self, tx: Queryable, device_id: str, before: int) -> None:
        await tx.execute(
            "DELETE FROM signed_prekeys WHERE device_id = $1 AND superseded_at IS NOT NULL AND superseded_at < $2",
            device_id,
            before,
        )

    async def current_signed_prekey(self, db: Queryable, device_id: str) -> Row | None:
        return await db.fetchrow(
            "SELECT key_id, created_at FROM signed_prekeys WHERE device_id = $1 AND superseded_at IS NULL",
            device_id,
        )

    async def device_keys(self, db: Queryable, user_id: str, device_id: str | None) -> Sequence[Row]:
        """Public keys of one active device, or of all of a user's active devices (device_id None)."""
        if device_id is None:
            return await db.fetch(f"{_DEVICE_KEYS} WHERE k.user_id = $1 ORDER BY k.device_id", user_id)
        return await db.fetch(f"{_DEVICE_KEYS} WHERE k.user_id = $1 AND k.device_id = $2", user_id, device_id)

    # -- one-time prekeys ------------------------------------------------------------------

    async def add_one_time(self, tx: Queryable, device_id: str, keys: Sequence[tuple[int, bytes]]) -> None:
        """Add prekeys; one already known by id is left as it is (an upload retried is harmless)."""
        for key_id, public_key in keys:
            key = {"device_id": device_id, "key_id": key_id, "public_key": public_key}
            await insert_row(tx, "one_time_prekeys", key, "ON CONFLICT (device_id, key_id) DO NOTHING")

    async def count_one_time(self, db: Queryable, device_id: str) -> int:
        return await db.fetchval("SELECT count(*) FROM one_time_prekeys WHERE device_id = $1", device_id)

    async def take_one_time(self, tx: Queryable, device_id: str) -> Row | None:
        return await tx.fetchrow(self._take_one_time, device_id)

    # -- group sender keys -----------------------------------------------------------------

    async def sender_key(self, db: Queryable, chat_id: str, device_id: str) -> str | None:
        return await db.fetchval(
            "SELECT distribution_id FROM sender_keys WHERE chat_id = $1 AND device_id = $2", chat_id, device_id
        )

    async def set_sender_key(self, tx: Queryable, chat_id: str, device_id: str, distribution_id: str, now: int) -> None:
        """A new sender key: its distributions replace (cascade) those of the old one."""
        await tx.execute("DELETE FROM sender_keys WHERE chat_id = $1 AND device_id = $2", chat_id, device_id)
        key = {"chat_id": chat_id, "device_id": device_id, "distribution_id": distribution_id, "created_at": now}
        await insert_row(tx, "sender_keys", key)

    async def add_distributions(
        self,
        tx: Queryable,
        chat_id: str,
        sender_device_id: str,
        distribution_id: str,
        recipients: Sequence[tuple[str, bytes]],
        now: int,
    ) -> None:
        for recipient, ciphertext in recipients:
            await tx.execute(
                "INSERT INTO sender_key_distributions"
                " (chat_id, sender_device_id, recipient_device_id, distribution_id, ciphertext, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6)"
                " ON CONFLICT (chat_id, sender_device_id, recipient_device_id)"
                " DO UPDATE SET distribution_id = excluded.distribution_id, ciphertext = excluded.ciphertext,"
                " created_at = excluded.created_at",
                chat_id,
                sender_device_id,
                recipient,
                distribution_id,
                ciphertext,
                now,
            )

    async def undistributed(
        self, db: Queryable, chat_id: str, sender_device_id: str, device_ids: Sequence[str]
    ) -> list[str]:
        """Which of these devices lack the sender's current key."""
        rows = await fetch_in(
            db,
            "SELECT recipient_device_id FROM sender_key_distributions"
            " WHERE chat_id = $1 AND sender_device_id = $2 AND recipient_device_id IN ($ids)",
            device_ids,
            chat_id,
            sender_device_id,
        )
        have = {row["recipient_device_id"] for row in rows}
        return sorted(set(device_ids) - have)

    async def distributions_for(self, db: Queryable, chat_id: str, recipient_device_id: str) -> Sequence[Row]:
        return await db.fetch(
            "SELECT s.chat_id, s.sender_device_id, d.user_id AS sender_user_id, s.distribution_id, s.ciphertext,"
            " s.created_at"
            " FROM sender_key_distributions s JOIN user_devices d ON d.id = s.sender_device_id"
            " WHERE s.chat_id = $1 AND s.recipient_device_id = $2 ORDER BY s.sender_device_id",
            chat_id,
            recipient_device_id,
        )

    async def forget_sender_keys(self, tx: Queryable, chat_id: str) -> None:
        """Membership shrank: every sender must choose a new key before its next group message."""
        await tx.execute("DELETE FROM sender_keys WHERE chat_id = $1", chat_id)

    async def forget_device_sender_keys(self, tx: Queryable, device_id: str) -> None:
        """The device's own sender keys, and those it was sent: both were tied to its old identity."""
        await tx.execute("DELETE FROM sender_keys WHERE device_id = $1", device_id)
        await tx.execute("DELETE FROM sender_key_distributions WHERE recipient_device_id = $1", device_id)
