"""Postgres backend (asyncpg connection pool)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg

from sup.db.database import AfterCommitQueue, DatabaseError, IntegrityError, Row, TransactionWork

T = TypeVar("T")

# One fixed key so concurrent `sup run`s on one database migrate one at a time.
_MIGRATION_LOCK_KEY = 0x5355_5000


def _rowcount(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3" or "INSERT 0 1".
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _init_connection(conn: asyncpg.Connection) -> None:
    # Ids travel as strings through the whole program, whatever the column type.
    await conn.set_type_codec("uuid", encoder=str, decoder=str, schema="pg_catalog", format="text")


class _Conn:
    def __init__(self, conn: asyncpg.Connection | asyncpg.Pool) -> None:
        self._conn = conn

    async def execute(self, sql: str, *args: Any) -> int:
        try:
            return _rowcount(await self._conn.execute(sql, *args))
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            return await self._conn.fetch(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        try:
            return await self._conn.fetchrow(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def fetchval(self, sql: str, *args: Any) -> Any:
        try:
            return await self._conn.fetchval(sql, *args)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise IntegrityError(str(exc)) from exc

    async def execute_script(self, script: str) -> None:
        # Without arguments asyncpg uses the simple query protocol: many statements at once.
        await self._conn.execute(script)


class _Tx(_Conn, AfterCommitQueue):
    def __init__(self, conn: asyncpg.Connection) -> None:
        _Conn.__init__(self, conn)
        AfterCommitQueue.__init__(self)


class PostgresDatabase(_Conn):
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._pool = pool

    @classmethod
    async def open(cls, url: str, *, pool_min: int = 2, pool_max: int = 10, **_: Any) -> PostgresDatabase:
        try:
            pool = await asyncpg.create_pool(url, min_size=pool_min, max_size=pool_max, init=_init_connection)
        except (OSError, asyncpg.PostgresError) as exc:
            raise DatabaseError(f"cannot connect to Postgres: {exc}") from exc
        return cls(pool)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_Tx]:
        async with self._pool.acquire() as conn:
            tx = _Tx(conn)
            async with conn.transaction():
                yield tx
                await tx.run_deferred(tx)  # the batch's deferred writes (device events), just before COMMIT
        await tx.run_after_commit()  # the connection is back in the pool: announcing holds none

    async def run_in_transaction(self, work: TransactionWork[T]) -> T:
        async with self.transaction() as tx:
            return await work(tx)

    async def lock_for_migrations(self, tx: _Conn) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)

    async def close(self) -> None:
        await self._pool.close()

    def pool_usage(self) -> dict[str, int]:
        idle = self._pool.get_idle_size()
        return {"busy": self._pool.get_size() - idle, "idle": idle, "max": self._pool.get_max_size()}
