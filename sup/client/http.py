"""The REST API of a SUP server, as a client sees it (docs/api.md).

`SupHttp` is one device's view of the API: a method per endpoint, grouped as the API is, one module of
api/ per area (accounts: auth, devices, users; chats: chats, joining, search; messages; keys: the key
directory; media: uploads and sticker packs; stories), on the `Transport` (transport.py) that holds the
device's tokens, refreshes them, retries idempotent requests and turns problem+json answers into
`ApiError`. Large uploads go in resumable chunks (uploads.py).

Bytes travel as standard base64 in JSON; the methods here take and return `bytes` and do
the encoding. Answers are the server's JSON objects (dicts), except that the `ciphertext`
of a message is decoded to bytes. Media travels as raw bytes (application/octet-stream).
"""

from __future__ import annotations

from sup.client.api.accounts import AccountsApi
from sup.client.api.chats import ChatsApi
from sup.client.api.keys import KeysApi, PrekeyLike, SignedPrekeyLike
from sup.client.api.media import MediaApi
from sup.client.api.messages import MessagesApi
from sup.client.api.stories import StoriesApi
from sup.client.transport import (
    API,
    ApiError,
    Session,
    SessionEnded,
    TokenCallback,
    Tokens,
    b64d,
    b64e,
    decode_message,
)
from sup.client.uploads import RESUMABLE_ABOVE, MediaSource

__all__ = [
    "API",
    "RESUMABLE_ABOVE",
    "ApiError",
    "MediaSource",
    "PrekeyLike",
    "Session",
    "SessionEnded",
    "SignedPrekeyLike",
    "SupHttp",
    "TokenCallback",
    "Tokens",
    "b64d",
    "b64e",
    "decode_message",
]


class SupHttp(AccountsApi, ChatsApi, MessagesApi, KeysApi, MediaApi, StoriesApi):
    """One device's view of the REST API."""

    async def __aenter__(self) -> SupHttp:
        return self
