"""Readiness: whether the backends this process needs answer."""

from __future__ import annotations

from sup.db.database import Database


class Health:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def problem(self) -> str | None:
        """None when ready, else what does not answer."""
        try:
            await self._db.fetchval("SELECT 1")
        except Exception as exc:  # any failure means "not ready", whatever the driver raised
            return f"The database does not answer: {type(exc).__name__}"
        return None
