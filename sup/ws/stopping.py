"""Stopping the WebSocket side's background tasks: the hub's loops, a connection's pump, typing relays."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` (None: there is nothing to stop) and wait until it has ended; that it was
    cancelled is no error, but what it raised before is."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
