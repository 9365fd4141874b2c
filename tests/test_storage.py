"""The database contract: the same behaviour from SQLite and Postgres."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from pathlib import Path

import pytest

from sup.db import migrations
from sup.db.database import Database, IntegrityError, open_database
from sup.db.events import EventStore


@pytest.fixture
def db(kv_db: Database) -> Database:
    return kv_db


async def test_commit_and_rollback(db: Database):
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "a", 1)
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "b", 2)
            raise RuntimeError("boom")
    assert [tuple(r) for r in await db.fetch("SELECT k, v FROM kv ORDER BY k")] == [("a", 1)]


async def test_rowcount_fetchval_fetchrow_and_reused_placeholders(db: Database):
    async with db.transaction() as tx:
        for i in range(3):
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", f"k{i}", i)
        assert await tx.execute("UPDATE kv SET v = v + $1 WHERE v >= $1", 1) == 2
    assert await db.fetchval("SELECT COUNT(*) FROM kv WHERE v > $1 OR v = $1", 1) == 2
    assert await db.fetchrow("SELECT k FROM kv WHERE k = $1", "missing") is None
    row = await db.fetchrow("SELECT k, v FROM kv WHERE k = $1", "k2")
    assert (row["k"], row["v"]) == ("k2", 3)
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "none") is None


async def test_upsert_and_returning(db: Database):
    sql = "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO NOTHING RETURNING v"
    async with db.transaction() as tx:
        assert (await tx.fetchrow(sql, "x", 5))["v"] == 5
        assert await tx.fetchrow(sql, "x", 6) is None
        updated = await tx.fetchrow(
            "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = kv.v + $2 RETURNING v",
            "x",
            1,
        )
        assert updated["v"] == 6


async def test_integrity_errors_are_one_type(db: Database):
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "dup", 1)
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "dup", 2)
    with pytest.raises(IntegrityError):
        await db.execute(
            "INSERT INTO user_devices (id, user_id, name, created_at, last_seen_at) VALUES ($1, $2, 'x', 0, 0)",
            "00000000-0000-7000-8000-000000000001",
            "00000000-0000-7000-8000-000000000002",
        )
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "dup") == 1


async def test_bytes_round_trip(db: Database):
    blob = bytes(range(256))
    await db.execute("INSERT INTO invites (code_hash, created_at, max_uses) VALUES ($1, 0, 1)", blob)
    assert bytes(await db.fetchval("SELECT code_hash FROM invites WHERE code_hash = $1", blob)) == blob


async def test_concurrent_transactions_serialise_increments(db: Database):
    await db.execute("INSERT INTO kv (k, v) VALUES ($1, 0)", "counter")

    async def bump():
        async with db.transaction() as tx:
            await tx.execute("UPDATE kv SET v = v + 1 WHERE k = $1", "counter")

    await asyncio.gather(*[bump() for _ in range(50)])
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "counter") == 50


async def test_reads_see_committed_writes(db: Database):
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, 1)", "seen")
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "seen") == 1


async def test_a_newer_schema_is_refused(database_url: str, tmp_path: Path):
    if database_url.startswith("sqlite"):
        database_url = f"sqlite:///{tmp_path / 'new.db'}"
    db = await open_database(database_url)
    try:
        await migrations.migrate_up(db, 0)
        await db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'future', 0)")
        with pytest.raises(migrations.SchemaTooNew):
            await migrations.migrate_up(db, 0)
        await db.execute("DELETE FROM schema_migrations WHERE version = 9999")
    finally:
        await db.close()


async def test_concurrent_migrations_apply_once(fresh_postgres, tmp_path: Path):
    url = await fresh_postgres.create()
    dbs = [await open_database(url) for _ in range(3)]
    try:
        results = await asyncio.gather(*[migrations.migrate_up(db, 0) for db in dbs])
        assert sum(len(r) for r in results) == len(migrations.discover())
    finally:
        for db in dbs:
            await db.close()


async def test_a_cancelled_transaction_leaves_the_database_usable(db: Database):
    """Cancellation at any point (a client gone, a shutdown) must not leave a transaction open."""

    async def write(i: int) -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", f"c{i}", i)
            await asyncio.sleep(0)

    for delay_steps in range(8):
        task = asyncio.create_task(write(delay_steps))
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", "after", 1)
    assert await db.fetchval("SELECT v FROM kv WHERE k = $1", "after") == 1


async def test_concurrent_event_appends_to_overlapping_devices_never_deadlock(db: Database):
    """Two logins of one user, or a login and a message batch, bump the seqs of overlapping devices.

    Postgres locks an UPDATE's rows in the order its scan meets them; without locking in id order
    first, such transactions deadlock now and then (seen in CI as a 500 on a login).
    """
    store = EventStore(db.dialect)
    user = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO users (id, username, username_key, password_hash, created_at, updated_at)"
        " VALUES ($1, $2, $2, 'x', 0, 0)",
        user,
        f"u{user[:8]}",
    )
    devices = [str(uuid.uuid4()) for _ in range(30)]
    for device in devices:
        await db.execute(
            "INSERT INTO user_devices (id, user_id, name, created_at, last_seen_at) VALUES ($1, $2, 'd', 0, 0)",
            device,
            user,
        )

    async def appends(rounds: int) -> None:
        for _ in range(rounds):
            chosen = random.sample(devices, 20)
            async with db.transaction() as tx:
                await store.bump_seqs(tx, dict.fromkeys(chosen, 2))
                await asyncio.sleep(0)  # hold the locks across a switch, as a real transaction does

    await asyncio.gather(*(appends(15) for _ in range(8)))
    seqs = await db.fetch("SELECT last_event_seq FROM user_devices WHERE user_id = $1", user)
    assert sum(row["last_event_seq"] for row in seqs) == 8 * 15 * 20 * 2  # every bump counted once
