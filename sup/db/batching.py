"""Group commit: many concurrent writes in one transaction, one fsync.

Callers submit an operation (a `TransactionWork`: it awaits only the transaction, since
on SQLite the whole batch runs in the database's thread). A worker takes everything
queued, runs each operation so that one refused operation does not undo the others (nor
what it queued with `tx.after_commit`), commits once, runs the after-commit work of the
operations that stood, then answers every caller. Nobody is answered before the commit,
so an answer means durable; and an idle server commits a lone write at once, adding no
delay.

Round trips are what a batch costs on Postgres, so:

- An operation runs without a SAVEPOINT of its own. One that is refused before it wrote
  anything (the usual refusal: a permission, a device list) leaves nothing to undo. Only
  when one fails after a write, or a statement itself failed (which aborts a Postgres
  transaction), is the batch rolled back and run again, each operation inside its own
  SAVEPOINT as before. Operations are transaction work: running one again is safe.
- Operations queued with a `chat_id` are sharded by it over `workers` batch workers (each
  chat always on the same one, so a chat's sends keep their order and their seqs), whose
  transactions overlap their round trips. On Postgres a batch of several chats first takes
  an advisory lock per chat, in order, and device rows are locked in id order at its end
  (see `EventWriter`): two batches, of this process or another, never wait on each other in
  a cycle.

An operation may name a `Guard` and a key (a send names "the sending device is active" and
its device id): a batch checks each guard once for every key its operations name, first thing
in its transaction, and refuses the operations whose key does not hold without running them.
One statement per batch, not one per operation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sup.db.database import AfterCommit, Database, Flush, Mark, Row, Transaction, TransactionWork
from sup.ids import is_uuid
from sup.observe.metrics import Metrics

log = logging.getLogger("sup.batch")

T = TypeVar("T")
Operation = TransactionWork[T]

# Transaction-scoped advisory locks, one per chat, taken in key order (unnest keeps the array's
# order): batches queue behind each other per chat before touching any row. Not row locks: those
# are written into the tuples (WAL, a dirtied page), which cost Postgres more than the send itself.
# A transaction outside the batcher that appends to a chat holds that one chat's row and no other,
# so it cannot close a cycle with a batch.
_LOCK_CHATS = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"


def _lock_key(chat_id: str) -> int:
    """A chat's advisory lock key: the last 64 bits of its id (random in a UUIDv7), as a signed bigint."""
    key = int(chat_id.replace("-", "")[16:], 16)
    return key - (1 << 64) if key >= 1 << 63 else key


class _RunAgainSafely(Exception):
    """An operation failed after writing (or a statement failed): roll back, run with savepoints."""


class _Watched:
    """The batch's transaction as one operation sees it: notes whether it wrote, or a statement failed."""

    def __init__(self, tx: Transaction) -> None:
        self._tx = tx
        self.wrote = False
        self.failed = False

    def _note(self, sql: str) -> None:
        if not self.wrote and sql.lstrip()[:6].upper() != "SELECT":
            self.wrote = True

    async def _run(self, call: Callable[..., Awaitable[T]], sql: str, *args: Any) -> T:
        self._note(sql)
        try:
            return await call(sql, *args)
        except BaseException:
            self.failed = True
            raise

    async def execute(self, sql: str, *args: Any) -> int:
        return await self._run(self._tx.execute, sql, *args)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        return await self._run(self._tx.fetch, sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        return await self._run(self._tx.fetchrow, sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._run(self._tx.fetchval, sql, *args)

    async def execute_script(self, script: str) -> None:
        self.wrote = True  # a script (a savepoint, a migration) writes, whatever its first word
        await self._run(self._tx.execute_script, script)

    def after_commit(self, work: AfterCommit) -> None:
        self._tx.after_commit(work)

    def defer(self, flush: Flush, item: Any) -> None:
        self._tx.defer(flush, item)

    def after_commit_mark(self) -> Mark:
        return self._tx.after_commit_mark()

    def drop_after_commit(self, mark: Mark) -> None:
        self._tx.drop_after_commit(mark)


class _Lane:
    """One batch worker: its queue, and the task that commits what is queued."""

    def __init__(self, batcher: WriteBatcher, index: int) -> None:
        self.batcher = batcher
        self.queue: deque[_Queued] = deque()
        self.wakeup = asyncio.Event()
        self.task = asyncio.create_task(self.run(), name=f"write-batcher-{index}")

    async def run(self) -> None:
        batcher = self.batcher
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(len(self.queue), batcher.max_batch))]
                try:
                    await batcher.commit(batch)
                except Exception:  # the worker must outlive any one batch
                    log.exception("write batch failed")
            if batcher.closing and not self.queue:
                return


@dataclass(frozen=True, eq=False)
class Guard:
    """A condition some operations need, checked once per batch for all the keys they name."""

    # Which of these keys hold, read in the batch's transaction.
    holding: Callable[[Transaction, list[str]], Awaitable[set[str]]]
    # The error an operation whose key does not hold fails with.
    refusal: Callable[[str], Exception]


@dataclass(frozen=True, slots=True)
class _Queued:
    operation: Operation[Any]
    future: asyncio.Future[Any]
    chat_id: str | None = None
    guard: Guard | None = None
    key: str = ""


class WriteBatcher:
    def __init__(self, db: Database, *, max_batch: int = 256, workers: int = 1) -> None:
        self._db = db
        self.max_batch = max_batch
        self._workers = max(1, workers)
        self._lanes: list[_Lane] = []
        self._lock_chats = db.dialect == "postgres"
        self.closing = False
        self.metrics: Metrics | None = None  # set by the App

    async def start(self) -> None:
        self._lanes = [_Lane(self, i) for i in range(self._workers)]

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self.closing = True
        for lane in self._lanes:
            lane.wakeup.set()
        await asyncio.gather(*(lane.task for lane in self._lanes))

    def enqueue(
        self, operation: Operation[T], *, chat_id: str | None = None, guard: Guard | None = None, key: str = ""
    ) -> asyncio.Future[T]:
        """Queue an operation; the future resolves (or fails) after its batch's commit.

        With a guard, the operation runs only if `key` holds, as read in its batch's transaction.
        Synchronous, so a caller that queues several operations fixes their order (those of one
        chat, or without a chat, always share a worker).
        """
        if self.closing or not self._lanes:
            raise RuntimeError("the server is shutting down" if self.closing else "the write batcher is not started")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        lane = self._lanes[hash(chat_id) % len(self._lanes) if chat_id is not None else 0]
        lane.queue.append(_Queued(operation, future, chat_id, guard, key))
        lane.wakeup.set()
        return future

    async def submit(
        self, operation: Operation[T], *, chat_id: str | None = None, guard: Guard | None = None, key: str = ""
    ) -> T:
        # Shielded: a caller that gives up does not stop the write; a retry finds it.
        return await asyncio.shield(self.enqueue(operation, chat_id=chat_id, guard=guard, key=key))

    async def commit(self, batch: list[_Queued]) -> None:
        # Only ids that can be a chat's: one bad id would fail the lock, and with it the whole batch.
        wanted = {_lock_key(q.chat_id) for q in batch if q.chat_id is not None and is_uuid(q.chat_id)}
        keys = sorted(wanted) if self._lock_chats else []
        # A batch of one chat holds one chat lock at most while it waits (for device rows, at its end,
        # which nobody holds while waiting for a chat): no cycle, no need to lock first.
        chats = keys if len(keys) > 1 else []
        outcomes: list[tuple[bool, Any]] = []  # in the batch's order

        async def admitted(tx: Transaction) -> list[_Queued | None]:
            """The batch after its chat locks and guards: None where a guard refused (its outcome noted)."""
            outcomes.clear()
            if chats:
                await tx.fetch(_LOCK_CHATS, chats)
            held = await _check_guards(tx, batch)
            out: list[_Queued | None] = []
            for item in batch:
                refused = item.guard is not None and item.key not in held[item.guard]
                out.append(None if refused else item)
            return out

        def refuse(item: _Queued) -> None:
            assert item.guard is not None
            outcomes.append((False, item.guard.refusal(item.key)))

        async def run_fast(tx: Transaction) -> None:
            for queued, item in zip(batch, await admitted(tx), strict=True):
                if item is None:
                    refuse(queued)
                    continue
                watched = _Watched(tx)
                mark = tx.after_commit_mark()
                try:
                    value = await item.operation(watched)  # type: ignore[arg-type]
                except Exception as exc:
                    if watched.wrote or watched.failed:
                        raise _RunAgainSafely from exc
                    tx.drop_after_commit(mark)  # refused before writing anything: nothing to undo
                    outcomes.append((False, exc))
                    continue
                outcomes.append((True, value))

        async def run_safely(tx: Transaction) -> None:
            savepoint = False
            for queued, item in zip(batch, await admitted(tx), strict=True):
                if item is None:
                    refuse(queued)
                    continue
                # One statement group per operation: the commit releases the last savepoint.
                await tx.execute_script("RELEASE SAVEPOINT op; SAVEPOINT op" if savepoint else "SAVEPOINT op")
                savepoint = True
                mark = tx.after_commit_mark()
                try:
                    value = await item.operation(tx)
                except Exception as exc:  # refused or failed: undo this one only
                    await tx.execute("ROLLBACK TO SAVEPOINT op")
                    tx.drop_after_commit(mark)
                    outcomes.append((False, exc))
                    continue
                outcomes.append((True, value))

        started = time.perf_counter()
        try:
            try:
                await self._db.run_in_transaction(run_fast)
            except _RunAgainSafely:
                await self._db.run_in_transaction(run_safely)
        except Exception as exc:  # the commit itself failed: nobody's write is durable
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if self.metrics is not None:
            self.metrics.batch_committed(len(batch), time.perf_counter() - started)
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)


async def _check_guards(tx: Transaction, batch: list[_Queued]) -> dict[Guard, set[str]]:
    """Each guard's keys that hold, one statement per guard however many operations name it,
    read before any operation runs (so a refused one costs no savepoint)."""
    keys: dict[Guard, set[str]] = {}
    for item in batch:
        if item.guard is not None:
            keys.setdefault(item.guard, set()).add(item.key)
    return {guard: await guard.holding(tx, sorted(wanted)) for guard, wanted in keys.items()}
