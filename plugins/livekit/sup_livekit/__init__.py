"""SUP's LiveKit plugin: group calls on a LiveKit server (https://livekit.io, Apache-2.0).

It implements the `call_token` hook: for a member of a chat, a LiveKit access token that admits
this one device to that chat's room, for a short while. SUP checks membership before it asks;
LiveKit checks the token (signed with the API secret both know) and does the media.

    [plugins]
    enabled = ["livekit"]

    [plugins.livekit]
    url = "wss://livekit.example.org"   # what clients connect to
    api_key = "APIxxxxxxxx"             # a key of the LiveKit server (its keys: section)
    api_secret = "..."                  # and its secret
    token_ttl_seconds = 300             # how long a token can be used to join (default 300)

Installed with SUP's `livekit` extra: pip install 'sup-messenger[livekit]' (docs/plugins.md).
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Annotated, Any

import msgspec
from livekit import api  # the livekit-api package: an ImportError here says the extra is missing

from sup.plugins.hookspecs import CallCaller, CallRoom, CallToken, hookimpl
from sup.plugins.host import PluginError, read_settings


class LiveKitSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str
    api_key: Annotated[str, msgspec.Meta(min_length=1)]
    api_secret: Annotated[str, msgspec.Meta(min_length=32)]  # LiveKit refuses shorter secrets too
    token_ttl_seconds: Annotated[int, msgspec.Meta(ge=10, le=86400)] = 300


class LiveKitPlugin:
    """The plugin object SUP makes from the [plugins.livekit] table."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = read_settings(LiveKitSettings, settings)
        if not self.settings.url.startswith(("wss://", "ws://", "https://", "http://")):
            raise PluginError(f"setting url: {self.settings.url!r} is not a ws(s):// or http(s):// URL")

    @hookimpl
    def call_token(self, caller: CallCaller, room: CallRoom) -> CallToken:
        ttl = self.settings.token_ttl_seconds
        grants = api.VideoGrants(
            room_join=True,
            room=room.room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
        )
        token = (
            api.AccessToken(self.settings.api_key, self.settings.api_secret)
            # One participant per device: the same person on a phone and a laptop is two.
            .with_identity(f"{caller.user_id}:{caller.device_id}")
            .with_name(caller.display_name)
            .with_metadata(json.dumps({"user_id": caller.user_id, "device_id": caller.device_id}))
            .with_grants(grants)
            .with_ttl(datetime.timedelta(seconds=ttl))
            .to_jwt()
        )
        return CallToken(url=self.settings.url, token=token, room=room.room, expires_at=int(time.time()) + ttl)
