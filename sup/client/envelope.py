"""The plaintext inside every ciphertext: the message envelope (docs/e2e.md, "Message plaintext format").

    {"v": 2, "chat_id": "<chat id>", "client_id": "<the message's client_id>", "text": "...",
     "data": "<base64>", "attachments": [{"media_id", "key", "digest", "size", "mime", "name"}],
     "reply_to": "<message id>", "sticker_id": "<sticker id>", "story": {"id": "<story id>", "author_id": "<user id>"}}

an edit names the message it replaces instead of a client_id of its own (`"edit_of": "<its client_id>"`),
and a sender key, sent pairwise, is `{"v": 2, "chat_id": ..., "sender_key": {"distribution_id", "key"}}`.
`chat_id` binds the plaintext to its chat, `client_id` / `edit_of` to its message, so a server can neither
replay it into another chat nor pass it off as another message or as an edit of one; `reply_to` is taken
from the envelope only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from sup.client.crypto import DecryptError
from sup.client.http import b64e
from sup.client.values import Attachment

ENVELOPE_VERSION = 2  # 2: client_id / edit_of required in messages


def encode_envelope(
    chat_id: str,
    *,
    client_id: str | None = None,
    edit_of: str | None = None,
    text: str | None = None,
    data: bytes | None = None,
    attachments: Iterable[Attachment] = (),
    reply_to: str | None = None,
    sticker_id: str | None = None,
    story: dict[str, str] | None = None,
) -> bytes:
    """The plaintext of a message, before encryption: a new message's own `client_id`, or for an edit
    the `client_id` of the message it replaces (`edit_of`); exactly one of the two."""
    if (client_id is None) == (edit_of is None):
        raise ValueError("a message envelope has either a client_id (a new message) or edit_of (an edit)")
    envelope: dict[str, Any] = {"v": ENVELOPE_VERSION, "chat_id": chat_id}
    if client_id is not None:
        envelope["client_id"] = client_id
    else:
        envelope["edit_of"] = edit_of
    if text is not None:
        envelope["text"] = text
    if data is not None:
        envelope["data"] = b64e(data)
    listed = [a.to_json() for a in attachments]
    if listed:
        envelope["attachments"] = listed
    if reply_to is not None:
        envelope["reply_to"] = reply_to
    if sticker_id is not None:
        envelope["sticker_id"] = sticker_id
    if story is not None:  # a reply to a story: the server never learns which
        envelope["story"] = {"id": story["id"], "author_id": story["author_id"]}
    return msgspec.json.encode(envelope)


def decode_envelope(plaintext: bytes, chat_id: str) -> dict[str, Any]:
    """The envelope's fields; DecryptError when it is not one, or names another chat."""
    try:
        envelope = msgspec.json.decode(plaintext)
    except msgspec.DecodeError as exc:
        raise DecryptError("the plaintext is not a message envelope") from exc
    if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
        raise DecryptError(f"unknown envelope version {envelope.get('v') if isinstance(envelope, dict) else None!r}")
    if envelope.get("chat_id") != chat_id:
        raise DecryptError("the envelope names another chat (replayed by the server?)")
    return envelope


def encode_sender_key(chat_id: str, distribution_id: str, distribution: bytes) -> bytes:
    """The pairwise envelope that carries my sender key for a chat to one device."""
    return msgspec.json.encode(
        {
            "v": ENVELOPE_VERSION,
            "chat_id": chat_id,
            "sender_key": {"distribution_id": distribution_id, "key": b64e(distribution)},
        }
    )
