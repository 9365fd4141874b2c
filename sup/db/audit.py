"""SQL for the audit log: what administrators did, to whom, and when."""

from __future__ import annotations

from sup.db.database import Queryable, Row, insert_row

_COLUMNS = (
    "a.id, a.actor_id, u.username AS actor_username, a.action, a.target_id, a.details, a.created_at"
    " FROM audit_log a LEFT JOIN users u ON u.id = a.actor_id"
)


class AuditStore:
    async def insert(
        self,
        tx: Queryable,
        *,
        id: str,
        actor_id: str | None,
        action: str,
        target_id: str | None,
        details: str,
        now: int,
    ) -> None:
        entry = {
            "id": id,
            "actor_id": actor_id,
            "action": action,
            "target_id": target_id,
            "details": details,
            "created_at": now,
        }
        await insert_row(tx, "audit_log", entry)

    async def page(
        self,
        db: Queryable,
        *,
        before: str | None,
        limit: int,
        action: str | None = None,
        target_id: str | None = None,
        actor_id: str | None = None,
    ) -> list[Row]:
        """Entries newest first (ids are UUIDv7), each filter applied when given."""
        where, args = [], []
        for column, value in (("a.id <", before), ("a.action =", action), ("a.target_id =", target_id)):
            if value is not None:
                args.append(value)
                where.append(f"{column} ${len(args)}")
        if actor_id is not None:
            args.append(actor_id)
            where.append(f"a.actor_id = ${len(args)}")
        args.append(limit)
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        return list(await db.fetch(f"SELECT {_COLUMNS}{condition} ORDER BY a.id DESC LIMIT ${len(args)}", *args))
