"""What the SDK hands out: the items `Client.messages()` yields, the attachments in them, and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sup.client.http import b64d, b64e


class ClientError(Exception):
    """The client cannot do what was asked (no such user, a store without a device, ...)."""


class BadDeviceKeys(ClientError):
    """A recipient device published keys that cannot be used; nothing was sent.

    The server takes a message only when it names every device of the chat, so a send cannot skip one:
    the device's owner must log it out (or it must publish valid keys) before the chat works again.
    """

    def __init__(self, user_id: str, device_id: str, reason: str) -> None:
        super().__init__(
            f"device {device_id} of user {user_id} published unusable keys ({reason}); nothing was sent, "
            "because the server requires a ciphertext for every device in the chat"
        )
        self.user_id = user_id
        self.device_id = device_id
        self.reason = reason


@dataclass(frozen=True)
class Queued:
    """A text message in the outbox, with the client_id it keeps until the server has it.

    `waiting_for`: the members of its chat that have no device able to read it yet (it was announced as
    `WaitingForDevice`); empty for a message that waits only for the server to be reached.
    """

    client_id: str
    chat_id: str
    text: str
    reply_to: str | None = None
    waiting_for: tuple[str, ...] = ()


class MemberWithoutDevice(ClientError):
    """Members of the chat (`user_ids`) have no device that can read an encrypted message yet: an account an
    admin made and no one has logged in to, or one whose devices are all logged out. The server refuses the
    message (409 `member_without_device`) and stores nothing.

    `queued` is the message kept in the outbox, sent by itself (in order) once those members have a device
    with published keys, or once they have left the chat; `messages()` yields `WaitingForDevice` for it now
    and `QueuedMessageSent` (or `QueuedMessageDropped`) later. Only text waits: `queued` is None for a file,
    `data` or an edit, which were not sent and are not kept.
    """

    def __init__(self, chat_id: str, user_ids: tuple[str, ...], queued: Queued | None = None) -> None:
        who = ", ".join(user_ids)
        if queued is not None:
            what = "the message waits in the outbox and is sent when they have one"
        else:
            what = "nothing was sent, and only text messages wait in the outbox: send it again when they have one"
        super().__init__(
            f"members of chat {chat_id} have no device that can read encrypted messages yet ({who}); {what}"
        )
        self.chat_id = chat_id
        self.user_ids = user_ids
        self.queued = queued


@dataclass(frozen=True)
class Attachment:
    """A file inside a message: fetch `media_id`, check and decrypt it with `key`."""

    media_id: str
    key: bytes
    digest: bytes
    size: int
    mime: str = "application/octet-stream"
    name: str = ""

    @property
    def encrypted(self) -> bool:
        """False for a plaintext chat's file: no key, and `size` 0 when it came in a message."""
        return bool(self.key)

    def to_json(self) -> dict[str, Any]:
        return {
            "media_id": self.media_id,
            "key": b64e(self.key),
            "digest": b64e(self.digest),
            "size": self.size,
            "mime": self.mime,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Attachment:
        return cls(
            media_id=str(value["media_id"]),
            key=b64d(value["key"]) or b"",
            digest=b64d(value["digest"]) or b"",
            size=int(value["size"]),
            mime=str(value.get("mime") or "application/octet-stream"),
            name=str(value.get("name") or ""),
        )


@dataclass(frozen=True)
class ReceivedMessage:
    """A message from someone (or from another device of mine), decrypted."""

    chat_id: str
    message_id: str
    seq: int
    sender_user_id: str | None
    sender_device_id: str | None
    text: str | None
    data: bytes | None = None
    attachments: tuple[Attachment, ...] = ()
    reply_to: str | None = None
    created_at: int = 0
    encrypted: bool = True
    edited: bool = False
    from_me: bool = False  # sent by another device of mine
    sticker_id: str | None = None  # a sticker message: GET /stickers/{sticker_id} says which image
    story: dict[str, str] | None = None  # a reply to a story: {"id", "author_id"}


@dataclass(frozen=True)
class Undecryptable:
    """A message that could not be decrypted; shown rather than dropped. `reason` says why."""

    chat_id: str
    message_id: str
    seq: int
    sender_user_id: str | None
    sender_device_id: str | None
    reason: str
    created_at: int = 0
    edited: bool = False  # an edit of `message_id` was refused; the message itself stays as it was


@dataclass(frozen=True)
class SafetyNumberChanged:
    """A device of `user_id` now has another identity key (reinstalled, or someone in the middle).

    `trusted` is False with `accept_identity_changes=False`: messages from that device are held until
    `trust_identity(user_id, device_id, identity_key)` (or dropped by `reject_identity`).
    """

    user_id: str
    device_id: str
    identity_key: bytes = b""
    trusted: bool = True


@dataclass(frozen=True)
class NewDevice:
    """A device of `user_id` this device had not met before (a new login, or one the server added).

    Yielded before anything is encrypted to it; the safety number with that user changes with it. When
    `user_id` is my own, another login of my account: if it was not me, revoke it. `device_name` is how its
    owner named it, as the directory says ("" if it was met as a message's sender, not in the directory):
    the server's word, for recognising the device, not for trusting it.
    """

    user_id: str
    device_id: str
    identity_key: bytes
    device_name: str = ""


@dataclass(frozen=True)
class MessageDeleted:
    """A message was deleted, for everyone (`for_everyone`) or only for my account; this device's copy is gone."""

    chat_id: str
    message_id: str
    seq: int
    for_everyone: bool = True


@dataclass(frozen=True)
class WaitingForDevice:
    """A message of mine waits in the outbox: members of its chat (`user_ids`) have no device that can read it
    yet. It is sent by itself, in order with what I wrote after it in that chat, when they have one (or have
    left the chat); `QueuedMessageSent` or `QueuedMessageDropped` with the same `client_id` says how it ended.
    Yielded again, for the same message, only if the members it waits for change."""

    chat_id: str
    user_ids: tuple[str, ...]
    client_id: str
    text: str


@dataclass(frozen=True)
class QueuedMessageSent:
    """A message that was waiting (`WaitingForDevice`) went out: the server's id and seq are now its."""

    chat_id: str
    client_id: str
    message_id: str
    seq: int
    text: str


@dataclass(frozen=True)
class QueuedMessageDropped:
    """A message that was waiting (`WaitingForDevice`) was refused when it was tried again (I left the chat, it
    was deleted, ...): it is gone from the outbox, not sent. `reason` says why."""

    chat_id: str
    client_id: str
    text: str
    reason: str


Item = (
    ReceivedMessage
    | Undecryptable
    | SafetyNumberChanged
    | NewDevice
    | MessageDeleted
    | WaitingForDevice
    | QueuedMessageSent
    | QueuedMessageDropped
)


@dataclass(frozen=True)
class FoundMessage:
    """A message kept on this device that `Client.search` found."""

    chat_id: str
    message_id: str
    seq: int
    sender_user_id: str | None
    sender_device_id: str | None
    text: str
    created_at: int
    # The text around the first match, as (piece, is a match) segments: show the pieces in order,
    # the matches marked however the interface likes ("…" stands for what was cut off).
    snippet: tuple[tuple[str, bool], ...]
