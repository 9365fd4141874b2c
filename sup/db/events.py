"""SQL for each device's durable event stream."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sup.db.database import Queryable, fetch_in, in_list
from sup.delivery import Delivery

# SQLite allows 32766 parameters per statement; 4 per row keeps far below.
_ROWS_PER_INSERT = 500


# Postgres locks the rows an UPDATE changes in the order its scan meets them, which is not
# the order of an IN list and can differ between two transactions (a seq scan waiting on one
# row resumes at a moved tuple). Two appends to overlapping sets of devices (two logins of one
# user, a login and a message batch) then deadlock. Locking in id order first makes the order
# one for everyone. SQLite has a single writer and no row locks.
#
# On Postgres a whole batch's bumps are one statement (arrays, so one prepared statement
# whatever the batch's size): the ids, and how many events each device gets.
#
# The arrays' rows meet the table only through its primary key. A prepared statement's generic
# plan guesses 10 rows for an array of any length; an earlier form joined the array to the
# locked rows by a filter, which that guess made a nested loop over both: 100 million
# comparisons, 10 s, for one post to a channel of 10,000 (docs/performance.md, "Big rooms").
# Looking each id up in the index costs the same whatever the plan guessed.
_BUMP_PG = (
    "UPDATE user_devices d SET last_event_seq = d.last_event_seq + l.n"
    " FROM (SELECT u.id, c.n FROM unnest($1::uuid[], $2::bigint[]) AS c(id, n)"
    " JOIN user_devices u ON u.id = c.id ORDER BY u.id FOR UPDATE OF u) l"
    " WHERE d.id = l.id RETURNING d.id, d.last_event_seq"
)
_BUMP_SQLITE = (
    "UPDATE user_devices SET last_event_seq = last_event_seq + {n} WHERE id IN ({ids}) RETURNING id, last_event_seq"
)
# Several devices' acknowledgements in one statement; the rows are locked in id order first, as
# _BUMP_PG locks them, so an ack and a batch never wait on each other in a cycle.
_ACK_PG = (
    "UPDATE user_devices d SET acked_event_seq = l.seq"
    " FROM (SELECT u.id, c.seq FROM unnest($1::uuid[], $2::bigint[]) AS c(id, seq)"
    " JOIN user_devices u ON u.id = c.id ORDER BY u.id FOR UPDATE OF u) l"
    " WHERE d.id = l.id AND d.acked_event_seq < l.seq AND d.last_event_seq >= l.seq"
)
_INSERT_PG = (
    "INSERT INTO device_events (device_id, seq, payload, created_at)"
    " SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bigint[])"
)


class EventStore:
    def __init__(self, dialect: str = "sqlite") -> None:
        self._postgres = dialect == "postgres"

    async def next_seqs(self, tx: Queryable, device_ids: Sequence[str]) -> dict[str, int]:
        """Reserve the next seq of each device (one each), under the device rows' locks, taken in id order."""
        return await self.bump_seqs(tx, dict.fromkeys(device_ids, 1))

    async def bump_seqs(self, tx: Queryable, counts: Mapping[str, int]) -> dict[str, int]:
        """Reserve `counts[d]` seqs of each device d; return each existing device's new last seq.

        The reserved seqs of d are `last - counts[d] + 1 .. last`. A device that no longer exists is absent.
        """
        if not counts:
            return {}
        ordered = sorted(counts)
        if self._postgres:
            rows = await tx.fetch(_BUMP_PG, ordered, [counts[d] for d in ordered])
            return {row["id"]: row["last_event_seq"] for row in rows}
        by_count: dict[int, list[str]] = {}
        for d in ordered:
            by_count.setdefault(counts[d], []).append(d)
        last: dict[str, int] = {}
        for n, ids in by_count.items():
            for start in range(0, len(ids), _ROWS_PER_INSERT):
                chunk = ids[start : start + _ROWS_PER_INSERT]
                placeholders = in_list(len(chunk))
                rows = await tx.fetch(_BUMP_SQLITE.format(n=int(n), ids=placeholders), *chunk)
                last.update((row["id"], row["last_event_seq"]) for row in rows)
        return last

    async def insert(self, tx: Queryable, deliveries: Sequence[Delivery], now: int | Sequence[int]) -> None:
        """Store events; `now` is one time for all, or one per delivery."""
        if not deliveries:
            return
        times = [now] * len(deliveries) if isinstance(now, int) else list(now)
        if self._postgres:
            await tx.execute(
                _INSERT_PG,
                [d.device_id for d in deliveries],
                [d.seq for d in deliveries],
                [d.payload for d in deliveries],
                times,
            )
            return
        for start in range(0, len(deliveries), _ROWS_PER_INSERT):
            chunk = deliveries[start : start + _ROWS_PER_INSERT]
            values = ", ".join(f"(${i * 4 + 1}, ${i * 4 + 2}, ${i * 4 + 3}, ${i * 4 + 4})" for i in range(len(chunk)))
            args: list[object] = []
            for d, at in zip(chunk, times[start : start + _ROWS_PER_INSERT], strict=True):
                args += [d.device_id, d.seq, d.payload, at]
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
        rows = await fetch_in(
            db, "SELECT id, last_event_seq FROM user_devices WHERE id IN ($ids) AND revoked_at IS NULL", device_ids
        )
        return {row["id"]: row["last_event_seq"] for row in rows}

    async def ack(self, tx: Queryable, device_id: str, seq: int) -> None:
        await tx.execute(
            "UPDATE user_devices SET acked_event_seq = $2 WHERE id = $1 AND acked_event_seq < $2"
            " AND last_event_seq >= $2",
            device_id,
            seq,
        )

    async def ack_many(self, tx: Queryable, acks: Mapping[str, int]) -> None:
        """`ack` for several devices, their rows locked in id order (as a batch's bump locks them)."""
        ordered = sorted(acks)
        if self._postgres:
            await tx.execute(_ACK_PG, ordered, [acks[d] for d in ordered])
            return
        for device_id in ordered:
            await self.ack(tx, device_id, acks[device_id])

    async def prune(self, tx: Queryable, older_than: int) -> int:
        """Drop acknowledged events older than a point in time; unacknowledged ones stay."""
        return await tx.execute(
            "DELETE FROM device_events WHERE created_at < $1 AND seq <= (SELECT acked_event_seq"
            " FROM user_devices d WHERE d.id = device_events.device_id)",
            older_than,
        )

    async def first_seq(self, db: Queryable, device_id: str) -> int | None:
        return await db.fetchval("SELECT MIN(seq) FROM device_events WHERE device_id = $1", device_id)
