"""SQL for data exports: a user's archive, built by a job, kept in the blob store until it expires."""

from __future__ import annotations

from sup.db.database import Queryable, Row, changed_one, insert_row

_COLUMNS = "id, user_id, state, blob_key, size, failure, created_at, ready_at, expires_at"
_EXPORTS = f"SELECT {_COLUMNS} FROM account_exports"


class ExportStore:
    async def insert(self, tx: Queryable, *, id: str, user_id: str, now: int) -> None:
        export = {"id": id, "user_id": user_id, "state": "pending", "created_at": now}
        await insert_row(tx, "account_exports", export)

    async def get(self, db: Queryable, export_id: str) -> Row | None:
        return await db.fetchrow(f"{_EXPORTS} WHERE id = $1", export_id)

    async def of_user(self, db: Queryable, user_id: str) -> list[Row]:
        """The user's exports, newest first."""
        return list(await db.fetch(f"{_EXPORTS} WHERE user_id = $1 ORDER BY created_at DESC, id DESC", user_id))

    async def last_counted(self, db: Queryable, user_id: str) -> Row | None:
        """The user's newest export that counts against the rate limit (a failed one does not)."""
        return await db.fetchrow(
            f"{_EXPORTS} WHERE user_id = $1 AND state <> 'failed' ORDER BY created_at DESC, id DESC LIMIT 1", user_id
        )

    async def set_ready(
        self, tx: Queryable, export_id: str, blob_key: str, size: int, now: int, expires_at: int
    ) -> bool:
        """False if the export is gone meanwhile (its user was deleted)."""
        return await changed_one(
            tx,
            "UPDATE account_exports SET state = 'ready', blob_key = $2, size = $3, ready_at = $4, expires_at = $5"
            " WHERE id = $1 AND state = 'pending'",
            export_id,
            blob_key,
            size,
            now,
            expires_at,
        )

    async def set_failed(self, tx: Queryable, export_id: str, failure: str) -> None:
        await tx.execute(
            "UPDATE account_exports SET state = 'failed', failure = $2 WHERE id = $1 AND state = 'pending'",
            export_id,
            failure,
        )

    async def expired(self, db: Queryable, now: int, limit: int) -> list[Row]:
        return list(
            await db.fetch(f"{_EXPORTS} WHERE expires_at IS NOT NULL AND expires_at <= $1 LIMIT $2", now, limit)
        )

    async def delete(self, tx: Queryable, export_id: str) -> Row | None:
        return await tx.fetchrow(f"DELETE FROM account_exports WHERE id = $1 RETURNING {_COLUMNS}", export_id)

    async def delete_of_user(self, tx: Queryable, user_id: str) -> list[str]:
        """Remove every export of the user; the blob keys of those that had an archive."""
        rows = await tx.fetch("DELETE FROM account_exports WHERE user_id = $1 RETURNING blob_key", user_id)
        return [row["blob_key"] for row in rows if row["blob_key"] is not None]
