"""A connection's typing notices: coalesced per chat, relayed by one task the connection owns.

A client may send `typing` as often as it types; each chat keeps at most one notice waiting
(the latest state wins), the same state again within RENEW_SECONDS is dropped, and the task
relays one round at most every ROUND_SECONDS. So a flood of typing frames costs a dictionary
update each, and the relaying (answered from memory by the presence service) stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sup.bus.process import stop_task
from sup.domain.presence import TYPING_SECONDS, PresenceService
from sup.errors import DomainError

log = logging.getLogger("sup.ws")

RENEW_SECONDS = TYPING_SECONDS / 2  # a notice lasts TYPING_SECONDS: renewing at half of it keeps it shown
ROUND_SECONDS = 0.5
MAX_WAITING = 32  # chats with a notice waiting; more are dropped (typing is lossy by design)
MAX_REMEMBERED = 256  # chats whose last relayed state is remembered, to drop repeats


class TypingRelay:
    __slots__ = ("_now", "_on_error", "_presence", "_relayed", "_task", "_user_id", "_waiting")  # one per connection

    def __init__(
        self,
        user_id: str,
        presence: PresenceService,
        on_error: Callable[[DomainError], None],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._user_id = user_id
        self._presence = presence
        self._on_error = on_error
        self._now = monotonic
        self._waiting: dict[str, bool] = {}
        self._relayed: dict[str, tuple[bool, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def offer(self, chat_id: str, active: bool) -> None:
        """A typing frame arrived: keep it if it says something new (called for every frame: no I/O)."""
        last = self._relayed.get(chat_id)
        if last is not None and last[0] == active and self._now() - last[1] < RENEW_SECONDS:
            return
        if chat_id not in self._waiting and len(self._waiting) >= MAX_WAITING:
            return
        self._waiting[chat_id] = active
        if self._task is None:
            self._task = asyncio.create_task(self._relay(), name="typing-relay")

    def sent(self, chat_id: str) -> None:
        """A message went to this chat: a "typing" still waiting would only arrive after it, stale."""
        if self._waiting.get(chat_id):
            del self._waiting[chat_id]

    async def _relay(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                for chat_id, active in batch.items():
                    self._remember(chat_id, active)  # before relaying: a refused chat is not asked again at once
                    try:
                        await self._presence.typing(self._user_id, chat_id, active)
                    except DomainError as error:
                        self._on_error(error)
                    except Exception:  # a database hiccup loses a typing notice, nothing more
                        log.warning("typing notice not relayed", exc_info=True)
                await asyncio.sleep(ROUND_SECONDS)
        finally:
            self._task = None

    def _remember(self, chat_id: str, active: bool) -> None:
        now = self._now()
        self._relayed[chat_id] = (active, now)
        if len(self._relayed) > MAX_REMEMBERED:
            for key in [k for k, (_, at) in self._relayed.items() if now - at >= RENEW_SECONDS]:
                del self._relayed[key]
            while len(self._relayed) > MAX_REMEMBERED:
                del self._relayed[next(iter(self._relayed))]

    async def close(self) -> None:
        await stop_task(self._task)
