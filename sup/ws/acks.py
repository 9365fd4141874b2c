"""Acknowledgements from all connections, stored together: one write per interval, not one per device."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("sup.ws")


class AckWriter:
    """Stores acknowledgements, at most one write per interval per device, and every device's in
    the same write: one transaction (one commit, one fsync on SQLite) per interval, not one per device."""

    def __init__(self, write: Callable[[dict[str, int]], Awaitable[None]], interval: float = 1.0) -> None:
        self._write = write
        self._interval = interval
        self._due: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._writing: set[asyncio.Future[None]] = set()  # writes under way

    def ack(self, device_id: str, seq: int) -> None:
        if seq > self._due.get(device_id, -1):
            self._due[device_id] = seq
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later(), name="ack-writer")

    async def _later(self) -> None:
        await asyncio.sleep(self._interval)
        await self.flush()

    async def flush_device(self, device_id: str) -> None:
        """Store this device's last ack now (its socket closed: the next one resumes from it)."""
        seq = self._due.pop(device_id, None)
        if seq is not None:
            await self._store({device_id: seq})

    async def flush(self) -> None:
        """Store every ack not yet stored; return once they and any write already under way are committed."""
        due, self._due = self._due, {}
        if due:
            await self._store(due)
        if self._writing:  # a closed socket's, or the interval's, taken before this call: stored by now too
            await asyncio.gather(*list(self._writing), return_exceptions=True)

    async def _store(self, due: dict[str, int]) -> None:
        # Shielded: a caller cancelled (the interval's task, at close) does not roll back acks it took.
        write = asyncio.ensure_future(self._logged(due))
        self._writing.add(write)
        write.add_done_callback(self._writing.discard)
        await asyncio.shield(write)

    async def _logged(self, due: dict[str, int]) -> None:
        try:
            await self._write(due)
        except Exception:  # an unsaved ack only means some events are sent again
            log.warning("could not store the acks of %d device(s)", len(due), exc_info=True)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
