"""GET /api/v1/ws: the WebSocket gateway (protocol in docs/protocol.md).

The first frame authenticates and names the cursor to resume from; the server answers
`ready`, replays what was missed, then streams live events. The client acknowledges
with `ack`, sends with `message.send` (answered by `message.sent` after the commit),
and may send `typing` and `ping`.
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
from sup.errors import Code, DomainError
from sup.transport.inputs import Id, Input
from sup.transport.sends import MessageSendFields
from sup.transport.services import SERVICES, Services
from sup.transport.statuses import STATUS, Close
from sup.ws.connection import Codec, Connection
from sup.ws.hub import HUB, Hub

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

    request_id: Annotated[str, Meta(max_length=64)] | None = None


class Typing(_Frame, tag="typing", kw_only=True):
    chat_id: Id
    active: bool = True


class Ping(_Frame, tag="ping", kw_only=True):
    request_id: Annotated[str, Meta(max_length=64)] | None = None


ClientFrame = Authenticate | Ack | Send | Typing | Ping

_json_frames = msgspec.json.Decoder(ClientFrame)
_msgpack_frames = msgspec.msgpack.Decoder(ClientFrame)


def decode_frame(codec: Codec, message: Any) -> ClientFrame:
    if message.type == WSMsgType.BINARY and codec.msgpack:
        return _msgpack_frames.decode(message.data)
    return _json_frames.decode(message.data)


def error_frame(error: DomainError, request_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "cursor": None,
        "request_id": request_id,
        "status": STATUS[error.code],
        "code": error.code.value,
        "detail": error.detail,
        **error.extra,
    }


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /api/v1/ws: the real-time gateway."""
    services = request.app[SERVICES]
    hub = request.app[HUB]
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=services.ws.heartbeat_seconds,
        max_msg_size=services.max_body_bytes,
    )
    await ws.prepare(request)
    hub.sockets.add(ws)
    try:
        await _session(ws, Codec(ws.ws_protocol == SUBPROTOCOL), services, hub)
    finally:
        hub.sockets.discard(ws)
        if not ws.closed:
            await ws.close()
    return ws


async def _authenticate(ws: web.WebSocketResponse, codec: Codec, services: Services) -> Connection | None:
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
        ws, principal, codec, cursor=resume.cursor, stream=services.stream, queue_limit=services.ws.queue_limit
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


async def _session(ws: web.WebSocketResponse, codec: Codec, services: Services, hub: Hub) -> None:
    connection = await _authenticate(ws, codec, services)
    if connection is None:
        return
    hub.add(connection)
    pump = asyncio.create_task(connection.pump(), name=f"pump-{connection.device_id}")
    connection.pump_task = pump
    hub.tasks.add(pump)
    pump.add_done_callback(hub.tasks.discard)
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    requests: set[asyncio.Task[None]] = set()
    sends: set[asyncio.Future[Sent]] = set()
    await services.presence.connected(connection.user_id)
    await services.push.socket_opened(connection.device_id)  # no push while this socket brings events
    try:
        async for message in ws:
            if message.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            try:
                frame = decode_frame(codec, message)
            except msgspec.DecodeError as exc:
                connection.reply(error_frame(DomainError(Code.VALIDATION_FAILED, f"bad frame: {exc}")))
                continue
            if isinstance(frame, Ack):
                hub.acks.ack(connection.device_id, min(frame.cursor, connection.last_sent))
            elif isinstance(frame, Send):
                await in_flight.acquire()
                try:
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
                task = asyncio.create_task(_typing(connection, services, frame))
                requests.add(task)
                task.add_done_callback(requests.discard)
            elif isinstance(frame, Ping):
                connection.reply({"type": "pong", "cursor": None, "request_id": frame.request_id})
            else:
                connection.reply(error_frame(DomainError(Code.INVALID_REQUEST, "Already authenticated.")))
            if pump.done():
                break
    finally:
        hub.remove(connection)
        pending = requests | sends
        if pending:  # sends already queued still commit; their answers have nowhere to go
            await asyncio.wait(pending, timeout=10)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        await hub.acks.flush_device(connection.device_id)
        await services.presence.disconnected(connection.user_id)
        await services.push.socket_closed(connection.device_id)


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


async def _typing(connection: Connection, services: Services, frame: Typing) -> None:
    try:
        await services.presence.typing(connection.user_id, frame.chat_id, frame.active)
    except DomainError as error:
        connection.reply(error_frame(error))
