"""What `sup chat` does in the background: send the outbox when it can, and send read receipts.

- `Outgoing`: every line typed goes to the client's outbox first (in the store, with its client_id), then
  this loop sends the outbox in order. While the server cannot be reached it tries again, waiting longer
  each time up to RETRY_MAX seconds, and says once that messages are queued; what was queued survives a
  restart of `sup chat` and is sent when the connection is back.
- `ReadMarks`: a chat's read marker is moved when its messages have been shown while it was the current
  chat, once for a burst of messages (READ_DELAY seconds after the first), not once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from sup.client.client import Client, Queued
from sup.client.http import ApiError, SessionEnded
from sup.client.outbox import Flushed
from sup.client.terminal.view import clean

log = logging.getLogger("sup.client.terminal")

RETRY_MIN = 0.5
RETRY_MAX = 5.0  # seconds between attempts while the server is away: it is back within this of returning
READ_DELAY = 0.5
STOP_WAIT = 5.0  # at quit, how long a send under way may take to finish


class Outgoing:
    """The outbox sender: kicked when a line is queued, retrying by itself while messages wait."""

    def __init__(
        self,
        client: Client,
        say: Callable[[str], None],
        on_sent: Callable[[Queued, dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.client = client
        self.say = say
        self.on_sent = on_sent
        self.offline = False  # the last attempt could not reach the server
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush: asyncio.Future[Flushed] | None = None

    def start(self) -> None:
        self._kick.set()  # what an earlier session left queued goes first
        self._task = asyncio.create_task(self._run(), name="sup-chat-outbox")

    def kick(self) -> None:
        self._kick.set()

    async def stop(self) -> None:
        """At quit: let a send under way finish and send what is queued (briefly, unless the server is
        away), so that `echo hi | sup chat` sends; what is left stays queued for the next session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            if self._flush is not None:  # its answer may be on the way: the message leaves the outbox then
                await asyncio.wait_for(asyncio.shield(self._flush), STOP_WAIT)
            if not self.offline:
                await asyncio.wait_for(self._once(), STOP_WAIT)
        with contextlib.suppress(Exception):
            queued = await self.client.queued()
            if held := sum(1 for q in queued if q.waiting_for):
                self.say(
                    f"-- {_count(held)} still waiting for a first device: sent once there is one, when sup chat runs"
                )
            if waiting := len(queued) - held:
                self.say(f"-- {_count(waiting)} still queued: sent the next time sup chat runs")

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), delay if self.offline else None)
            self._kick.clear()
            try:
                await self._once()
            except SessionEnded:
                return  # the event stream ends too, and says so
            delay = min(delay * 2, RETRY_MAX) if self.offline else RETRY_MIN

    async def _once(self) -> None:
        """Send the outbox once, and say what came of it."""
        self._flush = asyncio.ensure_future(self.client.send_queued())
        try:
            done = await asyncio.shield(self._flush)  # a cancelled loop leaves the send to finish
        finally:
            if self._flush.done():
                self._flush = None
        for queued, sent in done.sent:
            await self.on_sent(queued, sent)
        for queued, error in done.refused:
            if not queued.waiting_for:  # one that waited for a device: the client says it (QueuedMessageDropped)
                self.say(f"-- not sent ({_reason(error)}): {clean(queued.text)}")
        if done.error is None:
            if self.offline and done.sent:
                self.say("-- the server is back: the queued messages are sent")
            self.offline = False
            return
        if not self.offline:
            self.say(
                f"-- {_count(done.waiting)} queued: the server cannot be reached ({_reason(done.error)});"
                " they are sent, in order, when the connection is back"
            )
        self.offline = True


class ReadMarks:
    """Read receipts, coalesced: the highest seq shown per chat, sent once per burst."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._due: dict[str, int] = {}
        self._sent: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def seen(self, chat_id: str, seq: int) -> None:
        if seq <= max(self._due.get(chat_id, 0), self._sent.get(chat_id, 0)):
            return
        self._due[chat_id] = seq
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later(), name="sup-chat-read-marks")

    async def _later(self) -> None:
        await asyncio.sleep(READ_DELAY)
        await self.flush()

    async def flush(self) -> None:
        """Send what is due now (a marker that cannot be sent stays due, for the next time)."""
        for chat_id, seq in list(self._due.items()):
            try:
                self._sent[chat_id] = await self.client.mark_read(chat_id, seq)
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                log.info("read marker of chat %s not sent: %r", chat_id, error)
                continue
            if self._due.get(chat_id) == seq:
                del self._due[chat_id]

    async def stop(self) -> None:
        """Send what is due (briefly: the server may be away), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), 5)


def _count(n: int) -> str:
    return "1 message" if n == 1 else f"{n} messages"


def _reason(error: BaseException) -> str:
    if isinstance(error, ApiError):
        return f"{error.code}: {error.detail}"
    return str(error) or type(error).__name__
