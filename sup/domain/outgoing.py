"""What a client asks to send, and the checks it passes before any transaction starts.

The same checks hold for REST and WebSocket sends and for forwards: what is refused here never
reaches the send's group commit.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sup.domain.events import encode
from sup.errors import Code, DomainError
from sup.ids import is_uuid

BODY_MAX = 16_384
CLIENT_ID_MAX = 64
MAX_RECIPIENTS = 5_000  # devices one pairwise-encrypted message may name
CIPHERTEXT_MAX = 65_536
KINDS = ("text", "media", "sticker")
# All of Outgoing but `recipients` (the per-device ciphertexts are stored and sent apart).
_MESSAGE_FIELDS = ("chat_id", "client_id", "kind", "body", "ciphertext", "media_id", "sticker_id", "reply_to")


@dataclass(frozen=True)
class Outgoing:
    """What a client asks to send (check_outgoing passes it first), or a system message the server writes."""

    chat_id: str
    client_id: str
    kind: str = "text"
    body: str | None = None
    ciphertext: bytes | None = None
    recipients: list[tuple[str, bytes]] = field(default_factory=list)
    media_id: str | None = None
    sticker_id: str | None = None
    reply_to: str | None = None

    def message_fields(self) -> dict[str, Any]:
        """The fields a stored message and its `message.new` event take from the send as it is."""
        return {name: getattr(self, name) for name in _MESSAGE_FIELDS}

    def content_hash(self) -> bytes:
        canonical = encode(
            [
                self.chat_id,
                self.kind,
                self.body,
                self.ciphertext,
                sorted(self.recipients),
                self.media_id,
                self.sticker_id,
                self.reply_to,
            ]
        )
        return hashlib.sha256(canonical).digest()


def check_outgoing(out: Outgoing) -> None:
    def bad(detail: str, field_name: str | None = None) -> DomainError:
        return DomainError(Code.VALIDATION_FAILED, detail, **({"field": field_name} if field_name else {}))

    if not is_uuid(out.chat_id):
        raise DomainError(Code.NOT_FOUND, "No such chat.")
    # Over REST the body's JSON is checked for NUL as it arrives; a socket frame (msgpack carries
    # NUL as it is) is not, and Postgres refuses NUL in text: every send is checked here.
    for name in ("client_id", "kind", "body"):
        value = getattr(out, name)
        if isinstance(value, str) and "\x00" in value:
            raise bad("Text must not contain NUL characters.", name)
    if not 1 <= len(out.client_id) <= CLIENT_ID_MAX:
        raise bad("client_id is 1 to 64 characters (a UUID is a good choice).", "client_id")
    if out.kind not in KINDS:
        raise bad(f"kind is one of {', '.join(KINDS)}.", "kind")
    if out.body is not None and len(out.body) > BODY_MAX:
        raise bad(f"body is at most {BODY_MAX} characters.", "body")
    if out.ciphertext is not None and not 0 < len(out.ciphertext) <= CIPHERTEXT_MAX:
        raise bad(f"ciphertext is 1 to {CIPHERTEXT_MAX} bytes.", "ciphertext")
    if len(out.recipients) > MAX_RECIPIENTS:
        raise bad(f"A message names at most {MAX_RECIPIENTS} recipient devices.", "recipients")
    seen = set()
    for device_id, ciphertext in out.recipients:
        if not is_uuid(device_id) or device_id in seen:
            raise bad("recipients name each device once, by id.", "recipients")
        if not 0 < len(ciphertext) <= CIPHERTEXT_MAX:
            raise bad(f"each recipient ciphertext is 1 to {CIPHERTEXT_MAX} bytes.", "recipients")
        seen.add(device_id)
    if out.ciphertext is not None and out.recipients:
        raise bad("Send either one group ciphertext or per-device recipients, not both.")
    for name in ("media_id", "sticker_id", "reply_to"):
        value = getattr(out, name)
        if value is not None and not is_uuid(value):
            raise bad(f"{name} is an id.", name)
    if out.kind == "media" and out.media_id is None:
        raise bad("A media message names its media_id.", "media_id")
    if out.kind == "sticker" and out.sticker_id is None:
        raise bad("A sticker message names its sticker_id.", "sticker_id")
