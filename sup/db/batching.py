"""Group commit: many concurrent writes in one transaction, one fsync.

Callers submit an operation (a `TransactionWork`: it awaits only the transaction, since
on SQLite the whole batch runs in the database's thread). A single worker takes
everything queued, runs each operation inside its own SAVEPOINT (so one refused
operation does not undo the others, nor what it queued with `tx.after_commit`), commits
once, runs the after-commit work of the operations that stood, then answers every
caller. Nobody is answered before the commit, so an answer means durable; and an idle
server commits a lone write at once, adding no delay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, TypeVar

from sup.db.database import Database, Transaction, TransactionWork
from sup.observe.metrics import Metrics

log = logging.getLogger("sup.batch")

T = TypeVar("T")
Operation = TransactionWork[T]


class WriteBatcher:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: deque[tuple[Operation[Any], asyncio.Future[Any]]] = deque()
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

    def enqueue(self, operation: Operation[T]) -> asyncio.Future[T]:
        """Queue an operation; the future resolves (or fails) after its batch's commit.

        Synchronous, so a caller that queues several operations fixes their order.
        """
        if self._closing:
            raise RuntimeError("the server is shutting down")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((operation, future))
        self._wakeup.set()
        return future

    async def submit(self, operation: Operation[T]) -> T:
        # Shielded: a caller that gives up does not stop the write; a retry finds it.
        return await asyncio.shield(self.enqueue(operation))

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

    async def _commit(self, batch: list[tuple[Operation[Any], asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        async def run_all(tx: Transaction) -> None:
            for index, (operation, _) in enumerate(batch):
                # One statement group per operation: on Postgres every round trip counts. The
                # commit releases the last savepoint.
                await tx.execute_script("SAVEPOINT op" if index == 0 else "RELEASE SAVEPOINT op; SAVEPOINT op")
                mark = tx.after_commit_mark()
                try:
                    value = await operation(tx)
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
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if self.metrics is not None:
            self.metrics.batch_committed(len(batch), time.perf_counter() - started)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
