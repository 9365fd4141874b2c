"""Group commit (`WriteBatcher`) on both databases: what one refused operation undoes, order, no deadlock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from sup.app.backends import default_batch_workers
from sup.db.batching import WriteBatcher
from sup.db.database import Database, IntegrityError, Transaction, open_database
from sup.db.events import EventStore
from sup.delivery import Delivery
from sup.domain.events import EventWriter


@pytest.fixture
def db(kv_db: Database) -> Database:
    return kv_db


class _Heard:
    """An announcer that records what was announced (after commits)."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        self.deliveries += deliveries

    async def announce_ephemeral(self, user_ids, payload) -> None:  # pragma: no cover - unused here
        pass


async def _device(db: Database) -> str:
    user, device = str(uuid.uuid4()), str(uuid.uuid4())
    await db.execute(
        "INSERT INTO users (id, username, username_key, password_hash, created_at, updated_at)"
        " VALUES ($1, $2, $2, 'x', 0, 0)",
        user,
        f"u{user[:8]}",
    )
    await db.execute(
        "INSERT INTO user_devices (id, user_id, name, created_at, last_seen_at) VALUES ($1, $2, 'd', 0, 0)",
        device,
        user,
    )
    return device


def _put(k: str, v: int, *, then_fail: Exception | None = None, fail_first: Exception | None = None):
    async def operation(tx: Transaction) -> str:
        if fail_first is not None:
            raise fail_first
        await tx.execute("INSERT INTO kv (k, v) VALUES ($1, $2)", k, v)
        if then_fail is not None:
            raise then_fail
        return k

    return operation


async def test_a_refused_operation_undoes_only_itself(db: Database):
    """Refused before writing, after writing, or by the database itself: the others of the batch stand."""
    await db.execute("INSERT INTO kv (k, v) VALUES ('taken', 0)")
    batcher = WriteBatcher(db)
    await batcher.start()
    try:
        futures = [
            batcher.enqueue(_put("a", 1)),
            batcher.enqueue(_put("b", 2, fail_first=ValueError("refused before writing"))),
            batcher.enqueue(_put("c", 3, then_fail=ValueError("refused after writing"))),
            batcher.enqueue(_put("taken", 4)),  # a unique-key violation: on Postgres it aborts the transaction
            batcher.enqueue(_put("d", 5)),
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
    finally:
        await batcher.close()
    assert results[0] == "a" and results[4] == "d"
    assert isinstance(results[1], ValueError) and str(results[1]) == "refused before writing"
    assert isinstance(results[2], ValueError) and str(results[2]) == "refused after writing"
    assert isinstance(results[3], IntegrityError)
    rows = {r["k"]: r["v"] for r in await db.fetch("SELECT k, v FROM kv")}
    assert rows == {"taken": 0, "a": 1, "d": 5}


async def test_deferred_events_of_a_refused_operation_are_dropped(db: Database):
    """Events are numbered at the batch's end: one refused operation's events leave no gap and are never heard."""
    device = await _device(db)
    heard = _Heard()
    writer = EventWriter(EventStore(db.dialect), heard)

    def append(body: bytes, *, then_fail: bool = False, write_first: bool = False):
        async def operation(tx: Transaction) -> None:
            if write_first:
                await tx.execute("INSERT INTO kv (k, v) VALUES ($1, 0)", body.decode())
            await writer.append(tx, "test.event", [device], b'{"n":"%s"}' % body, 0)
            if then_fail:
                raise ValueError("refused")

        return operation

    batcher = WriteBatcher(db)
    await batcher.start()
    try:
        results = await asyncio.gather(
            batcher.enqueue(append(b"one")),
            batcher.enqueue(append(b"two", then_fail=True)),  # nothing written: no rerun
            batcher.enqueue(append(b"three")),
            batcher.enqueue(append(b"four", then_fail=True, write_first=True)),  # the batch runs again
            batcher.enqueue(append(b"five")),
            return_exceptions=True,
        )
    finally:
        await batcher.close()
    assert [isinstance(r, ValueError) for r in results] == [False, True, False, True, False]
    stored = await EventStore(db.dialect).read(db, device, 0, 10)
    assert [seq for seq, _ in stored] == [1, 2, 3]
    assert [b'"n":"one"' in p for _, p in stored] == [True, False, False]
    assert b'"n":"three"' in stored[1][1] and b'"n":"five"' in stored[2][1]
    assert [(d.seq, d.payload) for d in heard.deliveries] == stored
    assert stored[1][1] == b'{"type":"test.event","cursor":2,"n":"three"}'
    assert await db.fetchval("SELECT last_event_seq FROM user_devices WHERE id = $1", device) == 3


async def test_each_chat_keeps_its_order_across_workers(db: Database):
    """Sharded by chat over several workers, a chat's operations still apply in the order queued."""
    chats = [str(uuid.uuid4()) for _ in range(12)]
    for c in chats:
        await db.execute("INSERT INTO kv (k, v) VALUES ($1, 0)", c)

    def step(chat: str, n: int):
        async def operation(tx: Transaction) -> None:
            # Applies only on top of the step before: out of order, it raises and the test sees it.
            if await tx.execute("UPDATE kv SET v = $2 WHERE k = $1 AND v = $2 - 1", chat, n) != 1:
                raise AssertionError(f"{chat}: step {n} out of order")

        return operation

    batcher = WriteBatcher(db, workers=4, max_batch=7)
    await batcher.start()
    try:
        futures = [batcher.enqueue(step(c, n), chat_id=c) for n in range(1, 31) for c in chats]
        await asyncio.gather(*futures)
    finally:
        await batcher.close()
    assert {r["k"]: r["v"] for r in await db.fetch("SELECT k, v FROM kv")} == dict.fromkeys(chats, 30)


async def test_batches_of_two_processes_into_the_same_chats_never_deadlock(database_url: str, db: Database):
    """Two processes' batches bump the same chats' seqs in opposite orders: the chats are locked in id order first.

    Without that, Postgres finds a deadlock and aborts one batch: every send in it fails.
    """
    chats = sorted(str(uuid.uuid4()) for _ in range(4))
    for c in chats:
        await db.execute(
            "INSERT INTO chats (id, type, encrypted, created_at, updated_at) VALUES ($1, 'group', $2, 0, 0)",
            c,
            False,
        )
    other = await open_database(database_url)  # a second process's connections

    def bump(chat: str):
        async def operation(tx: Transaction) -> int:
            seq = await tx.fetchval("UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq", chat)
            if db.dialect == "postgres":  # hold the row a moment, as a busy batch does, so that the batches overlap
                await tx.execute("SELECT pg_sleep(0.02)")
            return seq

        return operation

    first, second = WriteBatcher(db), WriteBatcher(other)
    await first.start()
    await second.start()
    try:
        for _ in range(5):
            futures = [first.enqueue(bump(c), chat_id=c) for c in chats]
            futures += [second.enqueue(bump(c), chat_id=c) for c in reversed(chats)]
            await asyncio.gather(*futures)
    finally:
        await first.close()
        await second.close()
        await other.close()
    seqs = await db.fetch("SELECT last_seq FROM chats WHERE id IN ($1, $2, $3, $4)", *chats)
    assert [r["last_seq"] for r in seqs] == [10] * 4


def test_group_commit_lanes_by_default():
    # One writer on SQLite; on Postgres the lanes of all processes add up, so one each when several share a bus.
    assert default_batch_workers("sqlite", "memory://") == 1
    assert default_batch_workers("sqlite", "redis://127.0.0.1:6379/0") == 1
    assert default_batch_workers("postgres", "memory://") == 4
    assert default_batch_workers("postgres", "redis://127.0.0.1:6379/0") == 1
