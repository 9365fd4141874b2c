"""The outbox: messages written while the server could not be reached, kept in the store and sent in order.

Part of `Client` (see client.py). A message gets its client_id when it is queued, so sending it again after
an answer was lost is a retry the server recognises (the same message, not a second one). `flush` sends the
queued messages oldest first and stops at the first one the server cannot be reached for, so a later
message never overtakes an earlier one; a message the server refuses (4xx) is dropped and reported.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from sup.client.http import ApiError, SessionEnded
from sup.client.sending import Sender
from sup.client.state import DeviceState
from sup.client.values import ClientError

# Worth trying again later: the server was not reached, or was busy or restarting.
_UNREACHABLE = (aiohttp.ClientError, OSError, TimeoutError, ConnectionError)


@dataclass(frozen=True)
class Queued:
    """A text message waiting in the outbox."""

    client_id: str
    chat_id: str
    text: str
    reply_to: str | None = None


@dataclass
class Flushed:
    """What one `flush` did: the messages sent (with the server's message), refused, and still waiting."""

    sent: list[tuple[Queued, dict[str, Any]]] = field(default_factory=list)
    refused: list[tuple[Queued, Exception]] = field(default_factory=list)
    waiting: int = 0
    error: BaseException | None = None  # why the waiting ones wait (None: nothing waits)


class Outbox:
    def __init__(self, state: DeviceState, sender: Sender) -> None:
        self.state = state
        self.sender = sender
        self._lock = asyncio.Lock()  # one flush at a time keeps the order

    async def queue(self, chat_id: str, text: str, *, reply_to: str | None = None) -> Queued:
        queued = Queued(str(uuid.uuid4()), chat_id, text, reply_to)
        async with self.state.store.batch() as batch:
            batch.queue_outgoing(queued.client_id, chat_id, {"text": text, "reply_to": reply_to})
        return queued

    async def waiting(self) -> list[Queued]:
        rows = await self.state.store.outbox()
        return [
            Queued(client_id, chat_id, content["text"], content.get("reply_to")) for client_id, chat_id, content in rows
        ]

    async def flush(self) -> Flushed:
        done = Flushed()
        async with self._lock:
            for queued in await self.waiting():
                if done.error is not None:
                    done.waiting += 1
                    continue
                try:
                    sent = await self.sender.send(
                        queued.chat_id,
                        text=queued.text,
                        data=None,
                        attachments=(),
                        reply_to=queued.reply_to,
                        client_id=queued.client_id,
                    )
                except SessionEnded:
                    raise
                except _UNREACHABLE as error:
                    done.error, done.waiting = error, 1
                    continue
                except ApiError as error:
                    if error.status >= 500 or error.status == 429:
                        done.error, done.waiting = error, 1
                        continue
                    done.refused.append((queued, error))
                except ClientError as error:
                    if self.state.closed:
                        done.error, done.waiting = error, 1
                        continue
                    done.refused.append((queued, error))
                else:
                    done.sent.append((queued, sent))
                async with self.state.store.batch() as batch:
                    batch.dequeue_outgoing(queued.client_id)
        return done
