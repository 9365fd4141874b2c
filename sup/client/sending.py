"""Sending: messages, edits and files, encrypted per device (direct chats) or with Sender Keys (groups).

Part of `Client` (see client.py).

- Encrypted direct chats: one ciphertext per device (every device of the other members and my own other
  devices, never the sending one), sessions started from prekey bundles; a `device_mismatch` (409) or
  `stale_devices` (410) refreshes the device lists and retries with the same client_id.
- Encrypted groups: Sender Keys. Each member device gets my current sender key (pairwise-encrypted,
  `POST /crypto/sender-keys`) before my next message; the key is rotated when a member or device goes
  away (and whenever the server says `sender_key_required`, which it does after a member leaves).
- Files in an encrypted chat are encrypted under a fresh key and uploaded as opaque blobs; their key,
  digest, name and type travel inside the encrypted message.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sup.client.chats import is_encrypted
from sup.client.crypto import (
    AttachmentKey,
    BadBundle,
    Bundle,
    OneTimePrekey,
    SignedPrekey,
    UntrustedIdentity,
    decrypt_attachment,
    encrypt_attachment,
)
from sup.client.devices import DevicePart
from sup.client.envelope import encode_envelope, encode_sender_key
from sup.client.http import ApiError, b64e
from sup.client.values import Attachment, BadDeviceKeys, ClientError, MemberWithoutDevice

log = logging.getLogger("sup.client")

SEND_ATTEMPTS = 6  # device lists can change between fetch and send; each retry refetches
# Answers to a group send after which refetching and sending again can succeed.
_GROUP_RETRIES = {"sender_key_required", "sender_key_missing", "device_mismatch", "device_gone"}

Deliver = Callable[..., Any]  # (ciphertext, recipients) -> the server's message


class _DeviceGone(Exception):
    """A listed device has no keys any more: refetch the device lists and try again."""


class Sender(DevicePart):
    async def send(
        self,
        chat_id: str,
        *,
        text: str | None,
        data: bytes | None,
        attachments: Iterable[Attachment],
        reply_to: str | None,
        client_id: str | None,
        sticker_id: str | None = None,
        story: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        client_id = client_id or str(uuid.uuid4())
        attachments = tuple(attachments)
        if len(attachments) > 1:
            raise ClientError("a message carries at most one attachment")
        media_id = attachments[0].media_id if attachments else None
        kind = "sticker" if sticker_id is not None else "media" if attachments else "text"
        chat = await self.chats.chat(chat_id)

        async def post(**content: Any) -> dict[str, Any]:
            """POST /messages with this message's client_id and references, and `content` (body or ciphertexts)."""
            return await self.state.http.send_message(
                chat_id, client_id, kind=kind, media_id=media_id, sticker_id=sticker_id, reply_to=reply_to, **content
            )

        if not is_encrypted(chat):
            if data is not None or any(a.encrypted for a in attachments):
                raise ClientError("plaintext chats take text and plaintext files only")
            if story is not None:
                raise ClientError("a reply to a story goes to the author's (encrypted) direct chat")
            sent = await post(body=text or "")
        else:
            if any(not a.encrypted for a in attachments):
                raise ClientError("an end-to-end encrypted chat takes encrypted attachments only (send_file)")
            plaintext = encode_envelope(
                chat_id,
                client_id=client_id,
                text=text,
                data=data,
                attachments=attachments,
                reply_to=reply_to,
                sticker_id=sticker_id,
                story=story,
            )

            async def deliver(ciphertext: bytes | None, recipients: dict[str, bytes] | None) -> dict[str, Any]:
                return await post(ciphertext=ciphertext, recipients=recipients)

            try:
                sent = await self.encrypted(chat, plaintext, deliver)
            except ApiError as error:
                # Encrypting again gave other bytes than an earlier attempt the server did keep.
                sent = await self._sent_before(chat_id, error)
        async with self.state.store.batch() as batch:
            batch.put_message(
                message_id=sent["id"],
                chat_id=chat_id,
                seq=sent["seq"],
                sender_user_id=self.state.user_id,
                sender_device_id=self.state.device_id,
                status="sent",
                content={
                    "client_id": client_id,
                    "text": text,
                    "data": b64e(data) if data is not None else None,
                    "attachments": [a.to_json() for a in attachments],
                    "reply_to": reply_to,
                    "sticker_id": sticker_id,
                    "story": story,
                },
                created_at=sent.get("created_at"),
            )
        return sent

    async def _sent_before(self, chat_id: str, error: ApiError) -> dict[str, Any]:
        """After `client_id_reused`: the message an earlier attempt of this send stored, if it was this
        device's in this chat (the answer was lost); else the error stands."""
        message_id = error.body.get("message_id") if error.code == "client_id_reused" else None
        if not isinstance(message_id, str):
            raise error
        sent = await self.state.http.message(message_id)
        if sent.get("chat_id") != chat_id or sent.get("sender_device_id") != self.state.device_id:
            raise error
        return sent

    async def edit_text(self, chat_id: str, message_id: str, text: str) -> dict[str, Any]:
        http, store = self.state.http, self.state.store
        chat = await self.chats.chat(chat_id)
        if not is_encrypted(chat):
            edited = await http.edit_message(message_id, body=text)
            stored = await store.message_at(chat_id, message_id, edited["seq"])
        else:
            original = await http.message(message_id)
            if original.get("chat_id") != chat_id:
                raise ClientError(f"message {message_id} is not in chat {chat_id}")
            # The edit names the original by its client_id, as recorded here when it was sent or received.
            stored = await store.message_at(chat_id, message_id, original["seq"])
            edit_of = ((stored or {}).get("content") or {}).get("client_id") or original["client_id"]
            plaintext = encode_envelope(chat_id, edit_of=edit_of, text=text)

            async def deliver(ciphertext: bytes | None, recipients: dict[str, bytes] | None) -> dict[str, Any]:
                return await http.edit_message(message_id, ciphertext=ciphertext, recipients=recipients)

            edited = await self.encrypted(chat, plaintext, deliver)
        if stored is not None and stored["content"] is not None:
            # My own copy shows the new text too (the server's event of my edit is not decrypted here).
            async with store.batch() as batch:
                batch.put_message(
                    **{k: stored[k] for k in ("message_id", "chat_id", "seq", "sender_user_id", "sender_device_id")},
                    status=stored["status"],
                    content={**stored["content"], "text": text, "edited": True},
                    created_at=stored["created_at"],
                )
        return edited

    async def upload_file(self, chat_id: str, data: bytes, *, name: str, mime: str) -> Attachment:
        """Upload a file for a message of this chat: encrypted (without its name) when the chat is."""
        http = self.state.http
        if is_encrypted(await self.chats.chat(chat_id)):
            blob, key = await asyncio.to_thread(encrypt_attachment, data)
            media = await http.upload_media(blob, encrypted=True)
            return Attachment(media["id"], key.key, key.digest, key.size, mime, name)
        media = await http.upload_media(data, filename=name)
        return Attachment(media["id"], b"", b"", media["size"], media["mime"], media["filename"])

    async def download(self, attachment: Attachment) -> bytes:
        if not attachment.encrypted:
            return await self.state.http.download_media(attachment.media_id)
        blob = await self.state.http.download_media(attachment.media_id)
        key = AttachmentKey(attachment.key, attachment.digest, attachment.size)
        return await asyncio.to_thread(decrypt_attachment, blob, key)

    # -- encryption --------------------------------------------------------------------------

    async def encrypted(self, chat: dict[str, Any], plaintext: bytes, deliver: Deliver) -> dict[str, Any]:
        if not is_encrypted(chat):  # the one way out for a plaintext body is the branch above; never here
            raise ClientError(f"chat {chat['id']} is not end-to-end encrypted")
        try:
            if chat["type"] == "group":
                return await self._send_group(chat["id"], plaintext, deliver)
            return await self._send_pairwise(chat["id"], plaintext, deliver)
        except ApiError as error:
            if error.code != "member_without_device":
                raise
            # No retry helps until they have a device with keys: keys.changed (added) says when.
            user_ids = tuple(sorted(str(u) for u in error.body.get("user_ids") or ()))
            self.devices.forget_listed(user_ids)
            raise MemberWithoutDevice(chat["id"], user_ids) from error

    async def _send_pairwise(self, chat_id: str, plaintext: bytes, deliver: Deliver) -> dict[str, Any]:
        state = self.state
        for attempt in range(SEND_ATTEMPTS):
            targets = await self.devices.recipients(chat_id)
            if not targets and (unreached := await self.devices.without_devices(chat_id)):
                # No device to encrypt to at all: the server would refuse an empty list before saying whom it
                # waits for (422 encryption_required), so the directory's answer is taken here.
                raise MemberWithoutDevice(chat_id, unreached)
            try:
                async with state.changing_crypto():
                    try:
                        recipients = {}
                        for device_id, (user_id, identity_key) in targets.items():
                            recipients[device_id] = await self.encrypt_to(user_id, device_id, identity_key, plaintext)
                    finally:
                        await state.save_crypto()
                return await deliver(None, recipients)
            except (ApiError, _DeviceGone) as error:
                retry = isinstance(error, _DeviceGone) or error.code in ("device_mismatch", "stale_devices")
                if not retry or attempt == SEND_ATTEMPTS - 1:
                    raise
                await self._after_device_mismatch(chat_id, error, attempt)
        raise AssertionError("unreachable")

    async def _after_device_mismatch(self, chat_id: str, error: Exception, attempt: int) -> None:
        """Refetch what the server says changed; wait a little if a device has not published keys yet."""
        self.chats.members.pop(chat_id, None)
        body = error.body if isinstance(error, ApiError) else {}
        listed = body.get("devices") or []
        self.devices.forget_listed([entry["user_id"] for entry in listed] or None)
        if attempt:
            await asyncio.sleep(0.2 * attempt)  # a device that just logged in publishes its keys next

    async def encrypt_to(self, user_id: str, device_id: str, identity_key: bytes, plaintext: bytes) -> bytes:
        """Pairwise-encrypt for one device (caller holds the lock), starting a session if needed."""
        crypto = self.state.crypto
        recorded = crypto.peer_identity(user_id, device_id)
        if recorded is not None and recorded != identity_key:
            # The directory lists a new identity for this device: its old sessions are useless.
            await self.devices.identity_changed(user_id, device_id, identity_key)
        bundle = None
        if not crypto.has_session(user_id, device_id):
            try:
                found = await self.state.http.prekey_bundle(user_id, device_id)
            except ApiError as error:
                if error.status == 404:  # logged out since the device list was fetched
                    raise _DeviceGone(device_id) from error
                raise
            bundle = _bundle(found)
        try:
            try:
                return await crypto.encrypt(user_id, device_id, plaintext, bundle)
            except UntrustedIdentity as error:
                await self.devices.identity_changed(user_id, device_id, error.identity_key)
                return await crypto.encrypt(user_id, device_id, plaintext, bundle)
        except BadBundle as error:
            # Skipping the device is no way out: the server refuses a send that does not name it.
            log.warning("device %s of %s has an unusable prekey bundle: %s", device_id, user_id, error)
            raise BadDeviceKeys(user_id, device_id, str(error)) from error

    async def _send_group(self, chat_id: str, plaintext: bytes, deliver: Deliver) -> dict[str, Any]:
        state = self.state
        for attempt in range(SEND_ATTEMPTS):
            targets = await self.devices.recipients(chat_id)
            try:
                async with state.changing_crypto():
                    try:
                        await self._share_sender_key(chat_id, targets)
                        ciphertext = state.crypto.group_encrypt(chat_id, plaintext)
                    finally:
                        await state.save_crypto()
                return await deliver(ciphertext, None)
            except (ApiError, _DeviceGone) as error:
                code = error.code if isinstance(error, ApiError) else "device_gone"
                if attempt == SEND_ATTEMPTS - 1 or code not in _GROUP_RETRIES:
                    raise
                self.chats.members.pop(chat_id, None)
                async with state.store.batch() as batch:
                    if code == "sender_key_required":
                        # The server forgot the chat's sender keys because a member left: a key it never saw.
                        batch.need_rotation(chat_id)
                    elif code == "sender_key_missing":
                        batch.unshare_sender_key(chat_id, error.body.get("missing_devices") or [])
                if code != "sender_key_required":
                    self.devices.forget_listed()  # a device came or went since the lists were fetched
                    if attempt:
                        await asyncio.sleep(0.2 * attempt)  # a device that just logged in publishes its keys next
        raise AssertionError("unreachable")

    async def _share_sender_key(self, chat_id: str, targets: dict[str, tuple[str, bytes]]) -> None:
        """Make sure every target device holds my current sender key (caller holds the lock)."""
        state = self.state
        shares = await state.store.sender_key_shares(chat_id)
        # A device that has my key but is no longer a target (it or its user left) must not read on.
        if await state.store.needs_rotation(chat_id) or any(d not in targets for d in shares):
            state.crypto.rotate_sender_key(chat_id)
            async with state.store.batch() as batch:
                batch.set(crypto=state.crypto.to_bytes())
                batch.rotated(chat_id)
            shares = {}
        distribution_id, distribution = state.crypto.sender_key_distribution(chat_id)
        needed = {d: t for d, t in targets.items() if shares.get(d) != distribution_id}
        if not needed:
            return
        message = encode_sender_key(chat_id, distribution_id, distribution)
        sealed = {}
        for device_id, (user_id, identity_key) in needed.items():
            sealed[device_id] = await self.encrypt_to(user_id, device_id, identity_key, message)
        await state.save_crypto()
        await state.http.post_sender_key(chat_id, distribution_id, sealed)
        async with state.store.batch() as batch:
            batch.shared_sender_key(chat_id, distribution_id, sealed)


def _bundle(found: dict[str, Any]) -> Bundle:
    spk = found["signed_prekey"]
    otk = found.get("one_time_prekey")
    return Bundle(
        user_id=found["user_id"],
        device_id=found["device_id"],
        identity_key=found["identity_key"],
        signed_prekey=SignedPrekey(spk["key_id"], spk["public_key"], spk["signature"]),
        one_time_prekey=OneTimePrekey(otk["key_id"], otk["public_key"]) if otk else None,
    )
