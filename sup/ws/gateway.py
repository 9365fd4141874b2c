"""GET /api/v1/ws: the WebSocket gateway (protocol in docs/protocol.md).

The first frame authenticates and names the cursor to resume from; the server answers
`ready`, replays what was missed, then streams live events. The client acknowledges
with `ack`, sends with `message.send` (answered by `message.sent` after the commit),
and may send `typing` and `ping`.

One client must not hurt the others: every frame is counted against the connection's
frame budget, sends against the device's send rate (shared with REST), typing is coalesced
and answered from memory, and every reply waits in a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from functools import partial
from typing import Annotated, Any

import msgspec
from aiohttp import WSMsgType, web
from msgspec import Meta

from sup.domain.messages import Sent
from sup.errors import Code, DomainError, RateLimited
from sup.transport.inputs import Id, Input
from sup.transport.sends import MessageSendFields, RequestId, request_id_of
from sup.transport.services import SERVICES, Services
from sup.transport.statuses import STATUS, Close
from sup.ws.budget import FrameBudget, Verdict
from sup.ws.calls import CALL_FRAMES, CALLS, CallFrame, CallRelay
from sup.ws.connection import Codec, Connection
from sup.ws.hub import HUB, Hub
from sup.ws.masking import MaskCheckingResponse
from sup.ws.typing import TypingRelay

log = logging.getLogger("sup.ws")

AUTH_TIMEOUT = 10.0
MAX_IN_FLIGHT = 64  # sends per connection awaiting their commit; more waits (TCP backpressure)
SUBPROTOCOL = "sup.msgpack"


class _Frame(Input, tag_field="type"):
    pass


class Authenticate(_Frame, tag="authenticate", kw_only=True):
    token: Annotated[str, Meta(max_length=512)]
    cursor: Annotated[int, Meta(ge=0)] | None = None


class Ack(_Frame, tag="ack", kw_only=True):
    cursor: Annotated[int, Meta(ge=0)]


class Send(MessageSendFields, tag_field="type", tag="message.send", kw_only=True):
    """The same fields and checks as POST /api/v1/messages, plus a request id for the answer."""

    request_id: RequestId | None = None


class Typing(_Frame, tag="typing", kw_only=True):
    chat_id: Id
    active: bool = True


class Ping(_Frame, tag="ping", kw_only=True):
    request_id: RequestId | None = None


ClientFrame = Authenticate | Ack | Send | Typing | Ping | CallFrame

_json_frames = msgspec.json.Decoder(ClientFrame)
_msgpack_frames = msgspec.msgpack.Decoder(ClientFrame)


def decode_frame(codec: Codec, message: Any) -> ClientFrame:
    if message.type == WSMsgType.BINARY and codec.msgpack:
        return _msgpack_frames.decode(message.data)
    return _json_frames.decode(message.data)


def error_frame(error: DomainError, request_id: str | None = None) -> dict[str, Any]:
    frame = {
        "type": "error",
        "cursor": None,
        "request_id": request_id,
        "status": STATUS[error.code],
        "code": error.code.value,
        "detail": error.detail,
        **error.extra,
    }
    if isinstance(error, RateLimited):  # as REST's Retry-After: seconds until a retry may pass
        frame["retry_after"] = round(error.retry_after, 3)
    return frame


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /api/v1/ws: the real-time gateway."""
    services = request.app[SERVICES]
    hub = request.app[HUB]
    ws = MaskCheckingResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=None,  # the hub's one heartbeat loop pings every socket (see MaskCheckingResponse.beat)
        max_msg_size=services.max_body_bytes,
        # No permessage-deflate: a browser always offers it, and each compressing connection keeps
        # zlib state (~131 KiB measured); events are small and TLS or the LAN carries them fine.
        compress=False,
    )
    await ws.prepare(request)
    hub.watch(ws, services.ws.heartbeat_seconds)
    try:
        codec = Codec.of(ws.ws_protocol == SUBPROTOCOL)
        await _session(ws, codec, services, hub, request.app[CALLS], request.transport)
    finally:
        hub.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _authenticate(
    ws: web.WebSocketResponse, codec: Codec, services: Services, transport: Any
) -> Connection | None:
    try:
        first = await asyncio.wait_for(ws.receive(), AUTH_TIMEOUT)
    except TimeoutError:
        await ws.close(code=Close.UNAUTHORIZED, message=b"authenticate first")
        return None
    if first.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
        return None
    try:
        frame = decode_frame(codec, first)
    except msgspec.DecodeError as exc:
        await _refuse(ws, codec, DomainError(Code.VALIDATION_FAILED, f"bad frame: {exc}"), Close.BAD_REQUEST)
        return None
    if not isinstance(frame, Authenticate):
        await _refuse(ws, codec, DomainError(Code.UNAUTHENTICATED, "The first frame is authenticate."))
        return None
    try:
        principal = await services.accounts.authenticate(frame.token)
    except DomainError as error:
        await _refuse(ws, codec, error)
        return None
    try:
        resume = await services.stream.resume(principal.device_id, frame.cursor)
    except DomainError as error:
        await _refuse(ws, codec, error, Close.BAD_REQUEST)
        return None
    connection = Connection(
        ws,
        principal,
        codec,
        cursor=resume.cursor,
        stream=services.stream,
        queue_limit=services.ws.queue_limit,
        reply_limit=services.ws.reply_queue_limit,
        transport=transport,
    )
    connection.reply(
        {
            "type": "ready",
            "cursor": None,
            "user_id": principal.user_id,
            "device_id": principal.device_id,
            "resume_from": resume.cursor,
            "stream_end": resume.stream_end,
            "resync": resume.resync,
            "heartbeat": services.ws.heartbeat_seconds,
        }
    )
    return connection


async def _refuse(ws: web.WebSocketResponse, codec: Codec, error: DomainError, code: int = Close.UNAUTHORIZED) -> None:
    with contextlib.suppress(Exception):
        await codec.send_json_bytes(ws, codec.encode(error_frame(error)))
    await ws.close(code=code, message=error.code.value.encode())


async def _session(
    ws: web.WebSocketResponse, codec: Codec, services: Services, hub: Hub, calls: CallRelay, transport: Any = None
) -> None:
    connection = await _authenticate(ws, codec, services, transport)
    if connection is None:
        return
    hub.add(connection)
    connection.start()
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    sends: set[asyncio.Future[Sent]] = set()
    budget = FrameBudget(services.ws.frames_per_second, services.ws.frame_burst)
    typing: TypingRelay | None = None  # made at the first typing frame: most sockets never send one
    await services.presence.connected(connection.user_id)
    await services.push.socket_opened(connection.device_id)  # no push while this socket brings events
    try:
        async for message in ws:
            if connection.closing or connection.broken:
                break
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            verdict = budget.take()
            if verdict is not Verdict.TAKE:
                if verdict is Verdict.WARN:
                    connection.reply(_over_budget(budget.retry_after()))
                elif verdict is Verdict.CLOSE:
                    connection.close_soon(Close.RATE_LIMITED, b"too many frames: reconnect later and send less")
                continue
            try:
                frame = decode_frame(codec, message)
            except msgspec.DecodeError as exc:
                request_id = request_id_of(message.data, message.type == WSMsgType.BINARY and codec.msgpack)
                connection.reply(error_frame(DomainError(Code.VALIDATION_FAILED, f"bad frame: {exc}"), request_id))
                continue
            if isinstance(frame, Ack):
                hub.acks.ack(connection.device_id, min(frame.cursor, connection.last_sent))
            elif isinstance(frame, Send):
                if typing is not None:
                    typing.sent(frame.chat_id)
                await in_flight.acquire()
                try:
                    await services.send_rate.check(connection.device_id)  # the same budgets as REST's sends
                    await services.limits.check_send(connection.user_id)
                    sending = services.messages.queue_send(
                        connection.user_id, connection.device_id, frame.to_outgoing()
                    )
                except DomainError as error:
                    in_flight.release()
                    connection.reply(error_frame(error, frame.request_id))
                    continue
                # A callback, not a task per send: at thousands of sends a second tasks cost.
                sends.add(sending)
                sending.add_done_callback(partial(_answer_send, connection, frame.request_id, in_flight, sends))
            elif isinstance(frame, Typing):
                if typing is None:
                    typing = TypingRelay(
                        connection.user_id, services.presence, lambda error: connection.reply(error_frame(error))
                    )
                typing.offer(frame.chat_id, frame.active)  # no I/O here: coalesced, relayed by one owned task
            elif isinstance(frame, Ping):
                connection.reply({"type": "pong", "cursor": None, "request_id": frame.request_id})
            elif isinstance(frame, CALL_FRAMES):
                await calls.handle(connection, frame)
            else:
                connection.reply(error_frame(DomainError(Code.INVALID_REQUEST, "Already authenticated.")))
            if connection.replies_waiting:
                await connection.room_for_replies()
    finally:
        hub.remove(connection)
        # Shielded, as a task the hub owns: a server that cancels a handler when its client leaves (aiohttp's
        # handler_cancellation) must not skip storing the last ack, or the presence and push bookkeeping.
        await asyncio.shield(hub.spawn(_closed(connection, typing, sends, services, hub, calls)))
        await connection.closed_by_us()


async def _closed(
    connection: Connection,
    typing: TypingRelay | None,
    sends: set[asyncio.Future[Sent]],
    services: Services,
    hub: Hub,
    calls: CallRelay,
) -> None:
    if typing is not None:
        await typing.close()
    if sends:  # sends already queued still commit; their answers have nowhere to go
        await asyncio.wait(sends, timeout=10)
    await connection.stop()
    await hub.acks.flush_device(connection.device_id)
    await calls.closed(connection)
    await services.presence.disconnected(connection.user_id)
    await services.push.socket_closed(connection.device_id)


def _over_budget(retry_after: float) -> dict[str, Any]:
    error = RateLimited(
        retry_after,
        "Too many frames on this connection; frames are dropped until you slow down, and the connection "
        "is closed (4029) if you do not.",
    )
    return error_frame(error)


def _answer_send(
    connection: Connection,
    request_id: str | None,
    in_flight: asyncio.Semaphore,
    sends: set[asyncio.Future[Sent]],
    sending: asyncio.Future[Sent],
) -> None:
    sends.discard(sending)
    in_flight.release()
    if sending.cancelled():
        connection.reply(error_frame(DomainError(Code.UNAVAILABLE, "The server is shutting down."), request_id))
        return
    error = sending.exception()
    if isinstance(error, DomainError):
        connection.reply(error_frame(error, request_id))
    elif error is not None:
        log.error("send over WebSocket failed", exc_info=error)
        connection.reply(error_frame(DomainError(Code.INTERNAL, "The message was not stored."), request_id))
    else:
        sent = sending.result()
        connection.reply(
            {
                "type": "message.sent",
                "cursor": None,
                "request_id": request_id,
                "created": sent.created,
                "message": sent.message,
            }
        )
