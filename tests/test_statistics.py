"""A new Postgres database's tables get statistics from the server as they fill, not a minute later.

The migrations leave statistics that describe empty tables; a statement prepared and run a few times
then keeps a generic plan costed on an empty table (a sequential scan) until the table is analysed
again. These tests reproduce that with a prepared statement and check that the server's look at
outgrown tables ends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from sup.db import migrations
from sup.db.database import Database, open_database
from sup.db.statistics import analyse_filled_tables, watch_first_statistics
from tests.conftest import FreshPostgres

_LOOKUP = "SELECT v FROM filled WHERE k = $1"


@pytest.fixture
async def new_database(fresh_postgres: FreshPostgres) -> AsyncIterator[tuple[Database, str]]:
    url = await fresh_postgres.create()
    db = await open_database(url)
    await migrations.migrate_up(db, 0)
    # As the migrations leave `messages`: analysed while empty, so its statistics say "no rows" (a
    # table never analysed would be assumed to have some), and the planner believes them.
    await db.execute("CREATE TABLE filled (k INTEGER NOT NULL, v INTEGER NOT NULL)")
    await db.execute("CREATE UNIQUE INDEX filled_k ON filled (k)")
    await db.execute("ANALYZE filled")
    yield db, url
    await db.close()


async def _fill(conn: asyncpg.Connection, rows: int) -> None:
    await conn.execute("INSERT INTO filled (k, v) SELECT n, n FROM generate_series(1, $1) AS n", rows)
    await conn.execute("SELECT pg_stat_force_next_flush()")  # the counts reach pg_stat_user_tables now


async def _analysed(db: Database, table: str) -> bool:
    """Whether `table`'s statistics count rows (the fixture's ANALYZE counted none)."""
    return bool(await db.fetchval("SELECT reltuples > 0 FROM pg_class WHERE relname = $1", table))


async def _plan(conn: asyncpg.Connection, statement: str) -> str:
    rows = await conn.fetch(f"EXPLAIN EXECUTE {statement}(1)")
    return "\n".join(row[0] for row in rows)


async def test_a_filled_table_gets_statistics_and_its_prepared_plan_uses_the_index(new_database) -> None:
    db, url = new_database
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"PREPARE lookup AS {_LOOKUP}")
        for _ in range(6):  # after five runs Postgres keeps the generic plan, made on the empty table
            await conn.execute("EXECUTE lookup(1)")
        await _fill(conn, 5000)
        assert "Seq Scan" in await _plan(conn, "lookup")  # the defect: the whole table for one row

        analysed: list[str] = []
        for _ in range(150):  # the counts reach the statistics views within a second or so
            analysed = await analyse_filled_tables(db)
            if analysed:
                break
            await asyncio.sleep(0.1)
        assert analysed == ["filled"]  # migrated tables nobody wrote to are left to autovacuum
        never = "SELECT last_analyze IS NULL FROM pg_stat_user_tables WHERE relname = 'users'"
        assert await db.fetchval(never)
        assert "Index Scan" in await _plan(conn, "lookup")
        assert await analyse_filled_tables(db) == []  # its statistics are current again
    finally:
        await conn.close()


async def test_a_table_below_the_threshold_is_left_alone(new_database) -> None:
    db, url = new_database
    conn = await asyncpg.connect(url)
    try:
        await _fill(conn, 50)
        await asyncio.sleep(1.2)
        assert await analyse_filled_tables(db) == []
        assert not await _analysed(db, "filled")
    finally:
        await conn.close()


async def test_the_watch_analyses_what_fills_while_it_runs(new_database) -> None:
    db, url = new_database
    watch = asyncio.create_task(watch_first_statistics(db, interval=0.05, for_seconds=30))
    conn = await asyncpg.connect(url)
    try:
        await _fill(conn, 2000)
        for _ in range(300):
            if await _analysed(db, "filled"):
                break
            await asyncio.sleep(0.05)
        assert await _analysed(db, "filled")
        assert not watch.done()  # it goes on looking until its time is up
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await conn.close()


async def test_the_watch_ends_when_its_time_is_up(new_database) -> None:
    db, _ = new_database
    await asyncio.wait_for(watch_first_statistics(db, interval=0.01, for_seconds=0.05), timeout=5)
