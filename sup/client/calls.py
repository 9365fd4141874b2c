"""1:1 calls: signalling over the socket, SDP and ICE end-to-end encrypted (docs/protocol.md, "Calls").

Part of `Client` (see client.py), reached as `client.calls`:

    call = await client.calls.place(chat_id)              # rings every device of the other member
    event = await client.calls.next_event(within=30)      # CallEvent: "accepted", then "signal"s...
    await client.calls.send_signal(call["id"], "offer", {"type": "offer", "sdp": sdp})
    await client.calls.hang_up(call["id"])

and on the other side `incoming` (this device answers `call.ringing` by itself), `accept` or `reject`.

The server relays SDP and ICE to the one device at the other end of the call; it cannot read them:
each is pairwise-encrypted to that device in the Double Ratchet session the chat's messages use,
inside an envelope bound to the chat and the call (`{"v": 2, "chat_id", "call": {"id", "kind",
"data"}}`), so a server can neither read nor move a signal into another call. A signal that does
not decrypt, or names another chat or call, is dropped (and logged).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from sup.client.crypto import CryptoError, DuplicateMessage
from sup.client.devices import DevicePart
from sup.client.envelope import ENVELOPE_VERSION
from sup.client.http import b64d, b64e
from sup.client.values import ClientError

if TYPE_CHECKING:
    from sup.client.chats import Chats
    from sup.client.devices import Devices
    from sup.client.receiving import Receiver
    from sup.client.sending import Sender
    from sup.client.socket import SupSocket
    from sup.client.state import DeviceState, Work

log = logging.getLogger("sup.client")

SIGNAL_KINDS = ("offer", "answer", "candidate")


@dataclass(frozen=True)
class CallEvent:
    """What happened to a call: `kind` is the server frame's type without `call.` ("incoming", "ringing",
    "accepted", "ended", "signal"), or "error" when the server refused a reject, hang-up or signal (`reason` is
    the error's code, `data` its detail). `signal` and `data` are a decrypted signal's kind and content;
    `reason` and `duration_ms` say how a call ended."""

    kind: str
    call_id: str
    call: dict[str, Any] = field(default_factory=dict)
    device_id: str | None = None
    reason: str | None = None
    duration_ms: int | None = None
    signal: str | None = None
    data: Any = None


@dataclass
class _Call:
    info: dict[str, Any]
    caller: bool
    peer_user_id: str
    peer_device_id: str | None = None


class Calls(DevicePart):
    def __init__(self, state: DeviceState, chats: Chats, devices: Devices, sender: Sender) -> None:
        super().__init__(state, chats, devices)
        self.sender = sender
        self.receiver: Receiver | None = None
        self.socket: SupSocket | None = None
        self._calls: dict[str, _Call] = {}
        self._events: asyncio.Queue[CallEvent] = asyncio.Queue()

    # -- what this device does ---------------------------------------------------------------

    async def turn_servers(self) -> list[dict[str, Any]]:
        """ICE servers for RTCPeerConnection (`urls`, `username`, `credential`): the server's TURN relays."""
        found = await self.state.http.request("GET", "/calls/turn")
        return [{"urls": found["uris"], "username": found["username"], "credential": found["credential"]}]

    async def place(self, chat_id: str, *, video: bool = False, within: float = 15) -> dict[str, Any]:
        """Call the other member of a direct chat; the call (`id`, ...). Its events follow in `events()`."""
        answer = await self._socket()._request({"type": "call.invite", "chat_id": chat_id, "video": video}, within)
        call = answer["call"]
        self._calls[call["id"]] = _Call(call, caller=True, peer_user_id=call["callee_id"])
        return call

    async def accept(self, call_id: str, *, within: float = 15) -> None:
        """Answer on this device (ApiError `not_ringing` if another device answered first)."""
        await self._socket()._request({"type": "call.accept", "call_id": call_id}, within)

    async def reject(self, call_id: str) -> None:
        """Decline: every device of mine stops ringing, and the caller is told."""
        await self._fire({"type": "call.reject", "call_id": call_id})

    async def hang_up(self, call_id: str) -> None:
        """End the call (before an answer: cancel it, or decline it on a ringing device)."""
        await self._fire({"type": "call.hangup", "call_id": call_id})

    async def _fire(self, frame: dict[str, Any]) -> None:
        """Send without waiting: a refusal comes back as an "error" CallEvent (its request id names the call)."""
        await self._socket()._send({**frame, "request_id": f"call-{frame['call_id']}-{uuid.uuid4().hex[:8]}"})

    async def send_signal(self, call_id: str, kind: str, data: Any) -> None:
        """An SDP offer or answer (`{"type", "sdp"}`) or an ICE candidate, encrypted to the device at the other end."""
        if kind not in SIGNAL_KINDS:
            raise ValueError(f"a signal is one of {SIGNAL_KINDS}")
        call = self._calls.get(call_id)
        if call is None or call.peer_device_id is None:
            raise ClientError(f"call {call_id} has no answering device yet")
        chat_id = call.info["chat_id"]
        plaintext = msgspec.json.encode(
            {"v": ENVELOPE_VERSION, "chat_id": chat_id, "call": {"id": call_id, "kind": kind, "data": data}}
        )
        identity_key = await self._identity_of(call.peer_user_id, call.peer_device_id)
        async with self.state.changing_crypto():
            try:
                ciphertext = await self.sender.encrypt_to(
                    call.peer_user_id, call.peer_device_id, identity_key, plaintext
                )
            finally:
                await self.state.save_crypto()
        await self._fire({"type": "call.signal", "call_id": call_id, "kind": kind, "ciphertext": b64e(ciphertext)})

    async def events(self):
        """Call events as they come (one consumer)."""
        while True:
            yield await self._events.get()

    async def next_event(
        self, within: float | None = None, *, kind: str | None = None, call_id: str | None = None
    ) -> CallEvent:
        """The next call event (of one kind, of one call, skipping others, if given); TimeoutError after `within`."""
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            event = await asyncio.wait_for(self._events.get(), left)
            if (kind is None or event.kind == kind) and (call_id is None or event.call_id == call_id):
                return event

    def _socket(self) -> SupSocket:
        if self.socket is None:
            raise ClientError("start the client first (client.start())")
        return self.socket

    async def _identity_of(self, user_id: str, device_id: str) -> bytes:
        for attempt in range(2):
            listed = await self.devices.user_devices(user_id)
            if device_id in listed:
                return listed[device_id]
            if attempt == 0:
                self.devices.forget_listed([user_id])  # a device that logged in since the list was fetched
        raise ClientError(f"device {device_id} of {user_id} has no published keys")

    # -- frames from the server (in the receiver's batch, crypto lock held) ------------------------

    async def on_frame(self, frame: dict[str, Any], work: Work) -> None:
        if frame["type"] == "error":  # the answer to a frame sent by _fire
            call_id = str(frame.get("request_id") or "")[len("call-") : len("call-") + 36]
            call = self._calls.get(call_id)
            self._emit(
                CallEvent(
                    "error", call_id, call.info if call else {}, reason=frame.get("code"), data=frame.get("detail")
                )
            )
            return
        kind = frame["type"].removeprefix("call.")
        if kind == "incoming":
            info = frame["call"]
            self._calls[info["id"]] = _Call(
                info, caller=False, peer_user_id=info["caller_id"], peer_device_id=info["caller_device_id"]
            )
            socket = self.socket
            if socket is not None:  # like a phone: ringing is said as soon as it rings
                self.state.spawn(socket._send({"type": "call.ringing", "call_id": info["id"]}))
            self._emit(CallEvent("incoming", info["id"], info))
        elif kind in ("ringing", "accepted"):
            call = self._calls.get(frame["call_id"])
            if call is not None and kind == "accepted":
                if call.caller:
                    call.peer_device_id = frame["device_id"]
                elif frame["device_id"] != self.state.device_id:
                    return  # answered on another of my devices: call.ended says so
            self._emit(CallEvent(kind, frame["call_id"], call.info if call else {}, device_id=frame["device_id"]))
        elif kind == "ended":
            call = self._calls.pop(frame["call_id"], None)
            self._emit(
                CallEvent(
                    "ended",
                    frame["call_id"],
                    call.info if call else {},
                    reason=frame.get("reason"),
                    duration_ms=frame.get("duration_ms"),
                )
            )
        elif kind == "signal":
            await self._on_signal(frame, work)

    async def _on_signal(self, frame: dict[str, Any], work: Work) -> None:
        call = self._calls.get(frame["call_id"])
        if call is None or frame.get("from_device_id") != call.peer_device_id:
            log.warning("dropped a call signal from a device not in call %s", frame["call_id"])
            return
        ciphertext = b64d(frame.get("ciphertext"))
        if ciphertext is None or self.receiver is None:
            log.warning("dropped a plaintext signal in call %s (calls are end-to-end encrypted)", frame["call_id"])
            return
        try:
            plaintext = await self.receiver._pairwise_decrypt(call.peer_user_id, call.peer_device_id, ciphertext, work)
            envelope = msgspec.json.decode(plaintext)
        except (CryptoError, DuplicateMessage, msgspec.DecodeError, ValueError) as error:
            log.warning("dropped a call signal that does not decrypt: %r", error)
            return
        signal = envelope.get("call") if isinstance(envelope, dict) else None
        if (
            envelope.get("v") != ENVELOPE_VERSION
            or envelope.get("chat_id") != call.info["chat_id"]
            or not isinstance(signal, dict)
            or signal.get("id") != frame["call_id"]
            or signal.get("kind") != frame.get("kind")
        ):
            log.warning("dropped a call signal bound to another chat or call")
            return
        self._emit(CallEvent("signal", frame["call_id"], call.info, signal=signal["kind"], data=signal.get("data")))

    def _emit(self, event: CallEvent) -> None:
        self._events.put_nowait(event)
