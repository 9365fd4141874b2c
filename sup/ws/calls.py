"""The call frames of the WebSocket (docs/protocol.md, "Calls"): parsed here, decided by the domain.

`CallRelay` is the one place the gateway hands call frames to, and the one place the call
signalling of sup/domain/callsignal.py sends its frames through: to every socket this process
holds for a device, or to the one socket that asked.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from aiohttp import web
from msgspec import Meta

from sup.domain.callsignal import CallSignalling
from sup.errors import Code, DomainError
from sup.transport.inputs import Id, Input

if TYPE_CHECKING:
    from sup.ws.connection import Connection
    from sup.ws.hub import Hub

log = logging.getLogger("sup.ws")

RequestId = Annotated[str, Meta(max_length=64)]
# Call frames of one socket being checked and published at once; beyond this the socket is not read until
# one is done (TCP backpressure, as for message.send), so a flood of ICE candidates holds no more memory.
MAX_PENDING = 32


class _CallFrame(Input, tag_field="type", kw_only=True):
    request_id: RequestId | None = None


class CallInvite(_CallFrame, tag="call.invite", kw_only=True):
    chat_id: Id
    video: bool = False


class _OnCall(_CallFrame, kw_only=True):
    call_id: Id


class CallRinging(_OnCall, tag="call.ringing", kw_only=True):
    pass


class CallAccept(_OnCall, tag="call.accept", kw_only=True):
    pass


class CallReject(_OnCall, tag="call.reject", kw_only=True):
    pass


class CallCancel(_OnCall, tag="call.cancel", kw_only=True):
    pass


class CallHangup(_OnCall, tag="call.hangup", kw_only=True):
    pass


class CallSignal(_OnCall, tag="call.signal", kw_only=True):
    """An SDP offer or answer, or an ICE candidate; the size is checked by the domain (a clear 413)."""

    kind: Literal["offer", "answer", "candidate"]
    payload: str | None = None
    ciphertext: bytes | None = None


CallFrame = CallInvite | CallRinging | CallAccept | CallReject | CallCancel | CallHangup | CallSignal
CALL_FRAMES = (CallInvite, CallRinging, CallAccept, CallReject, CallCancel, CallHangup, CallSignal)
_COMMANDS = {CallRinging: "ringing", CallAccept: "accept", CallReject: "reject", CallCancel: "cancel"}


class CallRelay:
    """Owned by the App; one per process."""

    def __init__(
        self, hub: Hub, signalling: CallSignalling, render_error: Callable[[DomainError, str | None], Any]
    ) -> None:
        self._hub = hub
        self._render_error = render_error  # the gateway's error frame
        self._signalling = signalling
        # Each socket gets a number of its own (an id() could be reused by a later socket).
        self._numbers = itertools.count(1)
        self._keys: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
        self._connections: weakref.WeakValueDictionary[int, Connection] = weakref.WeakValueDictionary()
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: dict[int, asyncio.Semaphore] = {}
        signalling.attach(self._to_devices, self._to_connection)

    async def handle(self, connection: Connection, frame: CallFrame) -> None:
        """Start handling a call frame (waiting while MAX_PENDING of this socket's are); answers and errors
        come back on this socket, in the order they are decided."""
        key = self._keys.get(connection)
        if key is None:
            key = self._keys[connection] = next(self._numbers)
            self._connections[key] = connection
        pending = self._pending.setdefault(key, asyncio.Semaphore(MAX_PENDING))
        await pending.acquire()
        task = asyncio.create_task(self._handle(connection, key, frame))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: pending.release())

    async def _handle(self, connection: Connection, key: int, frame: CallFrame) -> None:
        who, request_id = connection.principal, frame.request_id
        signalling = self._signalling
        try:
            if isinstance(frame, CallInvite):
                await signalling.invite(who, frame.chat_id, video=frame.video, connection=key, request_id=request_id)
            elif isinstance(frame, CallSignal):
                await signalling.signal(
                    who,
                    frame.call_id,
                    frame.kind,
                    payload=frame.payload,
                    ciphertext=frame.ciphertext,
                    connection=key,
                    request_id=request_id,
                )
            elif isinstance(frame, CallHangup):
                await signalling.command("hangup", who, frame.call_id, connection=key, request_id=request_id)
            else:
                op = _COMMANDS[type(frame)]
                await signalling.command(op, who, frame.call_id, connection=key, request_id=request_id)  # type: ignore[arg-type]
        except DomainError as error:
            connection.reply(self._render_error(error, request_id))
        except Exception:
            log.exception("call frame %s failed", type(frame).__name__)
            connection.reply(self._render_error(DomainError(Code.INTERNAL, "The call frame failed."), request_id))

    async def closed(self, connection: Connection) -> None:
        """A socket closed: when it was its device's last one here, the device's calls end."""
        key = self._keys.pop(connection, None)
        if key is not None:
            self._connections.pop(key, None)
            self._pending.pop(key, None)
        if self._hub.connections_of(connection.device_id):
            return
        try:
            await self._signalling.device_gone(connection.principal)
        except Exception:
            log.warning("could not end the calls of device %s", connection.device_id, exc_info=True)

    def _to_devices(self, device_ids: list[str], payload: bytes) -> None:
        for device_id in device_ids:
            for connection in self._hub.connections_of(device_id):
                connection.push_ephemeral(payload)

    def _to_connection(self, key: int, payload: bytes | DomainError, request_id: str | None) -> None:
        connection = self._connections.get(key)
        if connection is None:
            return
        if isinstance(payload, DomainError):
            # Behind the call frames already queued for this socket, as the order they were decided in.
            connection.push_ephemeral(connection.codec.encode(self._render_error(payload, request_id)))
        else:
            connection.push_ephemeral(payload)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)


CALLS = web.AppKey("calls", CallRelay)
