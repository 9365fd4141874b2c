"""The outbox: text messages kept in the store until they can be sent, and sent in order.

Part of `Client` (see client.py). A message gets its client_id when it is queued, so sending it again after
an answer was lost is a retry the server recognises (the same message, not a second one). `flush` sends the
queued messages oldest first and stops at the first one the server cannot be reached for, so a later
message never overtakes an earlier one; a message the server refuses (4xx) is dropped and reported.

A message can also wait for a device: in an encrypted chat the server refuses (409 `member_without_device`)
a message that some member has no device to read with (an account an admin made and no one has used yet).
Such a message stays queued, marked with the members it waits for (`Queued.waiting_for`, stored), and
every later message of that chat waits behind it; `WaitingForDevice` is yielded for each. They are tried
again, in order, on their own (`resend_waiting`) when one of those members has a device that published
keys (`keys.changed`, added), when a member leaves or the chat goes, when the event stream (re)connects,
and at every `flush`; how each ends is yielded too (`QueuedMessageSent`, `QueuedMessageDropped`).
Only text is kept: a file's upload would be deleted as an orphan after a day, and an edit or `data` is
refused with `MemberWithoutDevice` (its `queued` None).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sup.client.http import ApiError, SessionEnded
from sup.client.sending import Sender
from sup.client.state import DeviceState
from sup.client.values import (
    ClientError,
    MemberWithoutDevice,
    Queued,
    QueuedMessageDropped,
    QueuedMessageSent,
    WaitingForDevice,
)

__all__ = ["Flushed", "Outbox", "Queued"]

log = logging.getLogger("sup.client")

# Worth trying again later: the server was not reached, or was busy or restarting.
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, ConnectionError)
# Events after which a message waiting for a member's device may go: the member has a device with keys now,
# or left (the server no longer waits for it), or the chat is gone (the message is dropped), or events were
# missed (any of these may have happened meanwhile).
_MAY_UNBLOCK = ("keys.changed", "chat.member.removed", "chat.deleted", "resync")


@dataclass
class Flushed:
    """What one `flush` did: the messages sent (with the server's message), refused, held for a member's first
    device (with those members), and still waiting for the server."""

    sent: list[tuple[Queued, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[Queued, Exception]] = field(default_factory=list)
    waiting: int = 0
    error: BaseException | None = None  # why the waiting ones wait (None: nothing waits for the server)
    held: list[tuple[Queued, tuple[str, ...]]] = field(default_factory=list)


class Outbox:
    def __init__(self, state: DeviceState, sender: Sender) -> None:
        self.state = state
        self.sender = sender
        self._lock = asyncio.Lock()  # one flush at a time keeps the order
        # client_id -> (chat id, members it waits for): the stored `waiting_for` marks, for the event listener
        self._waits: dict[str, tuple[str, frozenset[str]]] = {}
        self._resend: asyncio.Task[None] | None = None
        self._again = False

    async def load(self) -> None:
        """Read which messages wait for a device (at start: the events that free them may come at once)."""
        self._waits = {
            q.client_id: (q.chat_id, frozenset(q.waiting_for)) for q in await self.waiting() if q.waiting_for
        }

    async def queue(
        self, chat_id: str, text: str, *, reply_to: str | None = None, client_id: str | None = None
    ) -> Queued:
        queued = Queued(client_id or str(uuid.uuid4()), chat_id, text, reply_to)
        async with self.state.store.batch() as batch:
            batch.queue_outgoing(queued.client_id, chat_id, _content(queued))
        return queued

    async def waiting(self) -> list[Queued]:
        rows = await self.state.store.outbox()
        return [
            Queued(
                client_id, chat_id, content["text"], content.get("reply_to"), tuple(content.get("waiting_for") or ())
            )
            for client_id, chat_id, content in rows
        ]

    def waits_in(self, chat_id: str) -> bool:
        """Whether a message of this chat waits for a member's device (a new one must go after it)."""
        return any(chat == chat_id for chat, _ in self._waits.values())

    async def flush(self, *, only_waiting: bool = False) -> Flushed:
        """Send the outbox in order. With `only_waiting`, only the messages that wait for a device (and in each
        chat none after a message that does not: it would be overtaken)."""
        async with self._lock:
            return await self._flush(only_waiting=only_waiting)

    async def send_after_waiting(
        self, chat_id: str, text: str, reply_to: str | None, client_id: str | None
    ) -> dict[str, Any]:
        """Send a message in a chat where earlier ones wait for a device: behind them, through the outbox.
        The server's message; MemberWithoutDevice (with the message queued) if they still wait."""
        async with self._lock:
            retried = any(q.client_id == client_id for q in await self.waiting())  # the same send again
            queued = await self.queue(chat_id, text, reply_to=reply_to, client_id=client_id)
            done = await self._flush(chat_id=chat_id)
            for item, sent in done.sent:
                if item.client_id == queued.client_id:
                    return sent
            for item, user_ids in done.held:
                if item.client_id == queued.client_id:
                    raise MemberWithoutDevice(chat_id, user_ids, item)
            for item, error in done.refused:
                if item.client_id == queued.client_id:
                    raise error
            # The server could not be reached: as a direct send would, it fails (a retry with its client_id is
            # safe); a message that was queued before this call stays queued.
            if not retried:
                async with self.state.store.batch() as batch:
                    batch.dequeue_outgoing(queued.client_id)
            raise done.error or ClientError("the message could not be sent")

    async def hold(
        self, chat_id: str, text: str, reply_to: str | None, client_id: str, user_ids: tuple[str, ...]
    ) -> Queued:
        """Keep a message the server refused for want of a member's device (MemberWithoutDevice)."""
        async with self._lock:
            return await self._wait(await self.queue(chat_id, text, reply_to=reply_to, client_id=client_id), user_ids)

    # -- sending again by itself -------------------------------------------------------------

    def on_frame(self, frame: dict[str, Any]) -> None:
        """After each handled event: one that may let a waiting message go starts `resend_waiting`."""
        kind = frame.get("type")
        if not self._waits or kind not in _MAY_UNBLOCK:
            return
        if kind == "keys.changed":
            if frame.get("change") != "added" or not any(frame.get("user_id") in u for _, u in self._waits.values()):
                return
        elif kind != "resync" and not self.waits_in(str(frame.get("chat_id"))):
            return
        self.wake()

    def on_ready(self, ready: dict[str, Any]) -> None:
        """The event stream (re)connected: a device may have come while it was away."""
        if self._waits:
            self.wake()

    def wake(self) -> None:
        """Try the waiting messages again soon (once, however many events asked for it meanwhile)."""
        if self.state.closed:
            return
        if self._resend is not None and not self._resend.done():
            self._again = True
            return
        self._resend = self.state.spawn(self.resend_waiting())

    async def resend_waiting(self) -> None:
        """Send the messages waiting for a device that can go now; what happens is yielded by `messages()`."""
        while True:
            self._again = False
            try:
                done = await self.flush(only_waiting=True)
            except SessionEnded:
                return  # the event stream ends too, and says so
            if done.error is not None:
                log.info("messages waiting for a device not sent yet: %r", done.error)
            if not self._again:
                return

    # -- the flush ---------------------------------------------------------------------------

    async def _flush(self, *, only_waiting: bool = False, chat_id: str | None = None) -> Flushed:
        """Caller holds the lock."""
        done = Flushed()
        blocked: dict[str, tuple[str, ...]] = {}  # chat -> members its first held message waits for
        skipped: set[str] = set()  # chats where a message was passed over: none after it may go first
        for queued in await self.waiting():
            chat = queued.chat_id
            if (chat_id is not None and chat != chat_id) or chat in skipped:
                continue
            if only_waiting and not queued.waiting_for:
                skipped.add(chat)
                continue
            if done.error is not None:
                done.waiting += 1
                continue
            if chat in blocked:
                done.held.append((await self._wait(queued, blocked[chat]), blocked[chat]))
                continue
            try:
                sent = await self.sender.send(
                    chat,
                    text=queued.text,
                    data=None,
                    attachments=(),
                    reply_to=queued.reply_to,
                    client_id=queued.client_id,
                )
            except SessionEnded:
                raise
            except MemberWithoutDevice as error:
                blocked[chat] = error.user_ids
                done.held.append((await self._wait(queued, error.user_ids), error.user_ids))
                continue
            except _UNREACHABLE as error:
                done.error, done.waiting = error, 1
                continue
            except ApiError as error:
                if error.status >= 500 or error.status == 429:
                    done.error, done.waiting = error, 1
                    continue
                self._refused(done, queued, error)
            except ClientError as error:
                if self.state.closed:
                    done.error, done.waiting = error, 1
                    continue
                self._refused(done, queued, error)
            else:
                done.sent.append((queued, sent))
                if queued.waiting_for:
                    self.state.inbox.put_nowait(
                        QueuedMessageSent(chat, queued.client_id, sent["id"], sent["seq"], queued.text)
                    )
            self._waits.pop(queued.client_id, None)
            async with self.state.store.batch() as batch:
                batch.dequeue_outgoing(queued.client_id)
        return done

    async def _wait(self, queued: Queued, user_ids: Iterable[str]) -> Queued:
        """Mark a message as waiting for these members' devices, in the store; announced when that is new."""
        user_ids = tuple(sorted(user_ids))
        if queued.waiting_for != user_ids:
            queued = Queued(queued.client_id, queued.chat_id, queued.text, queued.reply_to, user_ids)
            async with self.state.store.batch() as batch:
                batch.update_outgoing(queued.client_id, _content(queued))
            self.state.inbox.put_nowait(WaitingForDevice(queued.chat_id, user_ids, queued.client_id, queued.text))
        self._waits[queued.client_id] = (queued.chat_id, frozenset(user_ids))
        return queued

    def _refused(self, done: Flushed, queued: Queued, error: Exception) -> None:
        done.refused.append((queued, error))
        if queued.waiting_for:
            reason = f"{error.code}: {error.detail}" if isinstance(error, ApiError) else str(error)
            self.state.inbox.put_nowait(QueuedMessageDropped(queued.chat_id, queued.client_id, queued.text, reason))


def _content(queued: Queued) -> dict[str, Any]:
    content: dict[str, Any] = {"text": queued.text, "reply_to": queued.reply_to}
    if queued.waiting_for:
        content["waiting_for"] = list(queued.waiting_for)
    return content
