"""This process among the others of one install: the tag it signs its shared state with, and
stopping the background tasks it runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import Any


def new_origin() -> str:
    """A tag for what this process writes to shared state (Redis, the bus), unique among its peers."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has stopped; None: there is none to stop."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
