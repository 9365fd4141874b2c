"""SQL for push subscriptions (one per device) and the push that waits for each (migrations/0011_push)."""

from __future__ import annotations

from collections.abc import Sequence

from sup.db.database import Queryable, Row, changed_one, fetch_in

# Several processes claim at once on Postgres: each takes other rows instead of waiting on the same.
_SKIP_LOCKED = {"postgres": " FOR UPDATE SKIP LOCKED", "sqlite": ""}
# A device id in a VALUES list: Postgres compares it with a UUID column only as a UUID. (SQLite must not
# cast: CAST(... AS UUID) there means NUMERIC, which would turn "123e4567-..." into a number.)
_ID = {"postgres": "CAST(${} AS UUID)", "sqlite": "${}"}

# A subscription as the API shows it.
_SUBSCRIPTION = "device_id, endpoint, created_at, updated_at, last_pushed_at"
_CHUNK = 500  # ids per IN list, far below SQLite's parameter limit


class PushStore:
    def __init__(self, dialect: str = "sqlite") -> None:
        self._skip_locked = _SKIP_LOCKED[dialect]
        self._id = _ID[dialect]

    def _values(self, rows: int, first: int, types: tuple[str, ...]) -> str:
        """`(VALUES (id, x, y), ...)` with typed placeholders from `$first`: one statement for many devices."""
        width = 1 + len(types)
        tuples = []
        for r in range(rows):
            n = first + r * width
            cells = [self._id.format(n)] + [f"CAST(${n + 1 + i} AS {t})" for i, t in enumerate(types)]
            tuples.append("(" + ", ".join(cells) + ")")
        return "(VALUES " + ", ".join(tuples) + ")"

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(
        self, tx: Queryable, *, device_id: str, user_id: str, endpoint: str, p256dh: str, auth: str, now: int
    ) -> Row:
        """Create or replace the device's subscription; what waited for the old one is dropped."""
        return await tx.fetchrow(
            "INSERT INTO push_subscriptions (device_id, user_id, endpoint, p256dh, auth, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (device_id) DO UPDATE SET"
            " endpoint = excluded.endpoint, p256dh = excluded.p256dh, auth = excluded.auth,"
            " updated_at = excluded.updated_at, pending_seq = NULL, pending_chat = NULL, due_at = NULL,"
            f" lease_until = NULL, attempts = 0 RETURNING {_SUBSCRIPTION}",
            device_id,
            user_id,
            endpoint,
            p256dh,
            auth,
            now,
        )

    async def get(self, db: Queryable, device_id: str) -> Row | None:
        return await db.fetchrow(f"SELECT {_SUBSCRIPTION} FROM push_subscriptions WHERE device_id = $1", device_id)

    async def unsubscribe(self, tx: Queryable, device_id: str) -> bool:
        return await changed_one(tx, "DELETE FROM push_subscriptions WHERE device_id = $1", device_id)

    async def forget_gone(self, tx: Queryable, device_id: str, endpoint: str) -> bool:
        """The push service says the subscription is gone: remove it, unless the device registered anew."""
        return await changed_one(
            tx, "DELETE FROM push_subscriptions WHERE device_id = $1 AND endpoint = $2", device_id, endpoint
        )

    # -- what waits ------------------------------------------------------------------------

    async def subscribed(self, db: Queryable, device_ids: Sequence[str]) -> dict[str, str]:
        """device id -> user id, of those of the devices that have a subscription."""
        found: dict[str, str] = {}
        for start in range(0, len(device_ids), _CHUNK):
            chunk = device_ids[start : start + _CHUNK]
            rows = await fetch_in(
                db, "SELECT device_id, user_id FROM push_subscriptions WHERE device_id IN ($ids)", chunk
            )
            found.update({row["device_id"]: row["user_id"] for row in rows})
        return found

    async def mark_many(self, tx: Queryable, marks: Sequence[tuple[str, int, str]], due_at: int) -> list[int]:
        """`mark` for many (device id, seq, chat id) at once, in statements of up to _CHUNK devices."""
        dues: list[int] = []
        for start in range(0, len(marks), _CHUNK):
            chunk = marks[start : start + _CHUNK]
            values = self._values(len(chunk), 2, ("BIGINT", "TEXT"))
            rows = await tx.fetch(
                "UPDATE push_subscriptions SET"
                " pending_seq = CASE WHEN pending_seq IS NULL OR pending_seq < v.column2 THEN v.column2"
                " ELSE pending_seq END,"
                " pending_chat = CASE WHEN due_at IS NULL OR pending_chat = v.column3 THEN v.column3 ELSE '' END,"
                " due_at = COALESCE(due_at, CAST($1 AS BIGINT))"
                f" FROM {values} AS v WHERE push_subscriptions.device_id = v.column1"
                " RETURNING push_subscriptions.due_at",
                due_at,
                *[value for mark in chunk for value in mark],
            )
            dues += [row["due_at"] for row in rows if row["due_at"] is not None]
        return dues

    async def settle_many(self, tx: Queryable, done: Sequence[tuple[str, int, int]], now: int, rearm_at: int) -> None:
        """`settle` for many (device id, seq, 1 if pushed else 0) at once."""
        for start in range(0, len(done), _CHUNK):
            chunk = done[start : start + _CHUNK]
            values = self._values(len(chunk), 3, ("BIGINT", "INTEGER"))
            await tx.execute(
                "UPDATE push_subscriptions SET lease_until = NULL, attempts = 0,"
                " last_pushed_at = CASE WHEN v.column3 = 1 THEN CAST($1 AS BIGINT) ELSE last_pushed_at END,"
                " due_at = CASE WHEN pending_seq > v.column2 THEN CAST($2 AS BIGINT) ELSE NULL END,"
                " pending_chat = CASE WHEN pending_seq > v.column2 THEN pending_chat ELSE NULL END,"
                " pending_seq = CASE WHEN pending_seq > v.column2 THEN pending_seq ELSE NULL END"
                f" FROM {values} AS v WHERE push_subscriptions.device_id = v.column1",
                now,
                rearm_at,
                *[value for row in chunk for value in row],
            )

    async def claim(self, tx: Queryable, now: int, lease_until: int, limit: int) -> list[Row]:
        """Take up to `limit` due pushes for this sender until `lease_until`, with each device's stream position."""
        rows = await tx.fetch(
            "UPDATE push_subscriptions SET lease_until = $2 WHERE device_id IN (SELECT device_id"
            " FROM push_subscriptions WHERE due_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)"
            f" ORDER BY due_at LIMIT $3{self._skip_locked})"
            " RETURNING device_id, user_id, endpoint, p256dh, auth, pending_seq, pending_chat, attempts",
            now,
            lease_until,
            limit,
        )
        if not rows:
            return []
        ids = [row["device_id"] for row in rows]
        found = await fetch_in(tx, "SELECT id, acked_event_seq, revoked_at FROM user_devices WHERE id IN ($ids)", ids)
        devices = {row["id"]: row for row in found}
        claimed = []
        for row in rows:
            device = devices.get(row["device_id"])
            claimed.append(
                {
                    **dict(row),
                    "acked_seq": device["acked_event_seq"] if device else 0,
                    "revoked": device is None or device["revoked_at"] is not None,
                }
            )
        return claimed

    async def retry_at(self, tx: Queryable, device_id: str, due_at: int, attempts: int) -> None:
        await tx.execute(
            "UPDATE push_subscriptions SET lease_until = NULL, due_at = $2, attempts = $3 WHERE device_id = $1",
            device_id,
            due_at,
            attempts,
        )

    async def next_due(self, db: Queryable) -> int | None:
        """When the earliest waiting push is due (a leased one: when its lease ends), or None."""
        return await db.fetchval(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > due_at THEN lease_until ELSE due_at END)"
            " FROM push_subscriptions WHERE due_at IS NOT NULL"
        )

    async def waiting(self, db: Queryable) -> int:
        """Pushes waiting now (for tests, metrics and `sup doctor`)."""
        return await db.fetchval("SELECT COUNT(*) FROM push_subscriptions WHERE due_at IS NOT NULL")
