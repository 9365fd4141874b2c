"""Group commit: many concurrent writes in one transaction, one fsync.

Callers submit an operation (a `TransactionWork`: it awaits only the transaction, since
on SQLite the whole batch runs in the database's thread). A single worker takes
everything queued, runs each operation inside its own SAVEPOINT (so one refused
operation does not undo the others, nor what it queued with `tx.after_commit`), commits
once, runs the after-commit work of the operations that stood, then answers every
caller. Nobody is answered before the commit, so an answer means durable; and an idle
server commits a lone write at once, adding no delay.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sup.db.database import Database, Transaction, TransactionWork
from sup.observe.metrics import Metrics

log = logging.getLogger("sup.batch")

T = TypeVar("T")
Operation = TransactionWork[T]


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
    guard: Guard | None = None
    key: str = ""


class WriteBatcher:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: deque[_Queued] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.metrics: Metrics | None = None  # set by the App

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="write-batcher")

    async def close(self) -> None:
        """Finish what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    def enqueue(self, operation: Operation[T], guard: Guard | None = None, key: str = "") -> asyncio.Future[T]:
        """Queue an operation; the future resolves (or fails) after its batch's commit.

        With a guard, the operation runs only if `key` holds, as read in its batch's transaction.
        Synchronous, so a caller that queues several operations fixes their order.
        """
        if self._closing:
            raise RuntimeError("the server is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Queued(operation, future, guard, key))
        self._wakeup.set()
        return future

    async def submit(self, operation: Operation[T], guard: Guard | None = None, key: str = "") -> T:
        # Shielded: a caller that gives up does not stop the write; a retry finds it.
        return await asyncio.shield(self.enqueue(operation, guard, key))

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
                try:
                    await self._commit(batch)
                except Exception:  # the worker must outlive any one batch
                    log.exception("write batch failed")
            if self._closing and not self._queue:
                return

    async def _commit(self, batch: list[_Queued]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        async def run_all(tx: Transaction) -> None:
            held = await _check_guards(tx, batch)
            savepoint = False
            for item in batch:
                if item.guard is not None and item.key not in held[item.guard]:
                    outcomes.append((False, item.guard.refusal(item.key)))
                    continue
                # One statement group per operation: on Postgres every round trip counts. The
                # commit releases the last savepoint.
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
            await self._db.run_in_transaction(run_all)
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
