"""Calls: TURN credentials and group call tokens, under /api/v1/calls."""

from __future__ import annotations

from sup.http import schemas as s
from sup.http.api import Call


async def turn_credentials(call: Call) -> s.TurnCredentialsResponse:
    """GET /api/v1/calls/turn: time-limited TURN credentials for WebRTC (coturn's shared-secret form)."""
    found = await call.services.calls.turn_credentials(call.who)
    return s.TurnCredentialsResponse(
        username=found.username,
        credential=found.credential,
        ttl=found.ttl_seconds,
        expires_at=found.expires_at,
        uris=list(found.uris),
    )


async def call_token(call: Call) -> s.CallTokenResponse:
    """POST /api/v1/calls/{chat_id}/token: a token to join the group call of one of my chats (LiveKit).

    The room is the chat's and the token admits this device to it only, for a short while: ask
    for a new one to join again later. A chat I am not in is 404, as everywhere.
    """
    token = await call.services.calls.call_token(call.who, call.param("chat_id"))
    return s.CallTokenResponse(url=token.url, token=token.token, room=token.room, expires_at=token.expires_at)
