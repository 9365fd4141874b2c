"""The high-level client: one device of one user, end-to-end encrypted, resumable.

    client = await Client.register("https://sup.example", "alice.db", "alice", "correct horse battery")
    chat = await client.direct_chat_with("bob")
    await client.send_text(chat["id"], "hello")
    async for item in client.messages():  # ReceivedMessage, Undecryptable, MessageDeleted, NewDevice, ...
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
- A member with no device that can read (an account an admin made, not used yet): the server refuses the
  message (`member_without_device`); a text message waits in the outbox (`MemberWithoutDevice` carries it,
  `WaitingForDevice` is yielded) and goes by itself, in order, when the member has a device with keys
  (`QueuedMessageSent`); see outbox.py.
- Receiving: every durable event is handled in order; crypto state, decrypted messages and
  the event cursor are committed to the store together, and only then is the cursor acked,
  so a crash never loses a ratchet step nor acknowledges a message it did not keep. A group
  message whose sender key has not arrived waits (in the store) for its `sender_key` event.
- Calls (`client.calls`, calls.py): 1:1 calls in a direct chat are placed, answered, declined and hung up
  over the socket; the SDP and ICE of a call are pairwise-encrypted to the one device at the other end.
- Search: the server searches only what it can read (`search_messages`, `search_users`, `search_chats`);
  `search` looks through the messages kept on this device, encrypted chats included (store.py keeps a
  full-text index of them). Joining: `join_chat` (a public chat), `join_by_invite` (a link), and for
  admins `create_invite` and the join requests.
- Not trusting the server: a chat seen once as encrypted (and every direct chat) stays encrypted
  whatever the server later says; a plaintext body or a keyless file there is `Undecryptable`. Every
  device of a user met after the first contact is shown (`NewDevice`) before anything is encrypted to
  it, and the safety number covers every device key recorded here, not only the directory's list.

The work is done by parts that share one `DeviceState` (state.py): `Chats` (chats.py: chat info,
encryption pinned on, who left), `Devices` (devices.py: devices met, identity changes, safety numbers),
`Sender` (sending.py), `Receiver` (receiving.py), `Prekeys` (prekeys.py). The plaintext inside every
ciphertext is the envelope (envelope.py); what `messages()` yields is in values.py. The Client's methods
for chats, joining and search are in client_chats.py, for stories and stickers in client_media.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from sup.client.calls import CallEvent, Calls
from sup.client.chats import Chats, is_encrypted
from sup.client.client_chats import ChatMethods, invite_code
from sup.client.client_media import MediaMethods
from sup.client.crypto import DeviceCrypto
from sup.client.devices import Devices
from sup.client.envelope import ENVELOPE_VERSION, decode_envelope, encode_envelope
from sup.client.http import Session, SupHttp
from sup.client.outbox import Flushed, Outbox
from sup.client.prekeys import ONE_TIME_PREKEYS, Prekeys
from sup.client.receiving import Receiver
from sup.client.sending import Sender
from sup.client.socket import SocketClosed, SupSocket
from sup.client.state import DeviceState, Stop, load_crypto, open_store
from sup.client.store import ClientStore
from sup.client.values import (
    Attachment,
    BadDeviceKeys,
    ClientError,
    FoundMessage,
    Item,
    MemberWithoutDevice,
    MessageDeleted,
    NewDevice,
    Queued,
    QueuedMessageDropped,
    QueuedMessageSent,
    ReceivedMessage,
    SafetyNumberChanged,
    Undecryptable,
    WaitingForDevice,
)

__all__ = [
    "ENVELOPE_VERSION",
    "Attachment",
    "BadDeviceKeys",
    "CallEvent",
    "Client",
    "ClientError",
    "FoundMessage",
    "Item",
    "MemberWithoutDevice",
    "MessageDeleted",
    "NewDevice",
    "Queued",
    "QueuedMessageDropped",
    "QueuedMessageSent",
    "ReceivedMessage",
    "SafetyNumberChanged",
    "Undecryptable",
    "WaitingForDevice",
    "decode_envelope",
    "encode_envelope",
    "invite_code",
    "is_encrypted",
]


class Client(ChatMethods, MediaMethods):
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
        self._state = state = DeviceState(store, http, crypto, accept_identity_changes=accept_identity_changes)
        self._chats = Chats(state)
        self._devices = Devices(state, self._chats)
        self._prekeys = Prekeys(state)
        self._sender = Sender(state, self._chats, self._devices)
        self._receiver = Receiver(state, self._chats, self._devices, self._prekeys)
        self._outbox = Outbox(state, self._sender)
        self._calls = Calls(state, self._chats, self._devices, self._sender)
        self._calls.receiver = self._receiver
        self._receiver.calls = self._calls
        self._receiver.listeners.append(self._outbox.on_frame)  # a device came: what waited for it goes
        self._socket: SupSocket | None = None
        self._pump: asyncio.Task[None] | None = None

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
        store = await open_store(store_path)
        try:
            if not (store.server_url and store.device_id and store.crypto and store.tokens):
                raise ClientError(f"{store_path} holds no logged-in device: register or log in first")
            http = SupHttp(store.server_url, session=session, tokens=store.tokens, on_tokens=store.set_tokens)
            client = cls(store, http, load_crypto(store))
        except BaseException:
            await store.close()
            raise
        try:
            if not store.get("keys_published"):
                await client._prekeys.publish()
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
        store = await open_store(store_path)
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
        await client._prekeys.publish()
        await client._devices.meet_own(crypto.identity_key)
        return client

    # -- properties and lifecycle ----------------------------------------------------------------

    @property
    def crypto(self) -> DeviceCrypto:
        """This device's crypto state (replaced when a failed commit rolls back what it did in memory)."""
        return self._state.crypto

    @property
    def accept_identity_changes(self) -> bool:
        return self._state.accept_identity_changes

    @accept_identity_changes.setter
    def accept_identity_changes(self, value: bool) -> None:
        self._state.accept_identity_changes = value

    @property
    def cursor(self) -> int | None:
        """The last event cursor whose effects are committed to the store."""
        return self._receiver.cursor

    @property
    def user_id(self) -> str:
        return self._state.user_id

    @property
    def device_id(self) -> str:
        return self._state.device_id

    @property
    def username(self) -> str | None:
        return self.store.username

    @property
    def socket(self) -> SupSocket | None:
        return self._socket

    @property
    def calls(self) -> Calls:
        """1:1 calls: place, accept, reject, hang up, SDP and ICE end-to-end encrypted (calls.py)."""
        return self._calls

    async def start(self) -> None:
        """Connect the event stream and start handling events (messages() does this itself)."""
        if self._pump is not None or self._state.closed:
            return
        await self._outbox.load()
        self._socket = SupSocket(self.http, cursor=self.store.cursor)
        self._socket.on_ready.append(self._outbox.on_ready)  # a device may have come while it was away
        await self._socket.start()
        self._receiver.socket = self._socket
        self._calls.socket = self._socket
        self._pump = asyncio.create_task(self._receiver.run(self._socket), name=f"sup-client-{self.device_id}")
        self._state.spawn(self._prekeys.rotate_signed_prekey_if_old())

    async def close(self) -> None:
        """Stop the event stream (after acknowledging what was handled), then close everything."""
        state = self._state
        if state.closed:
            return
        state.closed = True
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump
        if self._socket is not None:
            await self._socket.close()
        await state.cancel_tasks()
        state.inbox.put_nowait(Stop(None))
        await self.http.close()
        await self.store.close()

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_event(self, listener: Callable[[dict[str, Any]], Any]) -> None:
        """Call `listener(frame)` for every frame received (typing, presence, receipts, ...), after it is handled."""
        self._receiver.listeners.append(listener)

    async def messages(self) -> AsyncIterator[Item]:
        """Messages as they arrive (one consumer): ReceivedMessage, Undecryptable, SafetyNumberChanged, NewDevice,
        MessageDeleted; and what becomes of my messages that wait for a member's first device: WaitingForDevice,
        then QueuedMessageSent or QueuedMessageDropped."""
        await self.start()
        inbox = self._state.inbox
        while True:
            item = await inbox.get()
            if isinstance(item, Stop):
                inbox.put_nowait(item)  # every later call ends too
                if item.error is not None:
                    raise item.error
                return
            yield item

    async def next_message(self, within: float | None = None) -> Item:
        """The next item of messages(), waiting at most `within` seconds (TimeoutError)."""
        await self.start()
        inbox = self._state.inbox
        item = await asyncio.wait_for(inbox.get(), within)
        if isinstance(item, Stop):
            inbox.put_nowait(item)
            raise item.error or SocketClosed("the client is closed")
        return item

    # -- sending -----------------------------------------------------------------------------

    async def send_text(
        self, chat_id: str, text: str, *, reply_to: str | None = None, client_id: str | None = None
    ) -> dict[str, Any]:
        """Send a text message (encrypted if the chat is); the server's message (its id and seq).

        When a member has no device that can read it yet, it is kept in the outbox and sent by itself later:
        MemberWithoutDevice carries it (`queued`), and `messages()` says when it goes (see `send`).
        """
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

        In an encrypted chat where a member has no device that can read it yet (an account an admin made,
        not used yet), the server refuses the message and MemberWithoutDevice is raised. A text message is kept
        in the outbox with its client_id (the exception's `queued`; `WaitingForDevice` is yielded too) and is
        sent by itself, in order with what follows it in that chat, once the member has a device with keys
        (or has left the chat); `QueuedMessageSent` is yielded then. A text sent to a chat where messages
        wait goes behind them. Only text waits: a file or `data` is not kept (`queued` is None).
        """
        attachments = tuple(attachments)
        client_id = client_id or str(uuid.uuid4())
        text_only = text is not None and data is None and not attachments
        if text_only and self._outbox.waits_in(chat_id):
            return await self._outbox.send_after_waiting(chat_id, text or "", reply_to, client_id)
        try:
            return await self._sender.send(
                chat_id, text=text, data=data, attachments=attachments, reply_to=reply_to, client_id=client_id
            )
        except MemberWithoutDevice as error:
            if not text_only:
                raise
            queued = await self._outbox.hold(chat_id, text or "", reply_to, client_id, error.user_ids)
            raise MemberWithoutDevice(chat_id, error.user_ids, queued) from error

    async def queue_text(self, chat_id: str, text: str, *, reply_to: str | None = None) -> Queued:
        """Keep a text message in the outbox (in the store) until `send_queued` sends it; its client_id is
        chosen now, so a send whose answer was lost is recognised as the same message when tried again."""
        return await self._outbox.queue(chat_id, text, reply_to=reply_to)

    async def send_queued(self) -> Flushed:
        """Send the outbox in order, up to the first message the server cannot be reached for. A message for a
        member without a device stays (`Flushed.held`, and WaitingForDevice the first time), and so does every
        later one of its chat; they are sent by themselves when the member has a device (see `send`)."""
        return await self._outbox.flush()

    async def queued(self) -> list[Queued]:
        """The messages waiting in the outbox, oldest first (`waiting_for`: the members they wait for)."""
        return await self._outbox.waiting()

    async def edit_text(self, chat_id: str, message_id: str, text: str) -> dict[str, Any]:
        """Replace the text of one of my messages (re-encrypted for the chat's current devices)."""
        return await self._sender.edit_text(chat_id, message_id, text)

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
        attachment = await self._sender.upload_file(chat_id, data, name=name, mime=mime)
        return await self.send(chat_id, text=text or None, attachments=[attachment], client_id=client_id)

    async def download(self, attachment: Attachment) -> bytes:
        """Fetch an attachment and decrypt it; DecryptError if the blob was swapped or damaged.

        A plaintext chat's file (no key) comes back as the server serves it.
        """
        return await self._sender.download(attachment)

    async def delete_message(self, message_id: str, *, for_everyone: bool = True) -> None:
        """Delete a message for everyone (a tombstone stays), or with `for_everyone=False` for my account only.

        Every device it is deleted for (this one too) drops its copy and yields `MessageDeleted`.
        """
        await self.http.delete_message(message_id, for_everyone=for_everyone)

    async def mark_read(self, chat_id: str, seq: int) -> int:
        """Move my read marker in a chat up to `seq` (never back); where it stands now."""
        return (await self.http.mark_read(chat_id, seq))["last_read_seq"]

    # -- keys --------------------------------------------------------------------------------

    async def trust_identity(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        """Accept a changed identity key (after comparing safety numbers); what was held for it is handled now."""
        await self._receiver.trust_identity(user_id, device_id, identity_key)

    async def reject_identity(self, user_id: str, device_id: str) -> None:
        """Keep distrusting a changed identity key: messages held for it are reported as Undecryptable."""
        await self._receiver.reject_identity(user_id, device_id)

    async def safety_number(self, user_id: str) -> str:
        """The 60-digit number both users see when no one is in the middle (compare it in person).

        It covers every device key recorded here for each user as well as the directory's current list, so
        a server can neither hide a device it added while the number is compared nor slip one in unseen
        (a device listed for the first time is shown as NewDevice).
        """
        return await self._devices.safety_number(user_id)

    async def top_up_prekeys(self, count: int = ONE_TIME_PREKEYS) -> int:
        """Make and upload more one-time prekeys; the number the server now holds."""
        return await self._prekeys.top_up(count)
