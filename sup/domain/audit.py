"""The audit log: every change an administrator makes, written in the transaction of the change.

So an entry exists exactly when its change does. Reading (lists, a user's details, the
figures) is not logged; the access log has those requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from sup.db.audit import AuditStore
from sup.db.database import Database, Queryable, Row, from_row
from sup.ids import uuid7


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    actor_id: str | None  # None: a `sup admin` command
    actor_username: str | None
    action: str
    target_id: str | None
    details: dict[str, Any]
    created_at: int


class AuditPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[AuditEntry]
    next_cursor: str | None


def _entry(row: Row) -> AuditEntry:
    return from_row(AuditEntry, row, details=msgspec.json.decode(row["details"]))


@dataclass(slots=True, eq=False)
class AuditLog:
    db: Database
    store: AuditStore

    async def record(
        self,
        tx: Queryable,
        actor_id: str | None,
        action: str,
        target_id: str | None,
        details: dict[str, Any],
        now: int,
    ) -> None:
        await self.store.insert(
            tx,
            id=uuid7(now),
            actor_id=actor_id,
            action=action,
            target_id=target_id,
            details=msgspec.json.encode(details).decode(),
            now=now,
        )

    async def page(
        self,
        *,
        before: str | None,
        limit: int,
        action: str | None = None,
        target_id: str | None = None,
        actor_id: str | None = None,
    ) -> AuditPage:
        """Newest first; pass `next_cursor` as `before` for the next page."""
        rows = await self.store.page(
            self.db, before=before, limit=limit + 1, action=action, target_id=target_id, actor_id=actor_id
        )
        items = [_entry(r) for r in rows[:limit]]
        return AuditPage(items=items, next_cursor=items[-1].id if len(rows) > limit else None)
