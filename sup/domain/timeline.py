"""A chat's timeline: appending a message assigns its seq and writes its event for every
member device, all in the caller's transaction, so events arrive in seq order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from sup.db.accounts import DeviceStore
from sup.db.chats import ChatStore, MemberStore
from sup.db.database import Transaction
from sup.db.messages import MessageRow, MessageStore, RecipientStore
from sup.domain.events import EventWriter, encode
from sup.domain.outgoing import Outgoing
from sup.domain.permissions import MANAGE_MEMBERS
from sup.domain.views import view_of
from sup.ids import uuid7


class Reaction(msgspec.Struct, frozen=True):
    emoji: str
    count: int
    me: bool


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A message as clients see it. `ciphertext` is opaque (base64 in JSON): for a per-device
    encrypted message it is the ciphertext for the device that reads it."""

    id: str
    chat_id: str
    seq: int
    sender_id: str | None
    sender_device_id: str | None
    client_id: str
    kind: str
    body: str | None = None
    ciphertext: bytes | None = None
    media_id: str | None = None
    sticker_id: str | None = None
    reply_to: str | None = None
    forwarded_from: dict[str, Any] | None = None
    edited_at: int | None = None
    deleted: bool = False
    created_at: int
    reactions: list[Reaction] = []


def message_from_row(
    row: MessageRow, *, ciphertext: bytes | None = None, reactions: list[Reaction] | None = None
) -> Message:
    return view_of(
        Message,
        row,
        ciphertext=ciphertext if ciphertext is not None else row.ciphertext,
        forwarded_from=msgspec.json.decode(row.forwarded_from) if row.forwarded_from else None,
        deleted=row.deleted_at is not None,
        reactions=reactions or [],
    )


@dataclass(slots=True, eq=False)
class Timeline:
    events: EventWriter
    chats: ChatStore
    members: MemberStore
    messages: MessageStore
    recipients: RecipientStore
    devices: DeviceStore

    async def append(
        self,
        tx: Transaction,
        out: Outgoing,
        *,
        sender_id: str | None,
        sender_device_id: str | None,
        content_hash: bytes,
        now: int,
        forwarded_from: dict[str, Any] | None = None,
        devices: Sequence[str] | None = None,
    ) -> Message:
        """Append a message; `devices` (the chat's member devices) saves a query if the caller has them."""
        message_id = uuid7(now)
        # What the stored row and the `message.new` event both carry as they are.
        fields = {**out.message_fields(), "sender_id": sender_id, "sender_device_id": sender_device_id}
        seq = await self.messages.insert_next(
            tx,
            id=message_id,
            content_hash=content_hash,
            forwarded_from=encode(forwarded_from).decode() if forwarded_from else None,
            now=now,
            **fields,
        )
        message = Message(id=message_id, seq=seq, forwarded_from=forwarded_from, created_at=now, **fields)
        per_device = None
        if out.recipients:
            await self.recipients.insert(tx, message.id, out.recipients)
            per_device = {
                device_id: encode({"message": msgspec.structs.replace(message, ciphertext=ct)})
                for device_id, ct in out.recipients
            }
        await self.to_chat(
            tx, out.chat_id, "message.new", {"message": message}, now, per_device=per_device, devices=devices
        )
        return message

    async def system(
        self, tx: Transaction, chat_id: str, actor_id: str | None, action: dict[str, Any], now: int
    ) -> Message:
        """A system message (member joined, title changed...): plaintext metadata, sent by the server."""
        out = Outgoing(chat_id, f"system:{uuid.uuid4()}", kind="system", body=encode(action).decode())
        return await self.append(tx, out, sender_id=actor_id, sender_device_id=None, content_hash=b"", now=now)

    async def to_chat(
        self,
        tx: Transaction,
        chat_id: str,
        event_type: str,
        body: Any,
        now: int,
        *,
        per_device: dict[str, bytes] | None = None,
        devices: Sequence[str] | None = None,
    ) -> None:
        """Append an event for every active device of every member."""
        if devices is None:
            devices = [row["id"] for row in await self.members.devices(tx, chat_id)]
        encoded = body if isinstance(body, bytes) else encode(body)
        await self.events.append(tx, event_type, devices, encoded, now, per_device=per_device)

    async def membership_changed(
        self,
        tx: Transaction,
        chat_type: str,
        chat_id: str,
        affected: Sequence[str],
        event_type: str,
        body: Any,
        now: int,
        *,
        notice: dict[str, Any] | None = None,
        actor_id: str | None = None,
    ) -> None:
        """Tell a chat that members came, went or changed role, with a system message (`notice`) for
        its timeline. In a channel subscribers do not see each other: only those who manage members
        and the members affected hear it, and its timeline says nothing."""
        devices = None
        if chat_type == "channel":
            devices = await self.members.manager_devices(tx, chat_id, int(MANAGE_MEMBERS), affected)
        elif notice is not None:
            await self.system(tx, chat_id, actor_id, notice, now)
        await self.to_chat(tx, chat_id, event_type, body, now, devices=devices)

    async def to_user_devices(
        self, tx: Transaction, user_ids: Sequence[str], event_type: str, body: Any, now: int
    ) -> None:
        """Append an event for every active device of some users (e.g. read receipts to myself)."""
        devices = await self.devices.active_ids_of(tx, user_ids)
        encoded = body if isinstance(body, bytes) else encode(body)
        await self.events.append(tx, event_type, devices, encoded, now)
