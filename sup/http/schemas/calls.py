"""Calls: TURN credentials and the media server's join token."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta


class TurnCredentialsResponse(msgspec.Struct, kw_only=True):
    username: Annotated[str, Meta(description="`<expiry unix time>:<user id>`, coturn's use-auth-secret form.")]
    credential: Annotated[str, Meta(description="The password: base64 of HMAC-SHA1(secret, username).")]
    ttl: Annotated[int, Meta(description="Seconds the credentials are good for.")]
    expires_at: Annotated[int, Meta(description="Unix time, in seconds, when they stop working.")]
    uris: Annotated[list[str], Meta(description="The TURN servers: an RTCIceServer's `urls`.")]


class CallTokenResponse(msgspec.Struct, kw_only=True):
    url: Annotated[str, Meta(description="The media server (LiveKit) to connect to.")]
    token: Annotated[str, Meta(description="Its access token for this device, for this room only.")]
    room: Annotated[str, Meta(description="The chat's room: the same for every member, not the chat id.")]
    expires_at: Annotated[int, Meta(description="Unix time, in seconds, after which the token no longer joins.")]
