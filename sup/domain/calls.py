"""Calls: TURN credentials for WebRTC, and tokens for the group call of a chat.

Both come from plugins (docs/plugins.md): `turn_credentials` (built in: coturn's shared secret)
and `call_token` (the livekit plugin). Without one, the endpoint answers `not_configured`.
A chat's call has a room name SUP derives from the chat id with a keyed hash: stable, the same on
every process, and it does not tell the media server which chat it is.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from sup.db.accounts import UserStore
from sup.db.database import Database
from sup.domain.access import ChatAccess
from sup.domain.accounts import Principal
from sup.errors import Code, DomainError
from sup.plugins.hookspecs import CallCaller, CallRoom, CallToken, TurnCredentials
from sup.plugins.host import Hooks


def room_name(key: bytes, chat_id: str) -> str:
    digest = hmac.new(key, chat_id.encode(), hashlib.sha256).digest()[:20]
    return "sup-" + base64.b32encode(digest).decode().lower()


@dataclass(slots=True, eq=False)
class CallService:
    db: Database
    access: ChatAccess
    users: UserStore
    hooks: Hooks
    room_key: bytes

    async def turn_credentials(self, who: Principal) -> TurnCredentials:
        credentials = await self.hooks.first("turn_credentials", user_id=who.user_id, device_id=who.device_id)
        if credentials is None:
            raise DomainError(Code.NOT_CONFIGURED, "This server hands out no TURN credentials ([calls] turn_uris).")
        return credentials

    async def call_token(self, who: Principal, chat_id: str) -> CallToken:
        """A token to join the group call of one of my chats; 404 for a chat I am not in."""
        if not self.hooks.implements("call_token"):
            raise DomainError(Code.NOT_CONFIGURED, "This server has no group calls (enable a plugin such as livekit).")
        membership = await self.access.access_chat(self.db, who.user_id, chat_id)
        user = await self.users.get(self.db, who.user_id)
        chat = membership.chat
        token = await self.hooks.first(
            "call_token",
            caller=CallCaller(who.user_id, who.device_id, user["display_name"] if user else ""),
            room=CallRoom(chat.id, chat.type, room_name(self.room_key, chat.id)),
        )
        if token is None:
            raise DomainError(Code.NOT_CONFIGURED, "No plugin issues tokens for this chat's calls.")
        return token
