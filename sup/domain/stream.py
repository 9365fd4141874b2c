"""Each device's durable event stream: where it stands, replay, acknowledgements and resume.

The WebSocket gateway is one reader of the stream; what a cursor means, what was pruned and
when a client must resync are decided here, next to the events themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sup.clock import Clock
from sup.db.database import Database, Transaction
from sup.db.events import EventStore
from sup.errors import Code, DomainError

log = logging.getLogger("sup.stream")


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a connection starts: events after `cursor` are replayed, up to `stream_end` and beyond."""

    cursor: int
    stream_end: int
    resync: bool  # events the client asked for were pruned: it must refetch state over REST


class EventStream:
    def __init__(self, db: Database, events: EventStore, clock: Clock, *, retention_ms: int) -> None:
        self._db = db
        self._events = events
        self._clock = clock
        self._retention_ms = retention_ms

    async def resume(self, device_id: str, cursor: int | None) -> Resume:
        """Where a device resumes: from its cursor, else from its last acknowledgement."""
        last, acked = await self._events.positions(self._db, device_id)
        cursor = acked if cursor is None else cursor
        if cursor > last:
            raise DomainError(Code.VALIDATION_FAILED, f"cursor {cursor} is beyond this device's stream ({last}).")
        first_kept = await self._events.first_seq(self._db, device_id)
        if first_kept is None:
            pruned = cursor < last  # everything up to the end is gone
            start = last
        else:
            pruned = cursor < first_kept - 1
            start = first_kept - 1
        return Resume(start if pruned else cursor, last, pruned)

    async def read(self, device_id: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` stored events after `after_seq`, in order, as the frames clients get."""
        return await self._events.read(self._db, device_id, after_seq, limit)

    async def ack_many(self, acks: Mapping[str, int]) -> None:
        """Each device has everything up to its seq: it resumes after it, and what is older may be pruned.

        One transaction for all of them: acknowledgements come in from every socket, and a commit each
        cost SQLite an fsync each, in the writer that also commits the sends.
        """
        if not acks:
            return

        async def work(tx: Transaction) -> None:
            await self._events.ack_many(tx, acks)

        await self._db.run_in_transaction(work)

    async def stream_ends(self, device_ids: Sequence[str]) -> dict[str, int]:
        """The last seq of each device that is still active; revoked devices are left out."""
        return await self._events.last_seqs_active(self._db, device_ids)

    async def prune(self) -> int:
        """Drop acknowledged events older than the retention; unacknowledged ones always stay."""
        async with self._db.transaction() as tx:
            removed = await self._events.prune(tx, self._clock.now_ms() - self._retention_ms)
        if removed:
            log.info("pruned %d acknowledged events", removed)
        return removed
