"""1:1 call signalling: invite, ring, accept, reject, cancel, time out, hang up; SDP and ICE relayed.

Every process holds the state of every call in memory, and the same state: each command (a
client's frame, a ring timer, a device that went away) is published on the event bus and applied
by every process in the order the bus delivers it. Redis pub/sub gives all subscribers one order,
and the memory bus of a single process applies a command at once. Applying is synchronous and
depends only on the state and the command (it carries its own time), so every process reaches
the same decision (which device accepted first, whether the callee is busy), and each sends the
resulting frames to the sockets it holds. What needs the database (is this my chat, which devices
does the callee have) is checked before a command is published.

The process that published a call's invite owns its side effects: the ring timer, and the system
message the call leaves in the chat when it ends (missed, declined, or ended with its duration).

The SDP and ICE a call carries are relayed as they come: in an end-to-end encrypted chat they are
`ciphertext` the server cannot read (the SDK encrypts them in the pairwise session with the one
device at the other end), and only a plaintext chat may carry a plain `payload`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal

import msgspec

from sup.bus.events import EventBus
from sup.bus.process import new_origin
from sup.clock import Clock
from sup.db.chats import MemberStore
from sup.db.database import Database
from sup.domain.access import ChatAccess
from sup.domain.accounts import Principal
from sup.domain.events import encode, frame
from sup.domain.limits import Budget
from sup.domain.timeline import Timeline
from sup.errors import Code, DomainError
from sup.ids import uuid7

log = logging.getLogger("sup.calls")

MAX_SIGNAL_BYTES = 65_536  # an SDP with every candidate is a few KiB; encrypted and base64, well under this
ENDED_KEPT_MS = 600_000  # an ended call is remembered this long, so late frames get `call_ended`, not 404
STALE_GRACE_MS = 60_000  # a ringing call whose owner died (no timeout came) is forgotten this long after

SignalKind = Literal["offer", "answer", "candidate"]
Op = Literal["invite", "ringing", "accept", "reject", "cancel", "hangup", "signal", "timeout", "gone"]
# How each ending shows in the chat's history.
OUTCOME = {
    "declined": "declined",
    "hangup": "ended",
    "connection_lost": "ended",
    "cancelled": "missed",
    "timeout": "missed",
    "busy": "missed",
}


class ReplyTo(msgspec.Struct, array_like=True, frozen=True):
    """Where the answer to a command goes: one socket of one process."""

    origin: str
    connection: int
    request_id: str | None = None


class CallInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    chat_id: str
    encrypted: bool
    caller_id: str
    caller_device_id: str
    callee_id: str
    callee_device_ids: list[str]
    video: bool
    created_at: int
    expires_at: int

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "chat_id": self.chat_id,
            "caller_id": self.caller_id,
            "caller_device_id": self.caller_device_id,
            "callee_id": self.callee_id,
            "video": self.video,
            "encrypted": self.encrypted,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }


class Command(msgspec.Struct, frozen=True, kw_only=True):
    op: Op
    at: int
    origin: str
    call_id: str = ""
    user_id: str = ""
    device_id: str = ""
    reply: ReplyTo | None = None
    call: CallInfo | None = None
    kind: str = ""
    payload: str | None = None
    ciphertext: bytes | None = None


@dataclass
class _Call:
    info: CallInfo
    owner: str
    state: Literal["ringing", "accepted", "ended"] = "ringing"
    answered_by: str | None = None
    accepted_at: int | None = None
    ended_at: int | None = None
    reason: str | None = None
    by: str | None = None

    def active_for(self, user_id: str) -> bool:
        return self.state != "ended" and user_id in (self.info.caller_id, self.info.callee_id)

    def peer_device(self, device_id: str) -> str | None:
        if device_id == self.info.caller_device_id:
            return self.answered_by
        if device_id == self.answered_by:
            return self.info.caller_device_id
        return None


@dataclass
class _Outcome:
    """What applying one command produced: frames for devices, answers for sockets, a call that ended."""

    frames: list[tuple[list[str], bytes]] = field(default_factory=list)
    replies: list[tuple[ReplyTo, bytes | DomainError]] = field(default_factory=list)
    ended: _Call | None = None

    def to(self, device_ids: list[str], event_type: str, body: dict[str, Any]) -> None:
        if device_ids:
            self.frames.append((device_ids, frame(event_type, None, encode(body))))

    def answer(self, reply: ReplyTo | None, event_type: str, body: dict[str, Any]) -> None:
        if reply is not None:
            self.replies.append((reply, frame(event_type, None, encode({"request_id": reply.request_id, **body}))))

    def fail(self, reply: ReplyTo | None, error: DomainError) -> None:
        if reply is not None:
            self.replies.append((reply, error))


def _no_call() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such call.")


def _ended(call: _Call) -> DomainError:
    return DomainError(Code.CALL_ENDED, f"The call has ended ({call.reason}).", reason=call.reason)


def _not_ringing() -> DomainError:
    return DomainError(Code.NOT_RINGING, "This call is not ringing on this device.")


DeviceSink = Callable[[list[str], bytes], None]
# An answer for one socket: a frame, or an error the transport renders with its request id.
ReplySink = Callable[[int, bytes | DomainError, str | None], None]


@dataclass(slots=True, eq=False)
class CallSignalling:
    """One per process; the WebSocket layer attaches where frames go (`attach`)."""

    db: Database
    access: ChatAccess
    members: MemberStore
    timeline: Timeline
    bus: EventBus
    clock: Clock
    _: KW_ONLY
    ring_timeout_seconds: float
    invite_budget: Budget  # per caller
    origin: str = field(init=False, default_factory=new_origin)
    _calls: dict[str, _Call] = field(init=False, default_factory=dict)
    _timers: dict[str, asyncio.TimerHandle] = field(init=False, default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(init=False, default_factory=set)
    _to_devices: DeviceSink = field(init=False)
    _to_connection: ReplySink = field(init=False)

    def __post_init__(self) -> None:
        self._to_devices = lambda device_ids, payload: None
        self._to_connection = lambda connection, payload, request_id: None
        self.bus.subscribe_calls(self._on_bus)

    def attach(self, to_devices: DeviceSink, to_connection: ReplySink) -> None:
        self._to_devices = to_devices
        self._to_connection = to_connection

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    # -- what clients ask (checked against the database, then published) ---------------------------

    async def invite(self, who: Principal, chat_id: str, *, video: bool, connection: int, request_id: str | None):
        """Ring every device of the other member of a direct chat I am in."""
        membership = await self.access.access_chat(self.db, who.user_id, chat_id)
        chat = membership.chat
        if chat.type != "direct":
            raise DomainError(
                Code.VALIDATION_FAILED,
                "1:1 calls are for direct chats; a group's call is joined with POST /api/v1/calls/{chat_id}/token.",
                field="chat_id",
            )
        await self.access.check_direct_open(self.db, membership, who.user_id)
        # Ringing someone's every device again and again is harassment.
        if wait := await self.invite_budget.spend(f"call-invites:{who.user_id}"):
            raise DomainError(Code.RATE_LIMITED, "Too many calls placed; try again later.", retry_after=math.ceil(wait))
        devices = await self.members.devices(self.db, chat_id)
        callee_id = next((row["user_id"] for row in devices if row["user_id"] != who.user_id), None)
        if callee_id is None:
            callee_id = next((u for u in await self.members.user_ids(self.db, chat_id) if u != who.user_id), None)
        if callee_id is None:
            raise DomainError(Code.CONFLICT, "Nobody else is in this chat to call.")
        now = self.clock.now_ms()
        info = CallInfo(
            id=str(uuid7(now)),
            chat_id=chat_id,
            encrypted=bool(chat.encrypted),
            caller_id=who.user_id,
            caller_device_id=who.device_id,
            callee_id=callee_id,
            callee_device_ids=sorted(row["id"] for row in devices if row["user_id"] == callee_id),
            video=video,
            created_at=now,
            expires_at=now + int(self.ring_timeout_seconds * 1000),
        )
        await self._publish("invite", who, info.id, connection, request_id, call=info)

    async def command(self, op: Op, who: Principal, call_id: str, *, connection: int, request_id: str | None) -> None:
        """ringing, accept, reject, cancel or hangup: decided when every process applies it."""
        await self._publish(op, who, call_id, connection, request_id)

    async def signal(
        self,
        who: Principal,
        call_id: str,
        kind: SignalKind,
        *,
        payload: str | None,
        ciphertext: bytes | None,
        connection: int,
        request_id: str | None,
    ) -> None:
        """Relay an SDP offer or answer, or an ICE candidate, to the one device at the other end."""
        if (payload is None) == (ciphertext is None):
            raise DomainError(Code.VALIDATION_FAILED, "A call.signal carries either payload or ciphertext.")
        size = len(payload.encode()) if payload is not None else len(ciphertext or b"")
        if size > MAX_SIGNAL_BYTES:
            raise DomainError(
                Code.BODY_TOO_LARGE,
                f"An SDP or ICE payload is at most {MAX_SIGNAL_BYTES} bytes; this one is {size}.",
                limit=MAX_SIGNAL_BYTES,
            )
        await self._publish(
            "signal", who, call_id, connection, request_id, kind=kind, payload=payload, ciphertext=ciphertext
        )

    async def device_gone(self, who: Principal) -> None:
        """The last socket of a device on this process closed: the calls it was in end."""
        if any(
            call.state != "ended" and who.device_id in (call.info.caller_device_id, call.answered_by)
            for call in self._calls.values()
        ):
            await self._publish("gone", who, "", 0, None)

    def in_call(self, user_id: str) -> bool:
        return any(call.active_for(user_id) for call in self._calls.values())

    async def _publish(
        self, op: Op, who: Principal, call_id: str, connection: int, request_id: str | None, **fields: Any
    ) -> None:
        reply = ReplyTo(self.origin, connection, request_id) if connection else None
        command = Command(
            op=op,
            at=self.clock.now_ms(),
            origin=self.origin,
            call_id=call_id,
            user_id=who.user_id,
            device_id=who.device_id,
            reply=reply,
            **fields,
        )
        await self.bus.announce_calls(msgspec.msgpack.encode(command))

    # -- applying commands (every process, in the bus's order) -------------------------------------

    def _on_bus(self, data: bytes) -> None:
        try:
            command = msgspec.msgpack.decode(data, type=Command)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed call command")
            return
        outcome = _Outcome()
        try:
            self._apply(command, outcome)
        except DomainError as error:
            outcome.fail(command.reply, error)
        except Exception:  # a bug here must not take the bus's reader down with it
            log.exception("call command %s failed", command.op)
            outcome.fail(command.reply, DomainError(Code.INTERNAL, "The call command failed."))
        for reply, payload in outcome.replies:  # the answer first: `call.invited` before a `call.ended` (busy)
            if reply.origin == self.origin:
                self._to_connection(reply.connection, payload, reply.request_id)
        for device_ids, payload in outcome.frames:
            self._to_devices(device_ids, payload)
        ended = outcome.ended
        if ended is not None and ended.owner == self.origin:
            timer = self._timers.pop(ended.info.id, None)
            if timer is not None:
                timer.cancel()
            self._spawn(self._record(ended))

    def _apply(self, c: Command, out: _Outcome) -> None:
        self._prune(c.at)
        if c.op == "invite":
            self._invite(c, out)
            return
        if c.op == "gone":
            self._gone(c, out)
            return
        call = self._calls.get(c.call_id)
        if call is None:
            raise _no_call()
        info = call.info
        if c.op == "timeout":
            if call.state == "ringing":
                self._end(call, "timeout", None, c.at, out)
            return
        if c.user_id not in (info.caller_id, info.callee_id):
            raise _no_call()  # not my call: as if there were none
        if call.state == "ended":
            raise _ended(call)
        if c.op == "signal":
            self._signal(call, c, out)
        elif c.op == "ringing":
            self._check_ringing(call, c)
            out.to([info.caller_device_id], "call.ringing", {"call_id": info.id, "device_id": c.device_id})
        elif c.op == "accept":
            self._check_ringing(call, c)
            call.state, call.answered_by, call.accepted_at = "accepted", c.device_id, c.at
            body = {"call_id": info.id, "device_id": c.device_id}
            out.to([info.caller_device_id], "call.accepted", body)
            out.answer(c.reply, "call.accepted", body)
            others = [d for d in info.callee_device_ids if d != c.device_id]
            out.to(others, "call.ended", {"call_id": info.id, "reason": "answered_elsewhere", "by": c.user_id})
        elif c.op == "reject":
            self._check_ringing(call, c)
            self._end(call, "declined", c.user_id, c.at, out)
        elif c.op == "cancel":
            if c.device_id != info.caller_device_id:
                raise DomainError(Code.FORBIDDEN, "Only the device that placed the call can cancel it.")
            if call.state != "ringing":
                raise DomainError(Code.CONFLICT, "The call was answered: hang up instead.")
            self._end(call, "cancelled", c.user_id, c.at, out)
        elif c.op == "hangup":
            self._hangup(call, c, out)

    def _check_ringing(self, call: _Call, c: Command) -> None:
        if c.user_id != call.info.callee_id or c.device_id not in call.info.callee_device_ids:
            raise _not_ringing()
        if call.state != "ringing":
            raise DomainError(Code.NOT_RINGING, "This call was answered on another device.")

    def _invite(self, c: Command, out: _Outcome) -> None:
        info = c.call
        if info is None or info.id in self._calls:
            return
        if self.in_call(info.caller_id):
            raise DomainError(Code.CONFLICT, "You are already in a call: hang up first.")
        call = _Call(info, owner=c.origin)
        self._calls[info.id] = call
        out.answer(c.reply, "call.invited", {"call": info.public()})
        if any(other is not call and other.active_for(info.callee_id) for other in self._calls.values()):
            self._end(call, "busy", None, c.at, out)
            return
        out.to(info.callee_device_ids, "call.incoming", {"call": info.public()})
        if c.origin == self.origin:
            delay = max(0.0, (info.expires_at - self.clock.now_ms()) / 1000)
            loop = asyncio.get_running_loop()
            self._timers[info.id] = loop.call_later(delay, self._time_out, info.id)

    def _signal(self, call: _Call, c: Command, out: _Outcome) -> None:
        if call.state != "accepted":
            raise DomainError(Code.CONFLICT, "The call is not answered yet: SDP and ICE follow call.accepted.")
        peer = call.peer_device(c.device_id)
        if peer is None:
            raise DomainError(Code.NOT_RINGING, "This device is not in the call.")
        if call.info.encrypted and c.payload is not None:
            raise DomainError(
                Code.ENCRYPTION_REQUIRED, "This chat is end-to-end encrypted: send the SDP or ICE as ciphertext."
            )
        if not call.info.encrypted and c.ciphertext is not None:
            raise DomainError(Code.NOT_ENCRYPTED, "This chat is not end-to-end encrypted: send a plain payload.")
        body: dict[str, Any] = {
            "call_id": call.info.id,
            "kind": c.kind,
            "from_user_id": c.user_id,
            "from_device_id": c.device_id,
        }
        if c.ciphertext is not None:
            body["ciphertext"] = c.ciphertext
        else:
            body["payload"] = c.payload
        out.to([peer], "call.signal", body)

    def _hangup(self, call: _Call, c: Command, out: _Outcome) -> None:
        """Hanging up before an answer cancels (the caller) or declines (a ringing callee device)."""
        if call.state == "ringing":
            if c.device_id == call.info.caller_device_id:
                self._end(call, "cancelled", c.user_id, c.at, out)
                return
            self._check_ringing(call, c)
            self._end(call, "declined", c.user_id, c.at, out)
            return
        if call.peer_device(c.device_id) is None:
            raise DomainError(Code.NOT_RINGING, "This device is not in the call.")
        self._end(call, "hangup", c.user_id, c.at, out)

    def _gone(self, c: Command, out: _Outcome) -> None:
        for call in list(self._calls.values()):
            if call.state == "ringing" and c.device_id == call.info.caller_device_id:
                self._end(call, "cancelled", c.user_id, c.at, out)
            elif call.state == "accepted" and c.device_id in (call.info.caller_device_id, call.answered_by):
                self._end(call, "connection_lost", c.user_id, c.at, out)

    def _end(self, call: _Call, reason: str, by: str | None, at: int, out: _Outcome) -> None:
        info = call.info
        was_ringing = call.state == "ringing"
        call.state, call.reason, call.by, call.ended_at = "ended", reason, by, at
        body: dict[str, Any] = {"call_id": info.id, "reason": reason, "by": by}
        if call.accepted_at is not None:
            body["duration_ms"] = at - call.accepted_at
        devices = [info.caller_device_id]
        if was_ringing:
            devices += info.callee_device_ids
        elif call.answered_by is not None:
            devices.append(call.answered_by)
        out.to(devices, "call.ended", body)
        out.ended = call

    def _prune(self, now: int) -> None:
        for call_id, call in list(self._calls.items()):
            if call.state == "ended" and call.ended_at is not None and call.ended_at < now - ENDED_KEPT_MS:
                del self._calls[call_id]
            elif call.state == "ringing" and call.info.expires_at < now - STALE_GRACE_MS:
                # Its owner never sent the timeout (it stopped): nobody should stay "busy" for it.
                call.state, call.reason, call.ended_at = "ended", "timeout", now

    # -- the owner's side effects -----------------------------------------------------------------

    def _time_out(self, call_id: str) -> None:
        self._timers.pop(call_id, None)
        command = Command(op="timeout", at=self.clock.now_ms(), origin=self.origin, call_id=call_id)
        self._spawn(self.bus.announce_calls(msgspec.msgpack.encode(command)))

    async def _record(self, call: _Call) -> None:
        """The call's line in the chat's history, seen by every member."""
        info = call.info
        action: dict[str, Any] = {
            "action": "call",
            "call_id": info.id,
            "outcome": OUTCOME.get(call.reason or "", "ended"),
            "reason": call.reason,
            "video": info.video,
            "caller_id": info.caller_id,
            "callee_id": info.callee_id,
        }
        if call.accepted_at is not None and call.ended_at is not None:
            action["duration_ms"] = call.ended_at - call.accepted_at
        try:
            async with self.db.transaction() as tx:
                await self.timeline.system(tx, info.chat_id, info.caller_id, action, self.clock.now_ms())
        except Exception:  # the call is over either way; only its line in the history is missing
            log.warning("could not record call %s in chat %s", info.id, info.chat_id, exc_info=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
