"""The durable job queue, in the database.

Delivery is at least once: a job is claimed under a lease, and a worker that dies (or
hangs past its lease) leaves the job to be claimed again once the lease has expired.
Handlers must therefore be idempotent. Completing or failing a job is fenced by the
worker's id, so a worker whose lease was taken over cannot overwrite the new run's result.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Literal

from sup.clock import Clock
from sup.db.database import Database, Queryable, Row, in_list
from sup.ids import uuid7

log = logging.getLogger("sup.jobs")

JobState = Literal["queued", "running", "done", "failed"]

MAX_ERROR_CHARS = 1000

_ACTIVE = "state IN ('queued', 'running')"  # must match the jobs_dedupe index predicate

# On Postgres several processes claim at once: SKIP LOCKED lets each take different rows
# instead of queueing on the same ones. SQLite has one writer, so a plain subselect is safe.
_SKIP_LOCKED = {"postgres": " FOR UPDATE SKIP LOCKED", "sqlite": ""}


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    payload: bytes
    state: JobState
    attempts: int  # runs started so far, this one included once claimed
    max_attempts: int
    run_at: int
    locked_by: str | None
    locked_until: int | None
    last_error: str | None
    dedupe_key: str | None
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, row: Row) -> Job:
        values = {field.name: row[field.name] for field in fields(cls)}
        return cls(**{**values, "payload": bytes(row["payload"])})  # SQLite may hand back a memoryview


def _owned(worker_id: str | None, first: int) -> tuple[str, list[object]]:
    if worker_id is None:
        return "", []
    return f" AND locked_by = ${first}", [worker_id]


class DatabaseJobQueue:
    """Jobs in the `jobs` table, safe for several processes on Postgres (SKIP LOCKED claims).

    The one job queue, so no interface repeats its signatures; one is extracted when a second
    store (Redis) comes. Times are epoch milliseconds. Methods that take `worker_id` act only
    while that worker holds the job (it claimed it and nobody has claimed it since); they return
    whether they did.
    """

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._skip_locked = _SKIP_LOCKED[db.dialect]

    async def enqueue(
        self,
        kind: str,
        payload: bytes,
        *,
        run_at: int | None = None,
        max_attempts: int = 5,
        dedupe_key: str | None = None,
        tx: Queryable | None = None,
    ) -> str:
        """Add a job (in `tx`, if given, so it exists only if that commits); return its id.

        With a `dedupe_key` already held by a queued or running job, nothing is added and
        that job's id is returned.
        """
        now = self._clock.now_ms()
        args = (kind, payload, max_attempts, now if run_at is None else run_at, dedupe_key, now)

        # Awaits only `tx`: callable inside `Database.run_in_transaction` work on SQLite too.
        async def insert(tx: Queryable) -> str:
            for _ in range(3):
                job_id = await tx.fetchval(
                    "INSERT INTO jobs (id, kind, payload, state, attempts, max_attempts, run_at, dedupe_key,"
                    " created_at, updated_at) VALUES ($1, $2, $3, 'queued', 0, $4, $5, $6, $7, $7)"
                    f" ON CONFLICT (dedupe_key) WHERE {_ACTIVE} DO NOTHING RETURNING id",
                    uuid7(now),
                    *args,
                )
                if job_id is not None:
                    return job_id
                existing = await tx.fetchval(f"SELECT id FROM jobs WHERE dedupe_key = $1 AND {_ACTIVE}", dedupe_key)
                if existing is not None:
                    return existing
                # The holder of the key finished between the two statements (Postgres): try again.
            raise RuntimeError(f"could not enqueue job with dedupe key {dedupe_key!r}")

        if tx is not None:
            return await insert(tx)
        return await self._db.run_in_transaction(insert)

    async def claim(self, worker_id: str, kinds: Collection[str] | None, limit: int, lease_ms: int) -> list[Job]:
        """Take up to `limit` due jobs (of these kinds; None = any) for `lease_ms`, oldest first."""
        if limit <= 0 or (kinds is not None and not kinds):
            return []
        now = self._clock.now_ms()
        kind_list = sorted(kinds) if kinds is not None else []
        kind_filter = ""
        if kind_list:
            kind_filter = " AND kind IN (" + in_list(len(kind_list), 5) + ")"
        # A job whose lease expired on its last allowed attempt is not run again: its worker
        # died or hung on it every time, and a job that crashes its process must not do so forever.
        reap_sql = (
            "UPDATE jobs SET state = 'failed', locked_by = NULL, locked_until = NULL, updated_at = $1,"
            " last_error = 'lease expired on attempt ' || attempts || ' (worker stopped or hung)'"
            " WHERE state = 'running' AND locked_until <= $1 AND attempts >= max_attempts RETURNING id, kind, attempts"
        )
        claim_sql = (
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, locked_by = $1, locked_until = $3,"
            " updated_at = $2 WHERE id IN (SELECT id FROM jobs"
            " WHERE ((state = 'queued' AND run_at <= $2)"
            " OR (state = 'running' AND locked_until <= $2 AND attempts < max_attempts))"
            f"{kind_filter} ORDER BY run_at LIMIT $4{self._skip_locked})"
            " RETURNING *"
        )

        async def work(tx: Queryable) -> tuple[list[Row], list[Row]]:
            reaped = list(await tx.fetch(reap_sql, now))
            return reaped, list(await tx.fetch(claim_sql, worker_id, now, now + lease_ms, limit, *kind_list))

        reaped, rows = await self._db.run_in_transaction(work)
        for row in reaped:
            log.error("job %s (%s) failed: lease expired on attempt %d", row["id"], row["kind"], row["attempts"])
        return sorted((Job.from_row(row) for row in rows), key=lambda job: (job.run_at, job.id))

    async def extend(self, job_id: str, worker_id: str, lease_ms: int) -> bool:
        """Keep holding a job for `lease_ms` more from now."""
        now = self._clock.now_ms()
        changed = await self._db.execute(
            "UPDATE jobs SET locked_until = $3, updated_at = $4 WHERE id = $1 AND state = 'running' AND locked_by = $2",
            job_id,
            worker_id,
            now + lease_ms,
            now,
        )
        return changed > 0

    async def complete(self, job_id: str, *, worker_id: str | None = None) -> bool:
        """The job succeeded."""
        owned, extra = _owned(worker_id, 3)
        changed = await self._db.execute(
            "UPDATE jobs SET state = 'done', locked_by = NULL, locked_until = NULL, updated_at = $2"
            f" WHERE id = $1 AND state = 'running'{owned}",
            job_id,
            self._clock.now_ms(),
            *extra,
        )
        return changed > 0

    async def fail(self, job_id: str, error: str, retry_at: int | None, *, worker_id: str | None = None) -> bool:
        """The run failed: queue it again at `retry_at`, or with None mark the job failed for good."""
        owned, extra = _owned(worker_id, 5)
        state = "failed" if retry_at is None else "queued"
        now = self._clock.now_ms()
        changed = await self._db.execute(
            f"UPDATE jobs SET state = '{state}', last_error = $2, run_at = $3, locked_by = NULL, locked_until = NULL,"
            f" updated_at = $4 WHERE id = $1 AND state = 'running'{owned}",
            job_id,
            error[:MAX_ERROR_CHARS],
            now if retry_at is None else retry_at,
            now,
            *extra,
        )
        return changed > 0

    async def reschedule(
        self, job_id: str, run_at: int, *, worker_id: str | None = None, error: str | None = None
    ) -> bool:
        """Queue the job again at `run_at` as a fresh job (attempts back to 0): a periodic job's next run."""
        owned, extra = _owned(worker_id, 5)
        changed = await self._db.execute(
            "UPDATE jobs SET state = 'queued', attempts = 0, run_at = $2, last_error = $3, locked_by = NULL,"
            f" locked_until = NULL, updated_at = $4 WHERE id = $1 AND state = 'running'{owned}",
            job_id,
            run_at,
            None if error is None else error[:MAX_ERROR_CHARS],
            self._clock.now_ms(),
            *extra,
        )
        return changed > 0

    async def release(self, job_id: str, *, worker_id: str) -> bool:
        """Hand back a job whose run was interrupted (shutdown): due now, that attempt not counted."""
        now = self._clock.now_ms()
        changed = await self._db.execute(
            "UPDATE jobs SET state = 'queued', attempts = attempts - 1, run_at = $3, locked_by = NULL,"
            " locked_until = NULL, updated_at = $3 WHERE id = $1 AND state = 'running' AND locked_by = $2",
            job_id,
            worker_id,
            now,
        )
        return changed > 0

    async def get(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id)
        return None if row is None else Job.from_row(row)

    async def prune(self, older_than: int) -> int:
        """Delete finished (done or failed) jobs last changed before `older_than`; return how many."""
        return await self._db.execute(
            "DELETE FROM jobs WHERE state IN ('done', 'failed') AND updated_at < $1", older_than
        )

    async def count_active(self) -> dict[tuple[str, str], int]:
        """(kind, state) -> how many jobs are queued or running, periodic ones left out (for metrics)."""
        # The claim index (state, run_at) serves this: finished jobs are never read.
        rows = await self._db.fetch(
            f"SELECT kind, state, COUNT(*) AS n FROM jobs WHERE {_ACTIVE} AND kind NOT LIKE 'periodic:%' "
            "GROUP BY kind, state"
        )
        return {(row["kind"], row["state"]): row["n"] for row in rows}
