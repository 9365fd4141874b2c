"""Presence (online, offline, last seen) and typing: ephemeral, never stored as events.

Who may see my presence is mine to choose: everyone I share a chat with, only my
contacts, or nobody.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from sup.bus.presence import PresenceTracker
from sup.clock import Clock
from sup.db.accounts import ContactStore, UserStore
from sup.db.chats import MemberStore
from sup.db.database import Database
from sup.domain.access import ChatAccess
from sup.domain.events import Announcer, encode, frame
from sup.errors import Code, DomainError

Visibility = Literal["everyone", "contacts", "nobody"]
TYPING_SECONDS = 6  # a typing notice lapses by itself unless renewed
# Typing is answered from memory: who is in a chat is read once per chat and kept this long, for at most
# this many chats. A member added or removed meanwhile is seen late (by seconds): typing is only a hint.
TYPING_AUDIENCE_SECONDS = 10.0
TYPING_AUDIENCE_CHATS = 10_000


class PresenceStatus(msgspec.Struct, frozen=True):
    user_id: str
    online: bool
    last_seen_at: int | None


@dataclass(slots=True, eq=False)
class PresenceService:
    db: Database
    users: UserStore
    contacts: ContactStore
    members: MemberStore
    access: ChatAccess
    tracker: PresenceTracker
    announcer: Announcer
    clock: Clock
    _typing_audiences: TypingAudiences = field(
        init=False, default_factory=lambda: TypingAudiences(TYPING_AUDIENCE_CHATS, TYPING_AUDIENCE_SECONDS)
    )

    async def _audience(self, user_id: str) -> list[str]:
        row = await self.users.presence(self.db, user_id)
        visibility = row["presence_visibility"] if row else "nobody"
        if visibility == "nobody":
            return []
        peers = await self.members.peers(self.db, user_id)
        if visibility == "contacts":
            contacts = await self.contacts.ids(self.db, user_id)
            peers = [p for p in peers if p in contacts]
        return peers

    async def connected(self, user_id: str) -> None:
        if await self.tracker.connected(user_id):
            await self._tell(user_id, True, None)

    async def disconnected(self, user_id: str) -> None:
        if await self.tracker.disconnected(user_id):
            now = self.clock.now_ms()
            await self.users.set_last_seen(self.db, user_id, now)
            await self._tell(user_id, False, now)

    async def _tell(self, user_id: str, online: bool, last_seen_at: int | None) -> None:
        audience = await self._audience(user_id)
        if audience:
            payload = frame("presence", None, encode(PresenceStatus(user_id, online, last_seen_at)))
            await self.announcer.announce_ephemeral(audience, payload)

    async def status(self, viewer_id: str, user_id: str) -> PresenceStatus:
        if viewer_id != user_id and viewer_id not in await self._audience(user_id):
            return PresenceStatus(user_id, False, None)  # hidden looks like "unknown", not like a refusal
        row = await self.users.presence(self.db, user_id)
        if row is None:
            raise DomainError(Code.NOT_FOUND, "No such user.")
        return PresenceStatus(user_id, await self.tracker.is_online(user_id), row["last_seen_at"])

    async def set_visibility(self, user_id: str, visibility: Visibility) -> None:
        await self.users.set_presence_visibility(self.db, user_id, visibility)

    async def typing(self, user_id: str, chat_id: str, active: bool = True) -> None:
        """Tell the other members; no database work while the chat's members are remembered."""
        audience = self._typing_audiences.get(chat_id)
        if audience is None or user_id not in audience[1]:
            membership = await self.access.access_chat(self.db, user_id, chat_id)  # 404 if not a member
            members = frozenset(await self.members.user_ids(self.db, chat_id))
            audience = (membership.chat.type == "channel", members)
            self._typing_audiences.put(chat_id, audience)
        channel, members = audience
        if channel:
            return  # subscribers do not see each other
        others = [u for u in members if u != user_id]
        body = {"chat_id": chat_id, "user_id": user_id, "active": active, "expires_in": TYPING_SECONDS}
        await self.announcer.announce_ephemeral(others, frame("typing", None, encode(body)))


class TypingAudiences:
    """Chat id -> (is a channel, member ids), each for `seconds`, the `size` most recent chats."""

    def __init__(self, size: int, seconds: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._size = size
        self._seconds = seconds
        self._now = monotonic
        self._entries: OrderedDict[str, tuple[float, tuple[bool, frozenset[str]]]] = OrderedDict()

    def get(self, chat_id: str) -> tuple[bool, frozenset[str]] | None:
        entry = self._entries.get(chat_id)
        if entry is None:
            return None
        if entry[0] < self._now():
            del self._entries[chat_id]
            return None
        return entry[1]

    def put(self, chat_id: str, audience: tuple[bool, frozenset[str]]) -> None:
        self._entries[chat_id] = (self._now() + self._seconds, audience)
        self._entries.move_to_end(chat_id)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
