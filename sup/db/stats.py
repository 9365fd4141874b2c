"""SQL for the server's figures an administrator sees: counts over whole tables."""

from __future__ import annotations

from sup.db.database import Queryable, Row


class StatsStore:
    async def users(self, db: Queryable) -> Row:
        return await db.fetchrow(
            "SELECT COUNT(*) AS total,"
            " SUM(CASE WHEN deactivated_at IS NULL AND deleted_at IS NULL THEN 1 ELSE 0 END) AS active,"
            " SUM(CASE WHEN deactivated_at IS NOT NULL AND deleted_at IS NULL THEN 1 ELSE 0 END) AS deactivated,"
            " SUM(CASE WHEN deleted_at IS NOT NULL THEN 1 ELSE 0 END) AS deleted,"
            " SUM(CASE WHEN is_admin AND deleted_at IS NULL THEN 1 ELSE 0 END) AS admins FROM users"
        )

    async def active_devices(self, db: Queryable) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM user_devices WHERE revoked_at IS NULL")

    async def chats_by_type(self, db: Queryable) -> dict[str, int]:
        rows = await db.fetch("SELECT type, COUNT(*) AS n FROM chats GROUP BY type")
        return {row["type"]: row["n"] for row in rows}

    async def messages(self, db: Queryable) -> Row:
        return await db.fetchrow(
            "SELECT COUNT(*) AS total, SUM(CASE WHEN deleted_at IS NOT NULL THEN 1 ELSE 0 END) AS deleted FROM messages"
        )

    async def storage(self, db: Queryable) -> Row:
        """Files and their bytes as quotas count them, and the distinct stored originals (identical bytes once)."""
        return await db.fetchrow(
            "SELECT COUNT(*) AS files, COALESCE(SUM(size), 0) AS bytes,"
            " (SELECT COALESCE(SUM(size), 0) FROM (SELECT MAX(size) AS size FROM media GROUP BY blob_key) b)"
            " AS stored_bytes FROM media"
        )

    async def jobs_by_state(self, db: Queryable) -> dict[str, int]:
        rows = await db.fetch("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {row["state"]: row["n"] for row in rows}

    async def user_storage(self, db: Queryable, user_id: str) -> Row:
        """A user's files and their bytes, as the quota counts them (without uploads in progress)."""
        return await db.fetchrow(
            "SELECT COUNT(*) AS files, COALESCE(SUM(size), 0) AS bytes FROM media WHERE owner_id = $1", user_id
        )

    async def user_chats(self, db: Queryable, user_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM chat_members WHERE user_id = $1", user_id)
