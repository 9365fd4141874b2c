"""Receiving: the event stream handled in order, messages decrypted, checked and kept.

Part of `Client` (see client.py). Every durable event is handled in order; crypto state, decrypted messages
and the event cursor are committed to the store together, and only then is the cursor acked, so a crash
never loses a ratchet step nor acknowledges a message it did not keep. A group message whose sender key has
not arrived waits (in the store) for its `sender_key` event. Events from a device whose new identity key is
not trusted (`accept_identity_changes=False`) are held in the store until `trust_identity` or
`reject_identity`. What cannot be decrypted, or is not what it claims to be, is reported as `Undecryptable`
rather than dropped (docs/e2e.md, "Message plaintext format").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sup.client.chats import Chats, is_encrypted
from sup.client.crypto import CryptoError, DecryptError, DuplicateMessage, NoSession, UntrustedIdentity
from sup.client.devices import DevicePart, Devices
from sup.client.envelope import decode_envelope
from sup.client.http import b64d, decode_message
from sup.client.prekeys import Prekeys
from sup.client.socket import SupSocket
from sup.client.state import DeviceState, Stop, Work
from sup.client.values import Attachment, MessageDeleted, ReceivedMessage, SafetyNumberChanged, Undecryptable

if TYPE_CHECKING:
    from sup.client.calls import Calls

log = logging.getLogger("sup.client")

EVENT_BATCH = 200  # events handled per store commit
_GROUP_MESSAGE = 4  # second byte of a sender-key ciphertext (sup.client.crypto.wire.MessageType)
_NOT_A_MEMBER = "the sender is not a member of this chat (removed; not added again since)"


class Receiver(DevicePart):
    def __init__(self, state: DeviceState, chats: Chats, devices: Devices, prekeys: Prekeys) -> None:
        super().__init__(state, chats, devices)
        self.prekeys = prekeys
        self.cursor = state.store.cursor
        self.socket: SupSocket | None = None
        self.listeners: list[Callable[[dict[str, Any]], Any]] = []
        self.calls: Calls | None = None  # set by Client: call frames go there
        self._untrusted_shown: set[tuple[str, str, bytes]] = set()

    async def run(self, socket: SupSocket) -> None:
        """Handle the socket's frames in batches until it ends; the inbox learns how it ended."""
        try:
            while True:
                frames = [await socket.__anext__()]
                frames += socket.take_buffered(EVENT_BATCH - 1)
                await self.handle_batch(frames)
        except StopAsyncIteration:
            self.state.inbox.put_nowait(Stop(None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            log.warning("event stream ended: %r", error)
            self.state.inbox.put_nowait(Stop(error))

    async def handle_batch(self, frames: list[dict[str, Any]]) -> None:
        state = self.state
        work = Work()
        cursor = self.cursor
        async with state.lock:
            for frame in frames:
                await self._handle_one(frame, work)
                if frame.get("cursor") is not None:
                    cursor = frame["cursor"]
                elif frame.get("type") == "resync":
                    cursor = frame["resume_from"]
            if cursor != self.cursor:
                work.batch.set(cursor=cursor)
            await state.commit(work)
        self.cursor = cursor
        if cursor is not None and self.socket is not None:
            self.socket.ack(cursor)
        state.publish(work)
        for frame in frames:
            for listener in self.listeners:
                try:
                    listener(frame)
                except Exception:
                    log.exception("event listener failed")

    async def _handle_one(self, frame: dict[str, Any], work: Work) -> None:
        try:
            await self._handle(frame, work)
        except Exception:
            # Handlers touch only memory and the local store; one bad frame must not stall the stream.
            log.exception("could not handle %s event %s", frame.get("type"), frame.get("cursor"))

    async def _handle(self, frame: dict[str, Any], work: Work) -> None:
        kind = frame.get("type")
        if kind in ("message.new", "message.edited"):
            await self._receive_message(frame, work)
        elif kind == "message.deleted":
            self._deleted(frame, work)
        elif kind == "sender_key":
            await self._receive_sender_key(frame, work)
        elif kind == "keys.changed":
            await self.devices.on_keys_changed(frame, work)
        elif kind in ("chat.created", "chat.updated", "chat.member.added", "chat.member.removed", "chat.deleted"):
            await self.chats.on_event(frame, work)
        elif self.calls is not None and (
            (isinstance(kind, str) and kind.startswith("call."))
            or (kind == "error" and str(frame.get("request_id") or "").startswith("call-"))
        ):
            await self.calls.on_frame(frame, work)
        elif kind == "prekeys.low":
            work.after_commit.append(self.prekeys.top_up)
        elif kind == "resync":
            # Events were pruned before we read them: caches may be stale, and missed messages are gone.
            self.chats.on_resync(work)
            self.devices.forget_listed()

    def _deleted(self, frame: dict[str, Any], work: Work) -> None:
        """`message.deleted`: this device keeps no copy of what was deleted, and says so."""
        message_id = frame["message_id"]
        work.batch.mark_deleted(message_id)
        work.batch.remove_pending(message_id)  # a group message still waiting for its key is never shown
        for_everyone = bool(frame.get("for_everyone", True))
        work.items.append(MessageDeleted(frame["chat_id"], message_id, int(frame.get("seq") or 0), for_everyone))

    # -- identity changes held for the user's decision -----------------------------------------

    async def trust_identity(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        async with self.state.changing_crypto():
            work = Work(crypto_changed=True)
            self.state.crypto.forget_session(user_id, device_id)
            await self.devices.record_identity(user_id, device_id, identity_key, work.batch)
            self._untrusted_shown = {t for t in self._untrusted_shown if t[:2] != (user_id, device_id)}
            for frame_id, frame in await self.state.store.held(user_id, device_id):
                work.batch.release(frame_id)  # before handling: a frame held again is stored again
                await self._handle_one(frame, work)
            await self.state.commit(work)
        self.state.publish(work)

    async def reject_identity(self, user_id: str, device_id: str) -> None:
        async with self.state.changing_crypto():
            work = Work()
            for frame_id, frame in await self.state.store.held(user_id, device_id):
                work.batch.release(frame_id)
                if "message" in frame:
                    message = decode_message(dict(frame["message"]))
                    edited = frame["type"] == "message.edited"
                    self._undecryptable(work, message, "its sender's new identity key was not trusted", edited=edited)
            await self.state.commit(work)
        self.state.publish(work)

    def _hold(self, work: Work, frame: dict[str, Any], error: UntrustedIdentity) -> None:
        """Keep an event from a device whose new identity key is not trusted (accept_identity_changes=False)."""
        what = frame["message"]["id"] if "message" in frame else frame.get("distribution_id")
        frame_id = f"{frame['type']}:{frame.get('cursor')}:{what}"
        work.batch.hold(frame_id, error.user_id, error.device_id, frame)
        shown = (error.user_id, error.device_id, error.identity_key)
        if shown not in self._untrusted_shown:
            self._untrusted_shown.add(shown)
            work.items.append(SafetyNumberChanged(error.user_id, error.device_id, error.identity_key, trusted=False))

    # -- messages and sender keys --------------------------------------------------------------

    async def _receive_message(self, frame: dict[str, Any], work: Work) -> None:
        message = decode_message(dict(frame["message"]))
        if message.get("kind") == "system" or message.get("deleted"):
            return
        sender, device = message.get("sender_id"), message.get("sender_device_id")
        if device == self.state.device_id:
            return  # my own message: recorded when sent
        chat_id = message["chat_id"]
        edited = frame["type"] == "message.edited"
        ciphertext = message.get("ciphertext")
        if ciphertext is None and message.get("body") is not None:
            chat = await self.chats.for_message(chat_id, work)
            if chat is None or is_encrypted(chat):
                # Only the server can have written it: members' SDKs never send plaintext here.
                where = "an unknown chat" if chat is None else "an end-to-end encrypted chat"
                self._undecryptable(work, message, f"a plaintext message in {where} (refused)", edited=edited)
                return
            plain: dict[str, Any] = {"text": message["body"]}
            if message.get("media_id"):
                plain["attachments"] = [Attachment(message["media_id"], b"", b"", 0).to_json()]
            self._deliver(work, message, plain, encrypted=False, edited=edited)
            return
        if ciphertext is None or sender is None or device is None:
            self._undecryptable(work, message, "no ciphertext for this device", edited=edited)
            return
        if self.chats.has_left(chat_id, sender):
            # Whatever key it is under (a sender key kept, a new one, pairwise): it left this chat.
            self._undecryptable(work, message, _NOT_A_MEMBER, edited=edited)
            return
        try:
            if len(ciphertext) > 1 and ciphertext[1] == _GROUP_MESSAGE:
                try:
                    plaintext = self.state.crypto.group_decrypt(chat_id, sender, device, ciphertext)
                except NoSession:
                    # Its sender key has not arrived yet: keep it until the sender_key event does.
                    work.batch.add_pending(frame)
                    work.pending.setdefault((chat_id, sender, device), []).append(frame)
                    return
                work.crypto_changed = True
            else:
                plaintext = await self._pairwise_decrypt(sender, device, ciphertext, work)
            envelope = decode_envelope(plaintext, chat_id)
            original = await self._bound_to(message, envelope, edited, work)
        except DuplicateMessage:
            await self._duplicate(work, message)
            return
        except UntrustedIdentity as error:
            self._hold(work, frame, error)
            return
        except (CryptoError, ValueError) as error:
            self._undecryptable(work, message, f"{type(error).__name__}: {error}", edited=edited)
            return
        self._deliver(work, message, envelope, encrypted=True, edited=edited, original=original)

    async def _receive_sender_key(self, frame: dict[str, Any], work: Work) -> None:
        chat_id, sender, device = frame["chat_id"], frame["sender_user_id"], frame["sender_device_id"]
        try:
            plaintext = await self._pairwise_decrypt(sender, device, b64d(frame["ciphertext"]) or b"", work)
            envelope = decode_envelope(plaintext, chat_id)
            share = envelope["sender_key"]
            if share.get("distribution_id") != frame.get("distribution_id"):
                raise DecryptError("the sender key names another distribution than its event")
            if self.chats.has_left(chat_id, sender):
                log.warning("sender key from %s/%s for %s refused: not a member", sender, device, chat_id)
                work.crypto_changed = True  # the pairwise session moved on
                for message, pending in await self._take_pending(work, chat_id, sender, device):
                    self._undecryptable(work, message, _NOT_A_MEMBER, edited=pending["type"] == "message.edited")
                return
            self.state.crypto.process_sender_key_distribution(chat_id, sender, device, b64d(share["key"]) or b"")
        except DuplicateMessage:
            return
        except UntrustedIdentity as error:
            self._hold(work, frame, error)
            return
        except (CryptoError, ValueError, KeyError, TypeError) as error:
            log.warning("sender key from %s/%s for %s refused: %r", sender, device, chat_id, error)
            return
        work.crypto_changed = True
        for message, pending in await self._take_pending(work, chat_id, sender, device, keep_waiting=True):
            edited = pending["type"] == "message.edited"
            try:
                plaintext = self.state.crypto.group_decrypt(chat_id, sender, device, message["ciphertext"])
                envelope = decode_envelope(plaintext, chat_id)
                original = await self._bound_to(message, envelope, edited, work)
            except NoSession:
                continue  # another distribution still to come
            except DuplicateMessage:
                work.batch.remove_pending(message["id"])
                await self._duplicate(work, message)
                continue
            except (CryptoError, ValueError) as error:
                work.batch.remove_pending(message["id"])
                self._undecryptable(work, message, f"{type(error).__name__}: {error}", edited=edited)
                continue
            work.batch.remove_pending(message["id"])
            self._deliver(work, message, envelope, encrypted=True, edited=edited, original=original)

    async def _take_pending(
        self, work: Work, chat_id: str, sender: str, device: str, *, keep_waiting: bool = False
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(message, frame) of each group message waiting for this sender device's key, once each; they leave
        the store here unless `keep_waiting` (then the caller removes each one it could handle)."""
        waiting = await self.state.store.pending(chat_id, sender, device)
        waiting += work.pending.pop((chat_id, sender, device), [])
        seen = set()
        out = []
        for pending in waiting:
            message = decode_message(dict(pending["message"]))
            if message["id"] in seen:
                continue
            seen.add(message["id"])
            if not keep_waiting:
                work.batch.remove_pending(message["id"])
            out.append((message, pending))
        return out

    async def _pairwise_decrypt(self, user_id: str, device_id: str, ciphertext: bytes, work: Work) -> bytes:
        crypto = self.state.crypto
        try:
            plaintext = await crypto.decrypt(user_id, device_id, ciphertext)
        except UntrustedIdentity as error:
            if not self.state.accept_identity_changes:
                raise
            await self.devices.record_identity(user_id, device_id, error.identity_key, work.batch)
            work.items.append(SafetyNumberChanged(user_id, device_id, error.identity_key))
            plaintext = await crypto.decrypt(user_id, device_id, ciphertext)
        work.crypto_changed = True
        identity_key = crypto.peer_identity(user_id, device_id)
        if identity_key is not None and await self.devices.known(user_id):
            # A device never listed to me, writing to me: a user met before has one more device.
            await self.devices.meet(user_id, {device_id: identity_key}, work)
        return plaintext

    async def _duplicate(self, work: Work, message: dict[str, Any]) -> None:
        """A message whose keys were used before: fine if it was shown, else it is lost and must say so."""
        if message["id"] in work.shown or await self.state.store.has_message(message["id"]):
            log.info("message %s was decrypted before; skipped", message["id"])
            return
        self._undecryptable(work, message, "its message keys were already used, but this device never showed it")

    async def _bound_to(
        self, message: dict[str, Any], envelope: dict[str, Any], edited: bool, work: Work
    ) -> dict[str, Any] | None:
        """Check that an envelope was encrypted for this very message; for an edit, what this device has of
        the original (None if nothing). DecryptError when the server delivers it as another message.

        The message's id and seq are the server's, but its client_id was chosen by the sender before
        encrypting: a new message's envelope carries it, an edit's names the original's (`edit_of`).
        """
        if not edited:
            if "edit_of" in envelope:
                raise DecryptError("an edit delivered as a new message (replayed by the server?)")
            if not isinstance(envelope.get("client_id"), str) or envelope["client_id"] != message.get("client_id"):
                raise DecryptError("the envelope belongs to another message: its client_id differs (replayed?)")
            return None
        if "client_id" in envelope or not isinstance(envelope.get("edit_of"), str):
            raise DecryptError("a new message delivered as an edit (replayed by the server?)")
        original = work.known.get(message["id"])
        if original is None:
            store = self.state.store
            stored = await store.message_at(message["chat_id"], message["id"], message["seq"])
            if stored is None and await store.has_message(message["id"]):
                raise DecryptError("the edited message is not where this device has it (seq changed by the server?)")
            original = (stored or {}).get("content")
        # The client_id recorded when the original arrived; the server's word only if this device never read it.
        expected = (original or {}).get("client_id") or message.get("client_id")
        if envelope["edit_of"] != expected:
            raise DecryptError("the edit was made for another message (replayed by the server?)")
        return original

    # -- what the user is shown ----------------------------------------------------------------

    def _deliver(
        self,
        work: Work,
        message: dict[str, Any],
        envelope: dict[str, Any],
        *,
        encrypted: bool,
        edited: bool,
        original: dict[str, Any] | None = None,
    ) -> None:
        try:
            data = b64d(envelope.get("data"))
            attachments = tuple(Attachment.from_json(a) for a in envelope.get("attachments") or [])
        except (ValueError, KeyError, TypeError) as error:
            self._undecryptable(work, message, f"malformed envelope: {error!r}", edited=edited)
            return
        if encrypted and any(not a.encrypted for a in attachments):
            # It would be fetched as the server serves it, with no digest to check.
            self._undecryptable(
                work, message, "an attachment without a key in an end-to-end encrypted message", edited=edited
            )
            return
        if not encrypted:
            reply_to, client_id = message.get("reply_to"), message.get("client_id")
        elif edited:  # an edit replaces the text; what it replies to stays the original's
            reply_to, client_id = (original or {}).get("reply_to"), envelope["edit_of"]
        else:  # never the server's cleartext copy: it could point the reply elsewhere
            reply_to, client_id = envelope.get("reply_to"), envelope["client_id"]
        if not isinstance(reply_to, str | None):
            self._undecryptable(work, message, "malformed envelope: reply_to is not a message id", edited=edited)
            return
        # Like reply_to, the sticker and the story replied to come from the envelope in an encrypted chat.
        source = message if not encrypted else (original or {}) if edited else envelope
        sticker_id = source.get("sticker_id")
        story = source.get("story") if encrypted else None
        if not isinstance(sticker_id, str | None) or not (story is None or _is_story_ref(story)):
            self._undecryptable(work, message, "malformed envelope: sticker_id or story", edited=edited)
            return
        story = {"id": story["id"], "author_id": story["author_id"]} if story is not None else None
        text = envelope.get("text")
        item = ReceivedMessage(
            **_origin(message),
            text=text if isinstance(text, str) else None,
            data=data,
            attachments=attachments,
            reply_to=reply_to,
            encrypted=encrypted,
            edited=edited,
            from_me=message.get("sender_id") == self.state.user_id,
            sticker_id=sticker_id,
            story=story,
        )
        content = {
            "client_id": client_id,
            "text": item.text,
            "data": envelope.get("data"),
            "attachments": [a.to_json() for a in attachments],
            "reply_to": reply_to,
            "edited": edited,
            "sticker_id": sticker_id,
            "story": story,
        }
        work.items.append(item)
        work.shown.add(item.message_id)
        work.known[item.message_id] = content
        _keep(work, item, "ok", content)

    def _undecryptable(self, work: Work, message: dict[str, Any], reason: str, *, edited: bool = False) -> None:
        item = Undecryptable(**_origin(message), reason=reason, edited=edited)
        work.items.append(item)
        work.shown.add(item.message_id)
        if edited:
            return  # a refused edit is reported; the message stays as this device had it
        _keep(work, item, "undecryptable", None, reason)


def _origin(message: dict[str, Any]) -> dict[str, Any]:
    """What every item about a server message names: where it is, who sent it and when."""
    return {
        "chat_id": message["chat_id"],
        "message_id": message["id"],
        "seq": message["seq"],
        "sender_user_id": message.get("sender_id"),
        "sender_device_id": message.get("sender_device_id"),
        "created_at": message.get("created_at") or 0,
    }


# The fields `_origin` gives every item; the stored copy of its message keeps them under the same names.
_KEPT_AS_SHOWN = ("message_id", "chat_id", "seq", "sender_user_id", "sender_device_id", "created_at")


def _keep(
    work: Work, item: ReceivedMessage | Undecryptable, status: str, content: dict[str, Any] | None, reason: str = ""
) -> None:
    """This device's copy of a message it shows, stored with the batch (it cannot be decrypted twice)."""
    origin = {name: getattr(item, name) for name in _KEPT_AS_SHOWN}
    work.batch.put_message(**origin, status=status, content=content, reason=reason or None)


def _is_story_ref(value: object) -> bool:
    """`{"id": <story id>, "author_id": <user id>}`, as a reply to a story names it."""
    return isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("author_id"), str)
