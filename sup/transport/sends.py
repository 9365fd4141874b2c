"""A message send as both transports accept it: one schema, so REST and WebSocket refuse the same input.

The domain's `check_outgoing` then applies the rules that need more than a schema (NUL characters,
recipients named once); every send, from either transport, passes both.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from sup.domain.outgoing import BODY_MAX, CLIENT_ID_MAX, MAX_RECIPIENTS, Outgoing
from sup.transport.inputs import Id, Input, whole

# A socket frame's name for its answer: echoed back, so text like any other (no NUL).
RequestId = Annotated[str, Meta(max_length=64, pattern=whole("[^\\x00]*"))]
_request_id = msgspec.json.Decoder(RequestId)


def request_id_of(data: Any, msgpack: bool) -> str | None:
    """The request id of a socket frame its schema refused (a send with 5,001 recipients), if it
    names a valid one: its sender waits for an answer under that id. Only on that error path."""
    try:
        frame = msgspec.msgpack.decode(data) if msgpack else msgspec.json.decode(data)
        value = frame.get("request_id") if isinstance(frame, dict) else None
        return _request_id.decode(msgspec.json.encode(value)) if isinstance(value, str) else None
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


class Recipient(Input):
    device_id: Id
    ciphertext: Annotated[bytes, Meta(description="Base64: this device's ciphertext, opaque to the server.")]


class MessageSendFields(Input):
    chat_id: Id
    client_id: Annotated[
        str, Meta(min_length=1, max_length=CLIENT_ID_MAX, description="Yours, unique per message: retries reuse it.")
    ]
    kind: Literal["text", "media", "sticker"] = "text"
    body: (
        Annotated[str, Meta(max_length=BODY_MAX, description="Plaintext: channels and unencrypted groups only.")] | None
    ) = None
    ciphertext: Annotated[bytes, Meta(description="Base64: one group (sender-key) ciphertext.")] | None = None
    recipients: Annotated[list[Recipient], Meta(max_length=MAX_RECIPIENTS)] = []
    media_id: Id | None = None
    sticker_id: Id | None = None
    reply_to: Id | None = None

    def to_outgoing(self) -> Outgoing:
        """The domain's view of this send."""
        return Outgoing(
            chat_id=self.chat_id,
            client_id=self.client_id,
            kind=self.kind,
            body=self.body,
            ciphertext=self.ciphertext,
            recipients=[(r.device_id, r.ciphertext) for r in self.recipients],
            media_id=self.media_id,
            sticker_id=self.sticker_id,
            reply_to=self.reply_to,
        )
