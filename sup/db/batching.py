"""Group commit: many concurrent writes in one transaction, one fsync.

Callers submit an operation (an async function of the transaction that awaits only the
transaction: on SQLite the whole batch runs in the database's thread). A single worker
takes everything queued, runs each operation inside its own SAVEPOINT (so one refused
operation does not undo the others), commits once, hands the batch's deliveries to
`on_commit`, then answers every caller. Nobody is answered before the commit, so an
answer means durable; and an idle server commits a lone write at once, adding no delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from sup.db.database import Database, Queryable
from sup.db.events import Delivery

log = logging.getLogger("sup.batch")

T = TypeVar("T")
Operation = Callable[[Queryable], Awaitable[tuple[T, Sequence[Delivery]]]]


class WriteBatcher:
    def __init__(
        self,
        db: Database,
        on_commit: Callable[[Sequence[Delivery]], Awaitable[None]],
        *,
        max_batch: int = 256,
    ) -> None:
        self._db = db
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: deque[tuple[Operation[Any], asyncio.Future[Any]]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

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
        deliveries: list[Delivery] = []

        async def run_all(tx: Queryable) -> None:
            for index, (operation, _) in enumerate(batch):
                # One statement group per operation: on Postgres every round trip counts. The
                # commit releases the last savepoint.
                await tx.execute_script("SAVEPOINT op" if index == 0 else "RELEASE SAVEPOINT op; SAVEPOINT op")
                try:
                    value, produced = await operation(tx)
                except Exception as exc:  # refused or failed: undo this one only
                    await tx.execute("ROLLBACK TO SAVEPOINT op")
                    outcomes.append((False, exc))
                    continue
                outcomes.append((True, value))
                deliveries.extend(produced)

        try:
            await self._db.run_in_transaction(run_all)
        except Exception as exc:  # the commit itself failed: nobody's write is durable
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if deliveries:
            try:
                await self._on_commit(deliveries)
            except Exception:  # delivery is best effort; the database catch-up covers it
                log.exception("announcing committed events failed")
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
