"""The high-level client: one device of one user, end-to-end encrypted, resumable.

    client = await Client.register("https://sup.example", "alice.db", "alice", "correct horse battery")
    chat = await client.direct_chat_with("bob")
    await client.send_text(chat["id"], "hello")
    async for item in client.messages():      # ReceivedMessage | Undecryptable | SafetyNumberChanged | NewDevice
        print(item)

What it does for you:

- On a device's first login it creates its crypto state (`DeviceCrypto`), stores it, then
  publishes the identity key, a signed prekey and 100 one-time prekeys; it tops them up
  on `prekeys.low` and rotates the signed prekey weekly.
- Encrypted direct chats: one ciphertext per device (every device of the other members and
  my own other devices, never the sending one), sessions started from prekey bundles; a
  `device_mismatch` (409) or `stale_devices` (410) refreshes the device lists and retries
  with the same client_id.
- Encrypted groups: Sender Keys. Each member device gets my current sender key
  (pairwise-encrypted, `POST /crypto/sender-keys`) before my next message; the key is
  rotated when a member or device goes away (and whenever the server says
  `sender_key_required`, which it does after a member leaves). When a member leaves, the sender keys I
  hold from it for that chat are forgotten (a removed device's, in every chat), and until `chat.member.added`
  names it again every message from that user in that chat is `Undecryptable`, even under a new sender key:
  the server cannot keep a removed member writing to the group.
- Receiving: every durable event is handled in order; crypto state, decrypted messages and
  the event cursor are committed to the store together, and only then is the cursor acked,
  so a crash never loses a ratchet step nor acknowledges a message it did not keep. A group
  message whose sender key has not arrived waits (in the store) for its `sender_key` event.
- Not trusting the server: a chat seen once as encrypted (and every direct chat) stays encrypted
  whatever the server later says; a plaintext body or a keyless file there is `Undecryptable`. Every
  device of a user met after the first contact is shown (`NewDevice`) before anything is encrypted to
  it, and the safety number covers every device key recorded here, not only the directory's list.

The plaintext inside every ciphertext is the envelope (UTF-8 JSON, see `encode_envelope`):

    {"v": 2, "chat_id": "<chat id>", "client_id": "<the message's client_id>", "text": "...",
     "data": "<base64>", "attachments": [{"media_id", "key", "digest", "size", "mime", "name"}],
     "reply_to": "<message id>"}

an edit names the message it replaces instead of a client_id of its own (`"edit_of": "<its client_id>"`),
and a sender key, sent pairwise, is `{"v": 2, "chat_id": ..., "sender_key": {"distribution_id", "key"}}`.
`chat_id` binds the plaintext to its chat, `client_id` / `edit_of` to its message, so a server can neither
replay it into another chat nor pass it off as another message or as an edit of one; `reply_to` is taken
from the envelope only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from sup.client.crypto import (
    AttachmentKey,
    BadBundle,
    Bundle,
    CryptoError,
    DecryptError,
    DeviceCrypto,
    DuplicateMessage,
    NoSession,
    OneTimePrekey,
    SignedPrekey,
    UntrustedIdentity,
    decrypt_attachment,
    encrypt_attachment,
    safety_number,
)
from sup.client.http import ApiError, Session, SupHttp, b64d, b64e, decode_message
from sup.client.socket import SocketClosed, SupSocket
from sup.client.store import Batch, ClientStore, StoreInUse

log = logging.getLogger("sup.client")

ENVELOPE_VERSION = 2  # 2: client_id / edit_of required in messages
ONE_TIME_PREKEYS = 100
SIGNED_PREKEY_MAX_AGE = 7 * 86400  # seconds; Signal rotates weekly too
SEND_ATTEMPTS = 6  # device lists can change between fetch and send; each retry refetches
EVENT_BATCH = 200  # events handled per store commit
_GROUP_MESSAGE = 4  # second byte of a sender-key ciphertext (sup.client.crypto.wire.MessageType)
_NOT_A_MEMBER = "the sender is not a member of this chat (removed; not added again since)"


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


class _DeviceGone(Exception):
    """A listed device has no keys any more: refetch the device lists and try again."""


# Answers to a group send after which refetching and sending again can succeed.
_GROUP_RETRIES = {"sender_key_required", "sender_key_missing", "device_mismatch", "device_gone"}


# -- what messages() yields ---------------------------------------------------------------------


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

    Yielded before anything is encrypted to it; the safety number with that user changes with it.
    """

    user_id: str
    device_id: str
    identity_key: bytes


Item = ReceivedMessage | Undecryptable | SafetyNumberChanged | NewDevice


class _Stop:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


# -- the envelope --------------------------------------------------------------------------------


def encode_envelope(
    chat_id: str,
    *,
    client_id: str | None = None,
    edit_of: str | None = None,
    text: str | None = None,
    data: bytes | None = None,
    attachments: Iterable[Attachment] = (),
    reply_to: str | None = None,
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


def is_encrypted(chat: dict[str, Any]) -> bool:
    """Whether a chat is end-to-end encrypted here: every direct chat is, whatever the server says."""
    return bool(chat.get("encrypted")) or chat.get("type") == "direct"


# -- the client ----------------------------------------------------------------------------------


@dataclass
class _Work:
    """What one batch of events changed, committed together."""

    batch: Batch = field(default_factory=Batch)
    items: list[Item] = field(default_factory=list)
    crypto_changed: bool = False
    # group messages set aside in this batch, not yet in the store: (chat, user, device) -> frames
    pending: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    after_commit: list[Callable[[], Any]] = field(default_factory=list)
    shown: set[str] = field(default_factory=set)  # message ids delivered or reported in this batch
    # what this batch stored for each message it delivered (not in the store until the commit)
    known: dict[str, dict[str, Any]] = field(default_factory=dict)


class Client:
    """One logged-in device. Create with `register`, `login` or `open`; `close` when done."""

    def __init__(
        self,
        store: ClientStore,
        http: SupHttp,
        crypto: DeviceCrypto,
        *,
        accept_identity_changes: bool = True,
    ) -> None:
        self.store = store
        self.http = http
        self.crypto = crypto
        # Signal's default: a changed identity key is accepted and shown (SafetyNumberChanged); with
        # False, encryption to it fails with UntrustedIdentity until `trust_identity` is called.
        self.accept_identity_changes = accept_identity_changes
        self._lock = asyncio.Lock()  # the crypto state and its persistence, one change at a time
        self._chats: dict[str, dict[str, Any]] = {}
        self._members: dict[str, list[str]] = {}
        # chat id -> users seen leaving it and not added back since (the store's `removed_members`)
        self._removed: dict[str, set[str]] = _load_removed(store)
        self._devices: dict[str, dict[str, bytes]] = {}  # user id -> device id -> identity key
        # The devices met (a cache of the store's `devices`); checked and updated without an await between.
        self._known: dict[str, dict[str, bytes]] = {}
        self._untrusted_shown: set[tuple[str, str, bytes]] = set()
        self._inbox: asyncio.Queue[Item | _Stop] = asyncio.Queue()
        self._socket: SupSocket | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listeners: list[Callable[[dict[str, Any]], Any]] = []
        self._closed = False
        self.cursor = store.cursor

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    async def register(
        cls,
        base_url: str,
        store_path: str,
        username: str,
        password: str,
        *,
        display_name: str = "",
        device_name: str = "",
        invite_code: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> Client:
        """A new account; this device is its first, with fresh keys published."""
        return await cls._new_device(
            base_url,
            store_path,
            session,
            lambda http: http.register(
                username, password, display_name=display_name, device_name=device_name, invite_code=invite_code
            ),
        )

    @classmethod
    async def login(
        cls,
        base_url: str,
        store_path: str,
        username: str,
        password: str,
        *,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        device_name: str = "",
        session: aiohttp.ClientSession | None = None,
    ) -> Client:
        """A new device of an existing account, with fresh keys published."""
        return await cls._new_device(
            base_url,
            store_path,
            session,
            lambda http: http.login(
                username, password, totp_code=totp_code, recovery_code=recovery_code, device_name=device_name
            ),
        )

    @classmethod
    async def open(cls, store_path: str, *, session: aiohttp.ClientSession | None = None) -> Client:
        """The device saved in `store_path`, as it was (tokens, keys, cursor)."""
        store = await _open_store(store_path)
        try:
            if not (store.server_url and store.device_id and store.crypto and store.tokens):
                raise ClientError(f"{store_path} holds no logged-in device: register or log in first")
            http = SupHttp(store.server_url, session=session, tokens=store.tokens, on_tokens=store.set_tokens)
            client = cls(store, http, _load_crypto(store))
        except BaseException:
            await store.close()
            raise
        try:
            if not store.get("keys_published"):
                await client._publish_keys()
        except BaseException:
            await client.close()
            raise
        return client

    @classmethod
    async def _new_device(
        cls,
        base_url: str,
        store_path: str,
        session: aiohttp.ClientSession | None,
        sign_in: Callable[[SupHttp], Awaitable[Session]],
    ) -> Client:
        """A fresh store, a session from `sign_in` (register or login), then keys made and published."""
        store = await _open_store(store_path)
        if store.device_id:
            await store.close()
            raise ClientError(f"{store_path} already holds a device: use Client.open")
        http = SupHttp(base_url, session=session, on_tokens=store.set_tokens)
        try:
            return await cls._first_login(store, http, base_url, await sign_in(http))
        except BaseException:
            await http.close()
            await store.close()
            raise

    @classmethod
    async def _first_login(cls, store: ClientStore, http: SupHttp, base_url: str, answer: Session) -> Client:
        crypto = DeviceCrypto.create(answer.user_id, answer.device_id)
        async with store.batch() as batch:
            batch.set(
                server_url=base_url.rstrip("/"),
                user_id=answer.user_id,
                username=answer.user["username"],
                device_id=answer.device_id,
                crypto=crypto.to_bytes(),
                keys_published=0,
            )
        client = cls(store, http, crypto)
        await client._publish_keys()
        await client._meet_own_devices(crypto.identity_key)
        return client

    async def _meet_own_devices(self, identity_key: bytes) -> None:
        """First contact with my own account: its devices now are known, any later one is a NewDevice."""
        try:
            listed = await self.http.user_keys(self.user_id)
        except ApiError as error:
            log.warning("could not list my own devices: %s", error)
            listed = []
        async with self.store.batch() as batch:
            batch.record_device(self.user_id, self.device_id, identity_key)
            for record in listed:
                batch.record_device(self.user_id, record["device_id"], record["identity_key"])
        self._known.pop(self.user_id, None)

    async def _publish_keys(self) -> None:
        """Publish this device's keys, once. The private keys are stored before the public ones leave."""
        try:
            published = await self.http.device_keys(self.user_id, self.device_id)
        except ApiError as error:
            if error.status != 404:
                raise
            published = None
        if published is None or published["identity_key"] != self.crypto.identity_key:
            async with self._changing_crypto():
                prekeys = self.crypto.generate_one_time_prekeys(ONE_TIME_PREKEYS)
                await self._save_crypto()
            await self.http.publish_keys(self.crypto.identity_key, self.crypto.signed_prekey(), prekeys)
        await self.store.set(keys_published=1)

    # -- properties and lifecycle ----------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self.store.user_id or ""

    @property
    def device_id(self) -> str:
        return self.store.device_id or ""

    @property
    def username(self) -> str | None:
        return self.store.username

    @property
    def socket(self) -> SupSocket | None:
        return self._socket

    async def start(self) -> None:
        """Connect the event stream and start handling events (messages() does this itself)."""
        if self._pump is not None or self._closed:
            return
        self._socket = SupSocket(self.http, cursor=self.store.cursor)
        await self._socket.start()
        self._pump = asyncio.create_task(self._run_events(), name=f"sup-client-{self.device_id}")
        self._spawn(self._rotate_signed_prekey_if_old())

    async def close(self) -> None:
        """Stop the event stream (after acknowledging what was handled), then close everything."""
        if self._closed:
            return
        self._closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._socket is not None:
            await self._socket.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._inbox.put_nowait(_Stop(None))
        await self.http.close()
        await self.store.close()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_event(self, listener: Callable[[dict[str, Any]], Any]) -> None:
        """Call `listener(frame)` for every frame received (typing, presence, receipts, ...), after it is handled."""
        self._listeners.append(listener)

    async def messages(self) -> AsyncIterator[Item]:
        """Messages as they arrive (one consumer): ReceivedMessage, Undecryptable, SafetyNumberChanged, NewDevice."""
        await self.start()
        while True:
            item = await self._inbox.get()
            if isinstance(item, _Stop):
                self._inbox.put_nowait(item)  # every later call ends too
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def next_message(self, within: float | None = None) -> Item:
        """The next item of messages(), waiting at most `within` seconds (TimeoutError)."""
        await self.start()
        item = await asyncio.wait_for(self._inbox.get(), within)
        if isinstance(item, _Stop):
            self._inbox.put_nowait(item)
            raise item.error or SocketClosed("the client is closed")
        return item

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())

    # -- chats -------------------------------------------------------------------------------

    async def user_by_username(self, username: str) -> dict[str, Any]:
        return await self.http.user_by_username(username)

    async def direct_chat(self, user_id: str) -> dict[str, Any]:
        """The (end-to-end encrypted) direct chat with a user, created if needed."""
        chat = await self.http.create_direct(user_id)
        return await self._remember_chat(chat)

    async def direct_chat_with(self, username: str) -> dict[str, Any]:
        return await self.direct_chat((await self.http.user_by_username(username))["id"])

    async def create_group(self, title: str, member_ids: Iterable[str] = (), *, encrypted: bool = True) -> dict:
        chat = await self.http.create_group(title, member_ids, encrypted=encrypted)
        return await self._remember_chat(chat)

    async def add_members(self, chat_id: str, user_ids: Iterable[str]) -> list[str]:
        added = await self.http.add_members(chat_id, user_ids)
        self._members.pop(chat_id, None)
        return added

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        """Remove a member; in an encrypted group my sender key is replaced before my next message."""
        await self.http.remove_member(chat_id, user_id)
        self._members.pop(chat_id, None)
        async with self.store.batch() as batch:
            batch.need_rotation(chat_id)

    async def chats(self) -> list[dict[str, Any]]:
        """My chats, from the server (and remembered locally)."""
        found = [await self._pin(chat) async for chat in self.http.chats()]
        async with self.store.batch() as batch:
            for chat in found:
                self._chats[chat["id"]] = chat
                batch.put_chat(chat)
        return found

    async def chat(self, chat_id: str) -> dict[str, Any]:
        """A chat's info: memory, then the store, then the server."""
        chat = self._chats.get(chat_id) or await self.store.chat(chat_id)
        if chat is None:
            chat = await self._pin(await self.http.chat(chat_id))
            await self.store.put_chat(chat)
        self._chats[chat_id] = chat
        return chat

    async def _remember_chat(self, chat: dict[str, Any]) -> dict[str, Any]:
        chat = await self._pin(chat)
        self._chats[chat["id"]] = chat
        await self.store.put_chat(chat)
        return chat

    async def _pin(self, chat: dict[str, Any]) -> dict[str, Any]:
        """The chat as the server describes it, except that encryption is never turned off.

        A direct chat is always encrypted, and a chat seen encrypted once stays so: otherwise a server
        could announce `encrypted: false` and receive the next message in plaintext.
        """
        known = self._chats.get(chat["id"]) or await self.store.chat(chat["id"])
        if is_encrypted(chat) and chat.get("encrypted"):
            return chat
        if is_encrypted(chat) or (known is not None and is_encrypted(known)):
            log.warning("the server says chat %s is not end-to-end encrypted: ignored, it stays encrypted", chat["id"])
            return {**chat, "encrypted": True}
        return chat

    async def local_history(self, chat_id: str, *, limit: int = 100) -> list[dict[str, Any]]:
        """Messages this device sent or decrypted in a chat, oldest first (the server cannot decrypt them)."""
        return await self.store.messages(chat_id, limit=limit)

    async def _member_ids(self, chat_id: str) -> list[str]:
        members = self._members.get(chat_id)
        if members is None:
            members = [m["user_id"] for m in await self.http.members(chat_id)]
            self._members[chat_id] = members
        return members

    async def _user_devices(self, user_id: str) -> dict[str, bytes]:
        devices = self._devices.get(user_id)
        if devices is None:
            devices = {d["device_id"]: d["identity_key"] for d in await self.http.user_keys(user_id)}
            self._devices[user_id] = devices
        return devices

    async def _recipients(self, chat_id: str) -> dict[str, tuple[str, bytes]]:
        """device id -> (user id, identity key) for every device that must read what I send here."""
        members = await self._member_ids(chat_id)
        users = set(members) | {self.user_id}
        listed = await asyncio.gather(*(self._user_devices(u) for u in sorted(users)))
        out: dict[str, tuple[str, bytes]] = {}
        for user_id, devices in zip(sorted(users), listed, strict=True):
            await self._meet_devices(user_id, devices)  # shown before anything is encrypted to a new one
            for device_id, identity_key in devices.items():
                if device_id != self.device_id:
                    out[device_id] = (user_id, identity_key)
        return out

    async def _known_devices(self, user_id: str) -> dict[str, bytes]:
        """The devices of a user this device has met (device id -> identity key); empty before first contact."""
        known = self._known.get(user_id)
        if known is None:
            loaded = await self.store.known_devices(user_id)
            known = self._known.setdefault(user_id, loaded)  # a concurrent caller may have loaded it first
        return known

    async def _meet_devices(
        self, user_id: str, devices: dict[str, bytes], work: _Work | None = None
    ) -> list[NewDevice]:
        """Record devices of a user not met before; after the first contact each one is a NewDevice.

        The first contact with a user trusts the devices listed then (as the first identity key of a device
        is trusted). With `work` the records and notices join that batch; else they are stored and shown now.
        """
        known = await self._known_devices(user_id)
        first_contact = not known
        fresh = {d: k for d, k in devices.items() if d not in known and d != self.device_id}
        if not fresh:
            return []
        known.update(fresh)  # no await since the check: one notice per device, however many callers
        notices = [] if first_contact else [NewDevice(user_id, d, k) for d, k in sorted(fresh.items())]
        for notice in notices:
            log.warning("user %s has a device not seen before: %s", user_id, notice.device_id)
        if work is not None:
            for device_id, key in fresh.items():
                work.batch.record_device(user_id, device_id, key)
            work.items.extend(notices)
            return notices
        async with self.store.batch() as batch:
            for device_id, key in fresh.items():
                batch.record_device(user_id, device_id, key)
        for notice in notices:
            self._inbox.put_nowait(notice)
        return notices

    async def _check_new_devices(self, user_id: str) -> None:
        """After `keys.changed` (added) for a user already met: show the new device now, not at the next send."""
        if not await self._known_devices(user_id):
            return
        self._devices.pop(user_id, None)
        await self._meet_devices(user_id, await self._user_devices(user_id))

    def _forget_devices(self, user_ids: Iterable[str] | None = None) -> None:
        if user_ids is None:
            self._devices.clear()
        for user_id in user_ids or ():
            self._devices.pop(user_id, None)

    # -- sending -----------------------------------------------------------------------------

    async def send_text(
        self, chat_id: str, text: str, *, reply_to: str | None = None, client_id: str | None = None
    ) -> dict[str, Any]:
        """Send a text message (encrypted if the chat is); the server's message (its id and seq)."""
        return await self.send(chat_id, text=text, reply_to=reply_to, client_id=client_id)

    async def send(
        self,
        chat_id: str,
        *,
        text: str | None = None,
        data: bytes | None = None,
        attachments: Iterable[Attachment] = (),
        reply_to: str | None = None,
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a message; the same `client_id` again is a retry and returns the original.

        At most one attachment: the server lets a chat's members fetch the one file a message names.
        """
        client_id = client_id or str(uuid.uuid4())
        attachments = tuple(attachments)
        if len(attachments) > 1:
            raise ClientError("a message carries at most one attachment")
        media_id = attachments[0].media_id if attachments else None
        kind = "media" if attachments else "text"
        chat = await self.chat(chat_id)
        if not is_encrypted(chat):
            if data is not None or any(a.encrypted for a in attachments):
                raise ClientError("plaintext chats take text and plaintext files only")
            sent = await self.http.send_message(
                chat_id, client_id, body=text or "", kind=kind, media_id=media_id, reply_to=reply_to
            )
        else:
            if any(not a.encrypted for a in attachments):
                raise ClientError("an end-to-end encrypted chat takes encrypted attachments only (send_file)")
            plaintext = encode_envelope(
                chat_id, client_id=client_id, text=text, data=data, attachments=attachments, reply_to=reply_to
            )

            async def deliver(ciphertext: bytes | None, recipients: dict[str, bytes] | None) -> dict[str, Any]:
                return await self.http.send_message(
                    chat_id,
                    client_id,
                    ciphertext=ciphertext,
                    recipients=recipients,
                    kind=kind,
                    media_id=media_id,
                    reply_to=reply_to,
                )

            sent = await self._encrypted(chat, plaintext, deliver)
        async with self.store.batch() as batch:
            batch.put_message(
                message_id=sent["id"],
                chat_id=chat_id,
                seq=sent["seq"],
                sender_user_id=self.user_id,
                sender_device_id=self.device_id,
                status="sent",
                content={
                    "client_id": client_id,
                    "text": text,
                    "data": b64e(data) if data is not None else None,
                    "attachments": [a.to_json() for a in attachments],
                    "reply_to": reply_to,
                },
                created_at=sent.get("created_at"),
            )
        return sent

    async def edit_text(self, chat_id: str, message_id: str, text: str) -> dict[str, Any]:
        """Replace the text of one of my messages (re-encrypted for the chat's current devices)."""
        chat = await self.chat(chat_id)
        if not is_encrypted(chat):
            return await self.http.edit_message(message_id, body=text)
        original = await self.http.message(message_id)
        if original.get("chat_id") != chat_id:
            raise ClientError(f"message {message_id} is not in chat {chat_id}")
        # The edit names the original by its client_id, as recorded here when it was sent or received.
        stored = await self._stored_message(chat_id, message_id, original["seq"])
        edit_of = ((stored or {}).get("content") or {}).get("client_id") or original["client_id"]
        plaintext = encode_envelope(chat_id, edit_of=edit_of, text=text)

        async def deliver(ciphertext: bytes | None, recipients: dict[str, bytes] | None) -> dict[str, Any]:
            return await self.http.edit_message(message_id, ciphertext=ciphertext, recipients=recipients)

        return await self._encrypted(chat, plaintext, deliver)

    async def send_file(
        self,
        chat_id: str,
        data: bytes,
        *,
        name: str = "",
        mime: str = "application/octet-stream",
        text: str = "",
        client_id: str | None = None,
    ) -> dict[str, Any]:
        """Send a file. In an encrypted chat it is encrypted under a fresh key, uploaded as an opaque
        blob (without its name), and its key, digest, name and type travel inside the encrypted message;
        in a plaintext chat (a channel) it is uploaded as it is and the server processes it."""
        chat = await self.chat(chat_id)
        if is_encrypted(chat):
            blob, key = await asyncio.to_thread(encrypt_attachment, data)
            media = await self.http.upload_media(blob, encrypted=True)
            attachment = Attachment(media["id"], key.key, key.digest, key.size, mime, name)
        else:
            media = await self.http.upload_media(data, filename=name)
            attachment = Attachment(media["id"], b"", b"", media["size"], media["mime"], media["filename"])
        return await self.send(chat_id, text=text or None, attachments=[attachment], client_id=client_id)

    async def download(self, attachment: Attachment) -> bytes:
        """Fetch an attachment and decrypt it; DecryptError if the blob was swapped or damaged.

        A plaintext chat's file (no key) comes back as the server serves it.
        """
        if not attachment.encrypted:
            return await self.http.download_media(attachment.media_id)
        blob = await self.http.download_media(attachment.media_id)
        key = AttachmentKey(attachment.key, attachment.digest, attachment.size)
        return await asyncio.to_thread(decrypt_attachment, blob, key)

    async def _encrypted(self, chat: dict[str, Any], plaintext: bytes, deliver: Callable[..., Any]) -> dict[str, Any]:
        if not is_encrypted(chat):  # the one way out for a plaintext body is the branch above; never here
            raise ClientError(f"chat {chat['id']} is not end-to-end encrypted")
        if chat["type"] == "group":
            return await self._send_group(chat["id"], plaintext, deliver)
        return await self._send_pairwise(chat["id"], plaintext, deliver)

    async def _send_pairwise(self, chat_id: str, plaintext: bytes, deliver: Callable[..., Any]) -> dict[str, Any]:
        for attempt in range(SEND_ATTEMPTS):
            targets = await self._recipients(chat_id)
            try:
                async with self._changing_crypto():
                    try:
                        recipients = {}
                        for device_id, (user_id, identity_key) in targets.items():
                            recipients[device_id] = await self._encrypt_to(user_id, device_id, identity_key, plaintext)
                    finally:
                        await self._save_crypto()
                return await deliver(None, recipients)
            except (ApiError, _DeviceGone) as error:
                retry = isinstance(error, _DeviceGone) or error.code in ("device_mismatch", "stale_devices")
                if not retry or attempt == SEND_ATTEMPTS - 1:
                    raise
                await self._after_device_mismatch(chat_id, error, attempt)
        raise AssertionError("unreachable")

    async def _after_device_mismatch(self, chat_id: str, error: Exception, attempt: int) -> None:
        """Refetch what the server says changed; wait a little if a device has not published keys yet."""
        self._members.pop(chat_id, None)
        body = error.body if isinstance(error, ApiError) else {}
        listed = body.get("devices") or []
        self._forget_devices([entry["user_id"] for entry in listed] or None)
        if attempt:
            await asyncio.sleep(0.2 * attempt)  # a device that just logged in publishes its keys next

    async def _encrypt_to(self, user_id: str, device_id: str, identity_key: bytes, plaintext: bytes) -> bytes:
        """Pairwise-encrypt for one device (caller holds the lock), starting a session if needed."""
        recorded = self.crypto.peer_identity(user_id, device_id)
        if recorded is not None and recorded != identity_key:
            # The directory lists a new identity for this device: its old sessions are useless.
            await self._identity_changed(user_id, device_id, identity_key)
        bundle = None
        if not self.crypto.has_session(user_id, device_id):
            try:
                found = await self.http.prekey_bundle(user_id, device_id)
            except ApiError as error:
                if error.status == 404:  # logged out since the device list was fetched
                    raise _DeviceGone(device_id) from error
                raise
            bundle = _bundle(found)
        try:
            try:
                return await self.crypto.encrypt(user_id, device_id, plaintext, bundle)
            except UntrustedIdentity as error:
                await self._identity_changed(user_id, device_id, error.identity_key)
                return await self.crypto.encrypt(user_id, device_id, plaintext, bundle)
        except BadBundle as error:
            # Skipping the device is no way out: the server refuses a send that does not name it.
            log.warning("device %s of %s has an unusable prekey bundle: %s", device_id, user_id, error)
            raise BadDeviceKeys(user_id, device_id, str(error)) from error

    async def _identity_changed(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        if not self.accept_identity_changes:
            raise UntrustedIdentity(user_id, device_id, identity_key)
        self.crypto.forget_session(user_id, device_id)
        self.crypto.accept_identity(user_id, device_id, identity_key)
        (await self._known_devices(user_id))[device_id] = identity_key
        async with self.store.batch() as batch:
            batch.record_device(user_id, device_id, identity_key)
        self._inbox.put_nowait(SafetyNumberChanged(user_id, device_id, identity_key))

    async def trust_identity(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        """Accept a changed identity key (after comparing safety numbers); what was held for it is handled now."""
        async with self._changing_crypto():
            work = _Work(crypto_changed=True)
            self.crypto.forget_session(user_id, device_id)
            self.crypto.accept_identity(user_id, device_id, identity_key)
            (await self._known_devices(user_id))[device_id] = identity_key
            work.batch.record_device(user_id, device_id, identity_key)
            self._untrusted_shown = {t for t in self._untrusted_shown if t[:2] != (user_id, device_id)}
            for frame_id, frame in await self.store.held(user_id, device_id):
                work.batch.release(frame_id)  # before handling: a frame held again is stored again
                await self._handle_one(frame, work)
            await self._commit(work)
        self._publish(work)

    async def reject_identity(self, user_id: str, device_id: str) -> None:
        """Keep distrusting a changed identity key: messages held for it are reported as Undecryptable."""
        async with self._changing_crypto():
            work = _Work()
            for frame_id, frame in await self.store.held(user_id, device_id):
                work.batch.release(frame_id)
                if "message" in frame:
                    message = decode_message(dict(frame["message"]))
                    edited = frame["type"] == "message.edited"
                    self._undecryptable(work, message, "its sender's new identity key was not trusted", edited=edited)
            await self._commit(work)
        self._publish(work)

    async def _send_group(self, chat_id: str, plaintext: bytes, deliver: Callable[..., Any]) -> dict[str, Any]:
        for attempt in range(SEND_ATTEMPTS):
            targets = await self._recipients(chat_id)
            try:
                async with self._changing_crypto():
                    try:
                        await self._share_sender_key(chat_id, targets)
                        ciphertext = self.crypto.group_encrypt(chat_id, plaintext)
                    finally:
                        await self._save_crypto()
                return await deliver(ciphertext, None)
            except (ApiError, _DeviceGone) as error:
                code = error.code if isinstance(error, ApiError) else "device_gone"
                if attempt == SEND_ATTEMPTS - 1 or code not in _GROUP_RETRIES:
                    raise
                self._members.pop(chat_id, None)
                async with self.store.batch() as batch:
                    if code == "sender_key_required":
                        # The server forgot the chat's sender keys because a member left: a key it never saw.
                        batch.need_rotation(chat_id)
                    elif code == "sender_key_missing":
                        batch.unshare_sender_key(chat_id, error.body.get("missing_devices") or [])
                if code != "sender_key_required":
                    self._forget_devices()  # a device came or went since the lists were fetched
                    if attempt:
                        await asyncio.sleep(0.2 * attempt)  # a device that just logged in publishes its keys next
        raise AssertionError("unreachable")

    async def _share_sender_key(self, chat_id: str, targets: dict[str, tuple[str, bytes]]) -> None:
        """Make sure every target device holds my current sender key (caller holds the lock)."""
        shares = await self.store.sender_key_shares(chat_id)
        # A device that has my key but is no longer a target (it or its user left) must not read on.
        if await self.store.needs_rotation(chat_id) or any(d not in targets for d in shares):
            self.crypto.rotate_sender_key(chat_id)
            async with self.store.batch() as batch:
                batch.set(crypto=self.crypto.to_bytes())
                batch.rotated(chat_id)
            shares = {}
        distribution_id, distribution = self.crypto.sender_key_distribution(chat_id)
        needed = {d: t for d, t in targets.items() if shares.get(d) != distribution_id}
        if not needed:
            return
        message = msgspec.json.encode(
            {
                "v": ENVELOPE_VERSION,
                "chat_id": chat_id,
                "sender_key": {"distribution_id": distribution_id, "key": b64e(distribution)},
            }
        )
        sealed = {}
        for device_id, (user_id, identity_key) in needed.items():
            sealed[device_id] = await self._encrypt_to(user_id, device_id, identity_key, message)
        await self._save_crypto()
        await self.http.post_sender_key(chat_id, distribution_id, sealed)
        async with self.store.batch() as batch:
            batch.shared_sender_key(chat_id, distribution_id, sealed)

    @contextlib.asynccontextmanager
    async def _changing_crypto(self) -> AsyncIterator[None]:
        """Hold the crypto state for a change that is persisted before the block ends."""
        async with self._lock:
            if self._closed:
                # The event pump may have stopped mid-batch: the state in memory is ahead of the store
                # and must never be written now.
                raise ClientError("the client is closed")
            yield

    async def _save_crypto(self) -> None:
        await self.store.set(crypto=self.crypto.to_bytes())

    # -- keys --------------------------------------------------------------------------------

    async def safety_number(self, user_id: str) -> str:
        """The 60-digit number both users see when no one is in the middle (compare it in person).

        It covers every device key recorded here for each user as well as the directory's current list, so
        a server can neither hide a device it added while the number is compared nor slip one in unseen
        (a device listed for the first time is shown as NewDevice).
        """
        mine = await self._identity_keys(self.user_id)
        mine.append(self.crypto.identity_key)
        theirs = await self._identity_keys(user_id)
        if not theirs:
            raise ClientError("that user has no device with published keys")
        return await asyncio.to_thread(safety_number, self.user_id, mine, user_id, theirs)

    async def _identity_keys(self, user_id: str) -> list[bytes]:
        self._devices.pop(user_id, None)
        await self._meet_devices(user_id, await self._user_devices(user_id))
        keys = []
        for device_id, key in (await self._known_devices(user_id)).items():
            if device_id == self.device_id:
                continue
            # The key this device encrypts to where it has met the device; else the one recorded when listed.
            recorded = self.crypto.peer_identity(user_id, device_id)
            keys.append(recorded if recorded is not None else key)
        return keys

    async def top_up_prekeys(self, count: int = ONE_TIME_PREKEYS) -> int:
        """Make and upload more one-time prekeys; the number the server now holds."""
        async with self._changing_crypto():
            prekeys = self.crypto.generate_one_time_prekeys(count)
            await self._save_crypto()  # before upload: a prekey handed out must be one we can use
        return await self.http.upload_prekeys(prekeys)

    async def _rotate_signed_prekey_if_old(self) -> None:
        status = await self.http.prekey_status()
        created = status.get("signed_prekey_created_at")
        if created is not None and time.time() - created / 1000 < SIGNED_PREKEY_MAX_AGE:
            return
        async with self._changing_crypto():
            signed = self.crypto.rotate_signed_prekey()
            await self._save_crypto()
        await self.http.upload_prekeys([], signed_prekey=signed)

    # -- receiving ---------------------------------------------------------------------------

    async def _run_events(self) -> None:
        assert self._socket is not None
        socket = self._socket
        try:
            while True:
                frames = [await socket.__anext__()]
                frames += socket.take_buffered(EVENT_BATCH - 1)
                await self._handle_batch(frames)
        except StopAsyncIteration:
            self._inbox.put_nowait(_Stop(None))
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            log.warning("event stream ended: %r", error)
            self._inbox.put_nowait(_Stop(error))

    async def _handle_batch(self, frames: list[dict[str, Any]]) -> None:
        work = _Work()
        cursor = self.cursor
        async with self._lock:
            for frame in frames:
                await self._handle_one(frame, work)
                if frame.get("cursor") is not None:
                    cursor = frame["cursor"]
                elif frame.get("type") == "resync":
                    cursor = frame["resume_from"]
            if cursor != self.cursor:
                work.batch.set(cursor=cursor)
            await self._commit(work)
        self.cursor = cursor
        if cursor is not None and self._socket is not None:
            self._socket.ack(cursor)
        self._publish(work)
        for frame in frames:
            for listener in self._listeners:
                try:
                    listener(frame)
                except Exception:
                    log.exception("event listener failed")

    async def _handle_one(self, frame: dict[str, Any], work: _Work) -> None:
        try:
            await self._handle(frame, work)
        except Exception:
            # Handlers touch only memory and the local store; one bad frame must not stall the stream.
            log.exception("could not handle %s event %s", frame.get("type"), frame.get("cursor"))

    async def _commit(self, work: _Work) -> None:
        """Store what a batch changed, in one transaction (caller holds the lock)."""
        if work.crypto_changed:
            work.batch.set(crypto=self.crypto.to_bytes())
        try:
            await self.store.apply(work.batch)
        except BaseException:
            # Nothing was kept: forget the ratchet steps taken in memory, so the replay decrypts again.
            if self.store.crypto is not None:
                self.crypto = _load_crypto(self.store)
            self._removed = _load_removed(self.store)
            self._known.clear()  # devices met in this batch are met again (and shown again) on the replay
            raise

    def _publish(self, work: _Work) -> None:
        for item in work.items:
            self._inbox.put_nowait(item)
        for action in work.after_commit:
            self._spawn(action())

    async def _handle(self, frame: dict[str, Any], work: _Work) -> None:
        kind = frame.get("type")
        if kind in ("message.new", "message.edited"):
            await self._receive_message(frame, work)
        elif kind == "sender_key":
            await self._receive_sender_key(frame, work)
        elif kind == "keys.changed":
            await self._keys_changed(frame, work)
        elif kind in ("chat.created", "chat.updated"):
            chat = await self._pin(frame["chat"])
            self._chats[chat["id"]] = chat
            work.batch.put_chat(chat)
        elif kind == "chat.member.added":
            chat = await self._pin(frame["chat"])
            self._chats[chat["id"]] = chat
            work.batch.put_chat(chat)
            self._members.pop(chat["id"], None)
            added = frame.get("user_ids") or []
            self._members_back(work, chat["id"], added)
            if self.user_id in added and chat["id"] in self._removed:
                # I was out of the chat: whoever came back meanwhile was announced to the members only.
                work.after_commit.append(lambda: self._recheck_removed([chat["id"]]))
        elif kind == "chat.member.removed":
            chat_id = frame["chat_id"]
            self._members.pop(chat_id, None)
            chat = self._chats.get(chat_id) or await self.store.chat(chat_id)
            if frame["user_id"] != self.user_id:
                self._member_gone(work, chat_id, frame["user_id"])
                if chat and is_encrypted(chat) and chat.get("type") == "group":
                    work.batch.need_rotation(chat_id)
        elif kind == "chat.deleted":
            self._chats.pop(frame["chat_id"], None)
            self._members.pop(frame["chat_id"], None)
            work.batch.forget_chat(frame["chat_id"])
            if self._removed.pop(frame["chat_id"], None) is not None:
                work.batch.set(removed_members=_dump_removed(self._removed))
        elif kind == "prekeys.low":
            work.after_commit.append(self.top_up_prekeys)
        elif kind == "resync":
            # Events were pruned before we read them: caches may be stale, and missed messages are gone.
            self._chats.clear()
            self._members.clear()
            self._devices.clear()
            if self._removed:
                work.after_commit.append(lambda: self._recheck_removed(list(self._removed)))

    def _member_gone(self, work: _Work, chat_id: str, user_id: str) -> None:
        """A member left: its sender keys here are dropped, and its messages refused until it is added again."""
        self._removed.setdefault(chat_id, set()).add(user_id)
        work.batch.set(removed_members=_dump_removed(self._removed))
        if self.crypto.forget_sender_keys(user_id, chat_id=chat_id):
            work.crypto_changed = True

    def _members_back(self, work: _Work, chat_id: str, user_ids: Iterable[str]) -> None:
        removed = self._removed.get(chat_id)
        if not removed or removed.isdisjoint(user_ids):
            return
        removed.difference_update(user_ids)
        if not removed:
            del self._removed[chat_id]
        work.batch.set(removed_members=_dump_removed(self._removed))

    async def _recheck_removed(self, chat_ids: list[str]) -> None:
        """After events were missed (a resync, or while I was out of a chat): who is listed as a member again
        was added back meanwhile (the member list is what my sends trust too)."""
        for chat_id in chat_ids:
            # The lock spans the lookup, so a removal handled meanwhile is not undone by an older list.
            async with self._lock:
                if self._closed or chat_id not in self._removed:
                    continue
                try:
                    members = [m["user_id"] for m in await self.http.members(chat_id)]
                except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    log.warning("could not list the members of chat %s: %r", chat_id, error)
                    continue
                work = _Work()
                self._members_back(work, chat_id, members)
                await self._commit(work)

    async def _keys_changed(self, frame: dict[str, Any], work: _Work) -> None:
        user_id = frame["user_id"]
        device_ids = list(frame.get("device_ids") or [])
        self._devices.pop(user_id, None)
        if frame.get("change") == "added":
            work.after_commit.append(lambda: self._check_new_devices(user_id))
        if frame.get("change") == "removed":
            known = await self._known_devices(user_id)
            for device_id in device_ids:
                known.pop(device_id, None)
                work.batch.forget_device(user_id, device_id)
                if self.crypto.forget_sender_keys(user_id, device_id):
                    work.crypto_changed = True
        if frame.get("change") in ("removed", "identity"):
            for chat_id in await self.store.chats_shared_with(device_ids):
                work.batch.need_rotation(chat_id)
        if frame.get("change") == "identity":
            for device_id in device_ids:
                if self.crypto.has_session(user_id, device_id):
                    self.crypto.forget_session(user_id, device_id)
                    work.crypto_changed = True

    async def _pairwise_decrypt(self, user_id: str, device_id: str, ciphertext: bytes, work: _Work) -> bytes:
        try:
            plaintext = await self.crypto.decrypt(user_id, device_id, ciphertext)
        except UntrustedIdentity as error:
            if not self.accept_identity_changes:
                raise
            self.crypto.accept_identity(user_id, device_id, error.identity_key)
            (await self._known_devices(user_id))[device_id] = error.identity_key
            work.batch.record_device(user_id, device_id, error.identity_key)
            work.items.append(SafetyNumberChanged(user_id, device_id, error.identity_key))
            plaintext = await self.crypto.decrypt(user_id, device_id, ciphertext)
        work.crypto_changed = True
        identity_key = self.crypto.peer_identity(user_id, device_id)
        if identity_key is not None and await self._known_devices(user_id):
            # A device never listed to me, writing to me: a user met before has one more device.
            await self._meet_devices(user_id, {device_id: identity_key}, work)
        return plaintext

    def _hold(self, work: _Work, frame: dict[str, Any], error: UntrustedIdentity) -> None:
        """Keep an event from a device whose new identity key is not trusted (accept_identity_changes=False)."""
        what = frame["message"]["id"] if "message" in frame else frame.get("distribution_id")
        frame_id = f"{frame['type']}:{frame.get('cursor')}:{what}"
        work.batch.hold(frame_id, error.user_id, error.device_id, frame)
        shown = (error.user_id, error.device_id, error.identity_key)
        if shown not in self._untrusted_shown:
            self._untrusted_shown.add(shown)
            work.items.append(SafetyNumberChanged(error.user_id, error.device_id, error.identity_key, trusted=False))

    async def _duplicate(self, work: _Work, message: dict[str, Any]) -> None:
        """A message whose keys were used before: fine if it was shown, else it is lost and must say so."""
        if message["id"] in work.shown or await self.store.has_message(message["id"]):
            log.info("message %s was decrypted before; skipped", message["id"])
            return
        self._undecryptable(work, message, "its message keys were already used, but this device never showed it")

    async def _chat_for_message(self, chat_id: str, work: _Work) -> dict[str, Any] | None:
        chat = self._chats.get(chat_id) or await self.store.chat(chat_id)
        if chat is None:
            try:
                chat = await self._pin(await self.http.chat(chat_id))
            except (ApiError, aiohttp.ClientError, OSError, TimeoutError) as error:
                log.warning("could not look up chat %s: %r", chat_id, error)
                return None
            self._chats[chat_id] = chat
            work.batch.put_chat(chat)
        return chat

    async def _receive_message(self, frame: dict[str, Any], work: _Work) -> None:
        message = decode_message(dict(frame["message"]))
        if message.get("kind") == "system" or message.get("deleted"):
            return
        sender, device = message.get("sender_id"), message.get("sender_device_id")
        if device == self.device_id:
            return  # my own message: recorded when sent
        chat_id = message["chat_id"]
        edited = frame["type"] == "message.edited"
        ciphertext = message.get("ciphertext")
        if ciphertext is None and message.get("body") is not None:
            chat = await self._chat_for_message(chat_id, work)
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
        if sender in self._removed.get(chat_id, ()):
            # Whatever key it is under (a sender key kept, a new one, pairwise): it left this chat.
            self._undecryptable(work, message, _NOT_A_MEMBER, edited=edited)
            return
        try:
            if len(ciphertext) > 1 and ciphertext[1] == _GROUP_MESSAGE:
                try:
                    plaintext = self.crypto.group_decrypt(chat_id, sender, device, ciphertext)
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

    async def _receive_sender_key(self, frame: dict[str, Any], work: _Work) -> None:
        chat_id, sender, device = frame["chat_id"], frame["sender_user_id"], frame["sender_device_id"]
        try:
            plaintext = await self._pairwise_decrypt(sender, device, b64d(frame["ciphertext"]) or b"", work)
            envelope = decode_envelope(plaintext, chat_id)
            share = envelope["sender_key"]
            if share.get("distribution_id") != frame.get("distribution_id"):
                raise DecryptError("the sender key names another distribution than its event")
            if sender in self._removed.get(chat_id, ()):
                log.warning("sender key from %s/%s for %s refused: not a member", sender, device, chat_id)
                work.crypto_changed = True  # the pairwise session moved on
                await self._refuse_pending(work, chat_id, sender, device)
                return
            self.crypto.process_sender_key_distribution(chat_id, sender, device, b64d(share["key"]) or b"")
        except DuplicateMessage:
            return
        except UntrustedIdentity as error:
            self._hold(work, frame, error)
            return
        except (CryptoError, ValueError, KeyError, TypeError) as error:
            log.warning("sender key from %s/%s for %s refused: %r", sender, device, chat_id, error)
            return
        work.crypto_changed = True
        waiting = await self.store.pending(chat_id, sender, device)
        waiting += work.pending.pop((chat_id, sender, device), [])
        seen = set()
        for pending in waiting:
            message = decode_message(dict(pending["message"]))
            if message["id"] in seen:
                continue
            seen.add(message["id"])
            edited = pending["type"] == "message.edited"
            try:
                plaintext = self.crypto.group_decrypt(chat_id, sender, device, message["ciphertext"])
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

    async def _refuse_pending(self, work: _Work, chat_id: str, sender: str, device: str) -> None:
        """Messages waiting for a sender key from a user who left: that key will never be used."""
        waiting = await self.store.pending(chat_id, sender, device)
        waiting += work.pending.pop((chat_id, sender, device), [])
        seen = set()
        for pending in waiting:
            message = decode_message(dict(pending["message"]))
            if message["id"] not in seen:
                seen.add(message["id"])
                work.batch.remove_pending(message["id"])
                self._undecryptable(work, message, _NOT_A_MEMBER, edited=pending["type"] == "message.edited")

    async def _stored_message(self, chat_id: str, message_id: str, seq: int) -> dict[str, Any] | None:
        """This device's copy of a message, if it has it under this seq (the store is indexed by chat and seq)."""
        rows = await self.store.messages(chat_id, limit=1, before_seq=seq + 1)
        return rows[0] if rows and rows[0]["message_id"] == message_id else None

    async def _bound_to(
        self, message: dict[str, Any], envelope: dict[str, Any], edited: bool, work: _Work
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
            stored = await self._stored_message(message["chat_id"], message["id"], message["seq"])
            if stored is None and await self.store.has_message(message["id"]):
                raise DecryptError("the edited message is not where this device has it (seq changed by the server?)")
            original = (stored or {}).get("content")
        # The client_id recorded when the original arrived; the server's word only if this device never read it.
        expected = (original or {}).get("client_id") or message.get("client_id")
        if envelope["edit_of"] != expected:
            raise DecryptError("the edit was made for another message (replayed by the server?)")
        return original

    def _deliver(
        self,
        work: _Work,
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
        text = envelope.get("text")
        item = ReceivedMessage(
            chat_id=message["chat_id"],
            message_id=message["id"],
            seq=message["seq"],
            sender_user_id=message.get("sender_id"),
            sender_device_id=message.get("sender_device_id"),
            text=text if isinstance(text, str) else None,
            data=data,
            attachments=attachments,
            reply_to=reply_to,
            created_at=message.get("created_at") or 0,
            encrypted=encrypted,
            edited=edited,
            from_me=message.get("sender_id") == self.user_id,
        )
        content = {
            "client_id": client_id,
            "text": item.text,
            "data": envelope.get("data"),
            "attachments": [a.to_json() for a in attachments],
            "reply_to": reply_to,
            "edited": edited,
        }
        work.items.append(item)
        work.shown.add(item.message_id)
        work.known[item.message_id] = content
        work.batch.put_message(
            message_id=item.message_id,
            chat_id=item.chat_id,
            seq=item.seq,
            sender_user_id=item.sender_user_id,
            sender_device_id=item.sender_device_id,
            status="ok",
            content=content,
            created_at=item.created_at,
        )

    def _undecryptable(self, work: _Work, message: dict[str, Any], reason: str, *, edited: bool = False) -> None:
        item = Undecryptable(
            chat_id=message["chat_id"],
            message_id=message["id"],
            seq=message["seq"],
            sender_user_id=message.get("sender_id"),
            sender_device_id=message.get("sender_device_id"),
            reason=reason,
            created_at=message.get("created_at") or 0,
            edited=edited,
        )
        work.items.append(item)
        work.shown.add(item.message_id)
        if edited:
            return  # a refused edit is reported; the message stays as this device had it
        work.batch.put_message(
            message_id=item.message_id,
            chat_id=item.chat_id,
            seq=item.seq,
            sender_user_id=item.sender_user_id,
            sender_device_id=item.sender_device_id,
            status="undecryptable",
            content=None,
            reason=reason,
            created_at=item.created_at,
        )


def _load_crypto(store: ClientStore) -> DeviceCrypto:
    assert store.crypto is not None and store.user_id and store.device_id
    crypto = DeviceCrypto.from_bytes(store.crypto)
    # Sessions authenticate both ends' addresses; a state saved without its own address learns it here.
    crypto.set_address(store.user_id, store.device_id)
    return crypto


def _load_removed(store: ClientStore) -> dict[str, set[str]]:
    raw = store.get("removed_members")
    return {} if raw is None else {chat: set(users) for chat, users in msgspec.json.decode(raw).items()}


def _dump_removed(removed: dict[str, set[str]]) -> str:
    return msgspec.json.encode({chat: sorted(users) for chat, users in removed.items()}).decode()


async def _open_store(store_path: str) -> ClientStore:
    try:
        return await ClientStore.open(store_path)
    except StoreInUse as error:
        raise ClientError(str(error)) from error


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
