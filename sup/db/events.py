"""SQL for each device's durable event stream."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sup.db.database import Queryable
from sup.delivery import Delivery

# SQLite allows 32766 parameters per statement; 4 per row keeps far below.
_ROWS_PER_INSERT = 500


# Postgres locks the rows an UPDATE changes in the order its scan meets them, which is not
# the order of an IN list and can differ between two transactions (a seq scan waiting on one
# row resumes at a moved tuple). Two appends to overlapping sets of devices (two logins of one
# user, a login and a message batch) then deadlock. Locking in id order first makes the order
# one for everyone. SQLite has a single writer and no row locks.
_BUMP_SEQS = {
    "postgres": (
        "UPDATE user_devices d SET last_event_seq = d.last_event_seq + 1"
        " FROM (SELECT id FROM user_devices WHERE id IN ({ids}) ORDER BY id FOR UPDATE) locked"
        " WHERE d.id = locked.id RETURNING d.id, d.last_event_seq"
    ),
    "sqlite": (
        "UPDATE user_devices SET last_event_seq = last_event_seq + 1 WHERE id IN ({ids}) RETURNING id, last_event_seq"
    ),
}


class EventStore:
    def __init__(self, dialect: str = "sqlite") -> None:
        self._bump = _BUMP_SEQS[dialect]

    async def next_seqs(self, tx: Queryable, device_ids: Sequence[str]) -> dict[str, int]:
        """Reserve the next seq of each device (one each), under the device rows' locks, taken in id order."""
        if not device_ids:
            return {}
        ordered = sorted(set(device_ids))
        placeholders = ", ".join(f"${i + 1}" for i in range(len(ordered)))
        rows = await tx.fetch(self._bump.format(ids=placeholders), *ordered)
        return {row["id"]: row["last_event_seq"] for row in rows}

    async def insert(self, tx: Queryable, deliveries: Iterable[Delivery], now: int) -> None:
        batch = list(deliveries)
        for start in range(0, len(batch), _ROWS_PER_INSERT):
            chunk = batch[start : start + _ROWS_PER_INSERT]
            values = ", ".join(f"(${i * 4 + 1}, ${i * 4 + 2}, ${i * 4 + 3}, ${i * 4 + 4})" for i in range(len(chunk)))
            args: list[object] = []
            for d in chunk:
                args += [d.device_id, d.seq, d.payload, now]
            await tx.execute(f"INSERT INTO device_events (device_id, seq, payload, created_at) VALUES {values}", *args)

    async def read(self, db: Queryable, device_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        rows = await db.fetch(
            "SELECT seq, payload FROM device_events WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            device_id,
            after_seq,
            limit,
        )
        return [(row["seq"], bytes(row["payload"])) for row in rows]

    async def positions(self, db: Queryable, device_id: str) -> tuple[int, int]:
        """(last appended seq, last acknowledged seq) of a device."""
        row = await db.fetchrow("SELECT last_event_seq, acked_event_seq FROM user_devices WHERE id = $1", device_id)
        return (row["last_event_seq"], row["acked_event_seq"]) if row else (0, 0)

    async def last_seqs_active(self, db: Queryable, device_ids: Sequence[str]) -> dict[str, int]:
        """The stream end of each device that is still active (revoked ones are absent)."""
        if not device_ids:
            return {}
        placeholders = ", ".join(f"${i + 1}" for i in range(len(device_ids)))
        rows = await db.fetch(
            f"SELECT id, last_event_seq FROM user_devices WHERE id IN ({placeholders}) AND revoked_at IS NULL",
            *device_ids,
        )
        return {row["id"]: row["last_event_seq"] for row in rows}

    async def ack(self, tx: Queryable, device_id: str, seq: int) -> None:
        await tx.execute(
            "UPDATE user_devices SET acked_event_seq = $2 WHERE id = $1 AND acked_event_seq < $2"
            " AND last_event_seq >= $2",
            device_id,
            seq,
        )

    async def prune(self, tx: Queryable, older_than: int) -> int:
        """Drop acknowledged events older than a point in time; unacknowledged ones stay."""
        return await tx.execute(
            "DELETE FROM device_events WHERE created_at < $1 AND seq <= (SELECT acked_event_seq"
            " FROM user_devices d WHERE d.id = device_events.device_id)",
            older_than,
        )

    async def first_seq(self, db: Queryable, device_id: str) -> int | None:
        return await db.fetchval("SELECT MIN(seq) FROM device_events WHERE device_id = $1", device_id)
