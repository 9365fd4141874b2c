"""Messages: send (idempotent by client_id, group-committed), edit, delete, react, pin, read.

check_* validates what a client asked for; the do_* operations run inside a transaction,
which announces the events they append once it has committed.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import msgspec

from sup.clock import Clock
from sup.db.accounts import DeviceStore
from sup.db.batching import Guard, WriteBatcher
from sup.db.chats import Audience, ChatStore, MemberStore
from sup.db.database import Database, Queryable, Transaction
from sup.db.messages import MessageRow, MessageStore, PinStore, ReactionStore, RecipientStore
from sup.domain.access import ChatAccess, Membership
from sup.domain.attachments import MediaAttachments
from sup.domain.events import encode
from sup.domain.keydirectory import KeyDirectory
from sup.domain.outgoing import BODY_MAX, Outgoing, check_outgoing
from sup.domain.permissions import Permission
from sup.domain.timeline import Message, Reaction, Timeline, message_from_row
from sup.errors import Code, DomainError
from sup.ids import is_uuid
from sup.plugins.hookspecs import MessageSent
from sup.plugins.host import Hooks

EMOJI_MAX = 32


class Sent(msgspec.Struct, frozen=True):
    message: Message
    created: bool


class MessagePage(msgspec.Struct, frozen=True):
    items: list[Message]
    next_before: int | None
    next_after: int | None


class ReactionUpdated(msgspec.Struct, frozen=True):
    """The `reaction.updated` event: `count` is the emoji's count after the change."""

    chat_id: str
    message_id: str
    user_id: str | None  # None in what a channel's other subscribers hear
    emoji: str
    added: bool
    count: int


class Pin(msgspec.Struct, frozen=True):
    message_id: str
    pinned_by: str | None
    pinned_at: int


def _check_everyone_reached(sender_id: str, member_ids: Sequence[str], keyed: dict[str, str]) -> None:
    """An encrypted message must reach every other member: one with no device that can read it
    would see an unread message with nothing to read (an account made by an admin, not yet used)."""
    reached = set(keyed.values())
    if unreached := [m for m in member_ids if m != sender_id and m not in reached]:
        raise DomainError(
            Code.MEMBER_WITHOUT_DEVICE,
            "Some members have no device that can read encrypted messages yet; send when they have logged in.",
            user_ids=unreached,
        )


def _device_gone(device_id: str) -> DomainError:
    # What authentication answers for a revoked device: the client knows to log in again.
    return DomainError(Code.INVALID_TOKEN, "This session has ended; log in again.")


def check_reaction(emoji: str) -> str:
    emoji = emoji.strip()
    if not emoji or len(emoji) > EMOJI_MAX or any(ch.isspace() or ord(ch) < 32 for ch in emoji):
        raise DomainError(Code.VALIDATION_FAILED, "emoji is one emoji (or a short code), no spaces.", field="emoji")
    return emoji


@dataclass(slots=True, eq=False)
class MessageService:
    db: Database
    chats: ChatStore
    members: MemberStore
    devices: DeviceStore
    messages: MessageStore
    recipients: RecipientStore
    reactions: ReactionStore
    pin_store: PinStore
    access: ChatAccess
    timeline: Timeline
    attachments: MediaAttachments
    batcher: WriteBatcher
    keys: KeyDirectory
    clock: Clock
    hooks: Hooks = field(default_factory=Hooks.none)
    _sends_observed: bool = field(init=False)
    _active_device: Guard = field(init=False)

    def __post_init__(self) -> None:
        # The plugins are all loaded before the services are built: whether any observes sends is known
        # now, and a send that nobody observes builds no event for them (two lookups fewer per send).
        self._sends_observed = self.hooks.implements("message_sent")
        # Checked in each send's transaction, once per batch: a device revoked (or logged out) a
        # moment ago, whose socket is still open or whose request was already authenticated,
        # stores nothing more. A revocation that commits while the batch runs is concurrent with
        # it; no lock is taken, since a lock taken before the batch's own (in device-id order,
        # see sup/db/events.py) could deadlock two processes' batches.
        self._active_device = Guard(holding=self.devices.active_among, refusal=_device_gone)

    # -- send ------------------------------------------------------------------------------

    async def send(self, user_id: str, device_id: str, out: Outgoing) -> Sent:
        """Send a message; the same client_id again returns the original (created=False)."""
        return await asyncio.shield(self.queue_send(user_id, device_id, out))

    def queue_send(self, user_id: str, device_id: str, out: Outgoing) -> asyncio.Future[Sent]:
        """Validate and queue a send for the next group commit; the future resolves after it.

        No read before queueing: sends queue in the order they arrive, so one client's
        pipelined messages get their seqs in that order. A retry is recognised inside.
        """
        check_outgoing(out)
        digest = out.content_hash()

        async def operation(tx: Transaction) -> Sent:
            return await self._do_send(tx, user_id, device_id, out, digest)

        return self.batcher.enqueue(operation, chat_id=out.chat_id, guard=self._active_device, key=device_id)

    def _retried(self, row: MessageRow, digest: bytes) -> Message:
        if row.content_hash != digest:
            raise DomainError(
                Code.CLIENT_ID_REUSED, "This client_id was used for a different message.", message_id=row.id
            )
        return message_from_row(row)

    async def _do_send(
        self,
        tx: Transaction,
        user_id: str,
        device_id: str,
        out: Outgoing,
        digest: bytes,
        *,
        forwarded_from: dict[str, Any] | None = None,
    ) -> Sent:
        membership = await self.access.access_chat(tx, user_id, out.chat_id, client_id=out.client_id)
        if membership.retry_of is not None:  # a retry, even in the same batch or from another process
            existing = await self.messages.get(tx, membership.retry_of)
            return Sent(self._retried(existing, digest), False)
        membership.require(Permission.SEND_MESSAGES, "send messages here")
        if out.kind in ("media", "sticker"):
            membership.require(Permission.SEND_MEDIA, "send media here")
        await self.access.check_direct_open(tx, membership, user_id)
        audience = await self.members.audience(tx, out.chat_id)
        await self._check_content(
            tx, membership, user_id, device_id, out.body, out.ciphertext, out.recipients, audience
        )
        now = self.clock.now_ms()
        if out.media_id is not None:
            await self.attachments.for_message(
                tx, user_id, out.media_id, encrypted_chat=bool(membership.chat.encrypted), now=now
            )
        if out.sticker_id is not None:
            await self.attachments.as_sticker(tx, user_id, out.sticker_id, now)
        if out.reply_to is not None:
            target = await self.messages.get(tx, out.reply_to)
            if target is None or target.chat_id != out.chat_id:
                raise DomainError(Code.VALIDATION_FAILED, "reply_to is a message of this chat.", field="reply_to")
        message = await self.timeline.append(
            tx,
            out,
            sender_id=user_id,
            sender_device_id=device_id,
            content_hash=digest,
            forwarded_from=forwarded_from,
            now=now,
            devices=audience.device_ids,
        )
        if self._sends_observed:
            sent = MessageSent(
                message_id=message.id,
                chat_id=message.chat_id,
                chat_type=membership.chat.type,
                seq=message.seq,
                kind=message.kind,
                encrypted=bool(membership.chat.encrypted),
                sender_id=user_id,
                sender_device_id=device_id,
                recipient_ids=tuple(m for m in audience.member_ids if m != user_id),
                at=now,
            )
            tx.after_commit(partial(self.hooks.notify, "message_sent", sent))
        return Sent(message, True)

    async def _check_content(
        self,
        tx: Queryable,
        membership: Membership,
        user_id: str,
        device_id: str,
        body: str | None,
        ciphertext: bytes | None,
        recipients: list[tuple[str, bytes]],
        audience: Audience | None = None,
    ) -> None:
        chat = membership.chat
        if not chat.encrypted:
            if ciphertext is not None or recipients:
                raise DomainError(Code.NOT_ENCRYPTED, "This chat is not end-to-end encrypted: send a plaintext body.")
            return
        if body is not None:
            raise DomainError(
                Code.ENCRYPTION_REQUIRED, "This chat is end-to-end encrypted: send ciphertext, never a plaintext body."
            )
        if audience is None:
            audience = await self.members.audience(tx, chat.id)
        keyed = audience.keyed()
        # Before the empty-recipients check: with no other device to encrypt to, this is what to say.
        _check_everyone_reached(user_id, audience.member_ids, keyed)
        if ciphertext is None and not recipients:
            raise DomainError(Code.ENCRYPTION_REQUIRED, "Send recipients (per-device ciphertexts) or a ciphertext.")
        if ciphertext is not None:
            if chat.type != "group":
                raise DomainError(Code.ENCRYPTION_REQUIRED, "A direct chat takes per-device ciphertexts (recipients).")
            await self.keys.check_group_send(tx, chat.id, device_id, list(keyed))
            return
        await self._check_devices(tx, device_id, [d for d, _ in recipients], keyed)

    async def _check_devices(self, tx: Queryable, device_id: str, named: list[str], keyed: dict[str, str]) -> None:
        """Signal's rule: an encrypted send names exactly the current devices, or nothing is stored.

        The current devices are those with published keys: one that has not published any cannot
        be encrypted to, and it can read only what is sent after it has.
        """
        current = dict(keyed)
        current.pop(device_id, None)  # the sending device already knows what it wrote
        named_set = set(named)
        missing = sorted(set(current) - named_set)
        unknown = sorted(named_set - set(current))
        if not missing and not unknown:
            return
        devices: dict[str, list[str]] = {}
        for d, owner in sorted(current.items()):
            devices.setdefault(owner, []).append(d)
        listing = [{"user_id": owner, "device_ids": ids} for owner, ids in sorted(devices.items())]
        # Devices that exist (revoked, or of a former member) are stale; others are simply wrong.
        stale = sorted(await self.devices.known_ids(tx, unknown))
        if stale and not missing and len(stale) == len(unknown):
            raise DomainError(
                Code.STALE_DEVICES,
                "Some devices are no longer in this chat; re-encrypt for the current ones.",
                stale_devices=stale,
                devices=listing,
            )
        raise DomainError(
            Code.DEVICE_MISMATCH,
            "The recipients do not match the chat's current devices.",
            missing_devices=missing,
            extra_devices=unknown,
            devices=listing,
        )

    # -- read ------------------------------------------------------------------------------

    async def history(
        self, user_id: str, device_id: str, chat_id: str, *, before: int | None, after: int | None, limit: int
    ) -> MessagePage:
        await self.access.access_chat(self.db, user_id, chat_id)
        rows = await self.messages.page(self.db, chat_id, user_id, before=before, after=after, limit=limit + 1)
        more = len(rows) > limit
        if more:  # drop the extra row, at the end away from the cursor
            rows = rows[:limit] if after is not None else rows[-limit:]
        items = await self._present(rows, user_id, device_id)
        next_before = items[0].seq if items and more and after is None else None
        next_after = items[-1].seq if items and more and after is not None else None
        return MessagePage(items, next_before, next_after)

    async def _present(self, rows: list[MessageRow], user_id: str, device_id: str) -> list[Message]:
        ids = [r.id for r in rows]
        mine = await self.recipients.for_device(self.db, ids, device_id)
        reactions = await self.reactions.summary(self.db, ids, user_id)
        return [
            message_from_row(
                r,
                ciphertext=mine.get(r.id),
                reactions=[Reaction(x["emoji"], x["count"], bool(x["mine"])) for x in reactions.get(r.id, [])],
            )
            for r in rows
        ]

    async def get(self, user_id: str, device_id: str, message_id: str) -> Message:
        _, row = await self._access_message(self.db, user_id, message_id)
        return (await self._present([row], user_id, device_id))[0]

    async def _access_message(self, db: Queryable, user_id: str, message_id: str) -> tuple[Membership, MessageRow]:
        row = await self.messages.get(db, message_id) if is_uuid(message_id) else None
        if row is None:
            raise DomainError(Code.NOT_FOUND, "No such message.")
        try:
            membership = await self.access.access_chat(db, user_id, row.chat_id)
        except DomainError:
            raise DomainError(Code.NOT_FOUND, "No such message.") from None
        return membership, row

    # -- change ----------------------------------------------------------------------------

    async def edit(
        self,
        user_id: str,
        device_id: str,
        message_id: str,
        *,
        body: str | None,
        ciphertext: bytes | None,
        recipients: list[tuple[str, bytes]],
    ) -> Message:
        if body is not None and len(body) > BODY_MAX:
            raise DomainError(Code.VALIDATION_FAILED, f"body is at most {BODY_MAX} characters.", field="body")
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership, row = await self._access_message(tx, user_id, message_id)
            if row.sender_id != user_id:
                raise DomainError(Code.FORBIDDEN, "Only the sender can edit a message.")
            if row.deleted_at is not None or row.kind == "system":
                raise DomainError(Code.CONFLICT, "This message cannot be edited.")
            membership.require(Permission.SEND_MESSAGES, "send messages here")
            await self._check_content(tx, membership, user_id, device_id, body, ciphertext, recipients)
            if not membership.chat.encrypted and body is None:
                raise DomainError(Code.VALIDATION_FAILED, "An edit carries the new body.", field="body")
            await self.messages.edit(tx, message_id, body, ciphertext, now)
            if recipients:
                await self.recipients.replace(tx, message_id, recipients)
            message = message_from_row(await self.messages.get(tx, message_id))
            per_device = {
                d: encode({"message": msgspec.structs.replace(message, ciphertext=ct)}) for d, ct in recipients
            } or None
            await self.timeline.to_chat(
                tx, message.chat_id, "message.edited", {"message": message}, now, per_device=per_device
            )
        return message

    async def delete(self, user_id: str, message_id: str, *, for_everyone: bool) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership, row = await self._access_message(tx, user_id, message_id)
            event = {"chat_id": row.chat_id, "message_id": message_id, "seq": row.seq}
            if not for_everyone:
                await self.messages.hide(tx, user_id, message_id)
                await self.timeline.to_user_devices(
                    tx, [user_id], "message.deleted", {**event, "for_everyone": False}, now
                )
            else:
                if row.sender_id != user_id:
                    membership.require(Permission.DELETE_OTHERS, "delete other people's messages")
                if row.deleted_at is not None:
                    return
                await self.tombstone(tx, row.chat_id, message_id, row.seq, now)

    async def tombstone(
        self,
        tx: Transaction,
        chat_id: str,
        message_id: str,
        seq: int,
        now: int,
        *,
        devices: Sequence[str] | None = None,
    ) -> None:
        """Delete a message for everyone, its checks done: its file goes, a tombstone stays, the members hear it."""
        await self.attachments.message_going(tx, message_id)
        if await self.messages.tombstone(tx, message_id, now):
            event = {"chat_id": chat_id, "message_id": message_id, "seq": seq, "for_everyone": True}
            await self.timeline.to_chat(tx, chat_id, "message.deleted", event, now, devices=devices)

    async def react(self, user_id: str, message_id: str, emoji: str, *, add: bool) -> list[Reaction]:
        emoji = check_reaction(emoji)
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership, row = await self._access_message(tx, user_id, message_id)
            chat_type = membership.chat.type
            if row.deleted_at is not None:
                raise DomainError(Code.CONFLICT, "This message was deleted.")
            changed = (
                await self.reactions.add(tx, message_id, user_id, emoji, now)
                if add
                else await self.reactions.remove(tx, message_id, user_id, emoji)
            )
            summary = (await self.reactions.summary(tx, [message_id], user_id)).get(message_id, [])
            reactions = [Reaction(x["emoji"], x["count"], bool(x["mine"])) for x in summary]
            if changed:
                count = next((x.count for x in reactions if x.emoji == emoji), 0)
                update = ReactionUpdated(row.chat_id, message_id, user_id, emoji, add, count)
                await self._reaction_updated(tx, update, now, chat_type=chat_type)
        return reactions

    async def withdraw_reaction(
        self,
        tx: Transaction,
        chat_id: str,
        message_id: str,
        user_id: str,
        emoji: str,
        now: int,
        *,
        devices: Sequence[str] | None = None,
    ) -> None:
        """Take a user's reaction off a message, its checks done; the members hear the new count."""
        if await self.reactions.remove(tx, message_id, user_id, emoji):
            summary = (await self.reactions.summary(tx, [message_id], user_id)).get(message_id, [])
            count = next((x["count"] for x in summary if x["emoji"] == emoji), 0)
            update = ReactionUpdated(chat_id, message_id, user_id, emoji, False, count)
            await self._reaction_updated(tx, update, now, devices)

    async def _reaction_updated(
        self,
        tx: Transaction,
        event: ReactionUpdated,
        now: int,
        devices: Sequence[str] | None = None,
        *,
        chat_type: str | None = None,
    ) -> None:
        if chat_type is None:
            chat_type = (await self.chats.get(tx, event.chat_id)).type
        per_device = None
        if chat_type == "channel":  # subscribers do not see each other: who reacted is for the reactor alone
            per_device = dict.fromkeys(await self.devices.active_ids_of(tx, [event.user_id]), encode(event))
            event = msgspec.structs.replace(event, user_id=None)
        await self.timeline.to_chat(
            tx, event.chat_id, "reaction.updated", event, now, per_device=per_device, devices=devices
        )

    async def forward(self, user_id: str, device_id: str, message_id: str, chat_id: str, client_id: str) -> Sent:
        _, row = await self._access_message(self.db, user_id, message_id)
        if row.deleted_at is not None or row.kind == "system":
            raise DomainError(Code.CONFLICT, "This message cannot be forwarded.")
        source_chat = await self.chats.get(self.db, row.chat_id)
        if source_chat.encrypted:
            raise DomainError(
                Code.ENCRYPTION_REQUIRED,
                "The server cannot read end-to-end encrypted messages; forward by re-encrypting on the client.",
            )
        out = Outgoing(
            chat_id=chat_id,
            client_id=client_id,
            kind=row.kind,
            body=row.body,
            media_id=row.media_id,
            sticker_id=row.sticker_id,
        )
        check_outgoing(out)
        origin = {"chat_id": row.chat_id, "message_id": row.id, "sender_id": row.sender_id}
        digest = hashlib.sha256(out.content_hash() + encode(origin)).digest()

        async def operation(tx: Transaction) -> Sent:
            # The target's rules are a send's rules: membership, permissions, blocks, encryption.
            return await self._do_send(tx, user_id, device_id, out, digest, forwarded_from=origin)

        return await self.batcher.submit(operation, chat_id=chat_id, guard=self._active_device, key=device_id)

    async def pin(self, user_id: str, message_id: str, *, pinned: bool) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership, row = await self._access_message(tx, user_id, message_id)
            membership.require(Permission.PIN, "pin messages")
            changed = (
                await self.pin_store.pin(tx, row.chat_id, message_id, user_id, now)
                if pinned
                else await self.pin_store.unpin(tx, row.chat_id, message_id)
            )
            if changed:
                await self.timeline.to_chat(
                    tx,
                    row.chat_id,
                    "message.pinned" if pinned else "message.unpinned",
                    {"chat_id": row.chat_id, "message_id": message_id, "user_id": user_id},
                    now,
                )

    async def pins(self, user_id: str, chat_id: str) -> list[Pin]:
        await self.access.access_chat(self.db, user_id, chat_id)
        return [
            Pin(r["message_id"], r["pinned_by"], r["pinned_at"])
            for r in await self.pin_store.for_chat(self.db, chat_id)
        ]

    async def mark_read(self, user_id: str, chat_id: str, seq: int) -> int:
        """Move my read marker forward (never back); return where it stands."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, user_id, chat_id)
            seq = min(seq, membership.chat.last_seq)
            if await self.members.mark_read(tx, chat_id, user_id, seq):
                event: dict[str, Any] = {"chat_id": chat_id, "user_id": user_id, "seq": seq}
                if membership.chat.type == "channel":  # subscribers do not see each other
                    await self.timeline.to_user_devices(tx, [user_id], "receipt.read", event, now)
                else:
                    await self.timeline.to_chat(tx, chat_id, "receipt.read", event, now)
            else:
                seq = membership.member.last_read_seq
        return seq
