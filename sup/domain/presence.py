"""Presence (online, offline, last seen) and typing: ephemeral, never stored as events.

Who may see my presence is mine to choose: everyone I share a chat with, only my
contacts, or nobody.
"""

from __future__ import annotations

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


class PresenceStatus(msgspec.Struct, frozen=True):
    user_id: str
    online: bool
    last_seen_at: int | None


class PresenceService:
    def __init__(
        self,
        db: Database,
        users: UserStore,
        contacts: ContactStore,
        members: MemberStore,
        access: ChatAccess,
        tracker: PresenceTracker,
        announcer: Announcer,
        clock: Clock,
    ) -> None:
        self._db = db
        self._users = users
        self._contacts = contacts
        self._members = members
        self._access = access
        self._tracker = tracker
        self._announcer = announcer
        self._clock = clock

    async def _audience(self, user_id: str) -> list[str]:
        row = await self._users.presence(self._db, user_id)
        visibility = row["presence_visibility"] if row else "nobody"
        if visibility == "nobody":
            return []
        peers = await self._members.peers(self._db, user_id)
        if visibility == "contacts":
            contacts = await self._contacts.ids(self._db, user_id)
            peers = [p for p in peers if p in contacts]
        return peers

    async def connected(self, user_id: str) -> None:
        if await self._tracker.connected(user_id):
            await self._tell(user_id, True, None)

    async def disconnected(self, user_id: str) -> None:
        if await self._tracker.disconnected(user_id):
            now = self._clock.now_ms()
            await self._users.set_last_seen(self._db, user_id, now)
            await self._tell(user_id, False, now)

    async def _tell(self, user_id: str, online: bool, last_seen_at: int | None) -> None:
        audience = await self._audience(user_id)
        if audience:
            payload = frame("presence", None, encode(PresenceStatus(user_id, online, last_seen_at)))
            await self._announcer.announce_ephemeral(audience, payload)

    async def status(self, viewer_id: str, user_id: str) -> PresenceStatus:
        if viewer_id != user_id and viewer_id not in await self._audience(user_id):
            return PresenceStatus(user_id, False, None)  # hidden looks like "unknown", not like a refusal
        row = await self._users.presence(self._db, user_id)
        if row is None:
            raise DomainError(Code.NOT_FOUND, "No such user.")
        return PresenceStatus(user_id, await self._tracker.is_online(user_id), row["last_seen_at"])

    async def set_visibility(self, user_id: str, visibility: Visibility) -> None:
        await self._users.set_presence_visibility(self._db, user_id, visibility)

    async def typing(self, user_id: str, chat_id: str, active: bool = True) -> None:
        membership = await self._access.access_chat(self._db, user_id, chat_id)
        if membership.chat.type == "channel":
            return  # subscribers do not see each other
        others = [u for u in await self._members.user_ids(self._db, chat_id) if u != user_id]
        body = {"chat_id": chat_id, "user_id": user_id, "active": active, "expires_in": TYPING_SECONDS}
        await self._announcer.announce_ephemeral(others, frame("typing", None, encode(body)))
