"""The WebSocket gateway (docs/protocol.md) as an ordered, resumable stream of frames.

`SupSocket` keeps one connection open and hands every frame to its consumer in order:

    async with SupSocket(http, cursor=stored_cursor) as socket:
        async for frame in socket:
            handle(frame)
            if frame["cursor"] is not None:
                remember(frame["cursor"])
                socket.ack(frame["cursor"])

It reconnects by itself (backoff with jitter) after a network loss, 1001 (server going
away) or 4008 (fell behind), authenticating with the cursor of the last event it received,
so the stream continues exactly where it stopped: events at or below that cursor are never
handed out twice, and none is skipped. A 4001 refreshes the access token and reconnects; a
4003 (device revoked) or an ended session ends the iteration with an exception.

Frames are the server's JSON objects unchanged (binary fields stay base64). Two kinds are
made by the client: `{"type": "resync", "cursor": None, "resume_from", "stream_end"}` when
the server pruned events older than the cursor (refetch state over REST), and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Unpack

import aiohttp
import msgspec

from sup.client.http import ApiError, SessionEnded, SupHttp, decode_message
from sup.client.transport import NewContent, message_content

log = logging.getLogger("sup.client.socket")

CLOSE_GOING_AWAY = 1001
CLOSE_UNAUTHORIZED = 4001
CLOSE_REVOKED = 4003
CLOSE_RESUME = 4008
CLOSE_BAD_REQUEST = 4400

READY_TIMEOUT = 15.0
ACK_INTERVAL = 0.5  # the server stores acks at most once a second anyway
MAX_BACKOFF = 30.0


class SocketClosed(Exception):
    """The stream ended for good; `code` is the WebSocket close code, if there was one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class DeviceRevoked(SocketClosed):
    """This device was logged out or revoked (close 4003): log in again."""


class ProtocolViolation(SocketClosed):
    """The server refused what this client sent (close 4400): a bug, or a cursor from another server."""


class _End:
    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class SupSocket:
    """One device's resumable event stream."""

    def __init__(
        self,
        http: SupHttp,
        *,
        cursor: int | None = None,
        heartbeat: float = 30.0,
        max_buffered: int = 1000,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.http = http
        self._received = cursor  # the last durable cursor handed to the consumer (or queued for it)
        self._heartbeat = heartbeat
        self._max_buffered = max_buffered
        self._max_backoff = max_backoff
        self._frames: deque[dict[str, Any] | _End] = deque()
        self._has_frames = asyncio.Event()
        self._has_room = asyncio.Event()
        self._has_room.set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._requests: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ack_wanted: int | None = None
        self._ack_sent: int | None = None
        self._ack_due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        self.ready: dict[str, Any] = {}
        self.connections = 0  # how many times `ready` was received: tests and diagnostics
        # Called with each `ready` frame (every connection and reconnection), before its events are handed out.
        self.on_ready: list[Callable[[dict[str, Any]], Any]] = []

    @property
    def cursor(self) -> int | None:
        """The last durable cursor received (what a reconnect resumes after)."""
        return self._received

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sup-socket")
            self._ack_task = asyncio.create_task(self._ack_loop(), name="sup-socket-acks")

    async def close(self) -> None:
        """Send the last ack, close the connection and end the iteration."""
        if self._closing:
            return
        self._closing = True
        ws = self._ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await self._flush_ack(ws)
            with contextlib.suppress(Exception):
                await ws.close()
        for task in (self._task, self._ack_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._fail_requests(ConnectionError("socket closed"))
        self._end(None)

    async def __aenter__(self) -> SupSocket:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> SupSocket:
        return self

    async def __anext__(self) -> dict[str, Any]:
        while not self._frames:
            self._has_frames.clear()
            await self._has_frames.wait()
        item = self._frames[0]
        if isinstance(item, _End):
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        self._frames.popleft()
        if len(self._frames) < self._max_buffered:
            self._has_room.set()
        return item

    def take_buffered(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` frames already received, without waiting (to handle them as one batch)."""
        taken: list[dict[str, Any]] = []
        while self._frames and len(taken) < limit and not isinstance(self._frames[0], _End):
            taken.append(self._frames.popleft())  # type: ignore[arg-type]
        if len(self._frames) < self._max_buffered:
            self._has_room.set()
        return taken

    async def next(self, within: float | None = None) -> dict[str, Any]:
        """The next frame, waiting at most `within` seconds (TimeoutError)."""
        return await asyncio.wait_for(self.__anext__(), within)

    # -- acks and client frames -------------------------------------------------------------

    def ack(self, cursor: int) -> None:
        """Acknowledge everything up to `cursor` (sent within ACK_INTERVAL, and on close)."""
        if self._ack_wanted is None or cursor > self._ack_wanted:
            self._ack_wanted = cursor
            self._ack_due.set()

    async def send_message(
        self, chat_id: str, client_id: str, *, kind: str = "text", within: float = 30.0, **content: Unpack[NewContent]
    ) -> dict[str, Any]:
        """`message.send` over the socket: the stored message, after the server's commit.

        Raises ApiError when refused and ConnectionError when the connection dropped first:
        then retry with the same client_id (over the socket or REST) to learn the outcome.
        """
        frame = {"type": "message.send", "chat_id": chat_id, "client_id": client_id, "kind": kind}
        frame |= message_content(**content)
        answer = await self._request(frame, within)
        return decode_message(answer["message"])

    async def typing(self, chat_id: str, active: bool = True) -> None:
        await self._send({"type": "typing", "chat_id": chat_id, "active": active})

    async def ping(self, within: float = 10.0) -> None:
        await self._request({"type": "ping"}, within)

    async def _request(self, frame: dict[str, Any], within: float) -> dict[str, Any]:
        request_id = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._requests[request_id] = future
        try:
            await self._send({**frame, "request_id": request_id})
            answer = await asyncio.wait_for(future, within)
        finally:
            self._requests.pop(request_id, None)
        if answer.get("type") == "error":
            raise ApiError(answer.get("status", 0), answer.get("code", "unknown"), answer.get("detail", ""), answer)
        return answer

    async def _send(self, frame: dict[str, Any]) -> None:
        if not self.connected.is_set():
            await asyncio.wait_for(self.connected.wait(), READY_TIMEOUT)
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionError("not connected")
        async with self._send_lock:
            await ws.send_str(msgspec.json.encode(frame).decode())

    async def _flush_ack(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        wanted = self._ack_wanted
        if wanted is None or wanted == self._ack_sent:
            return
        if self._received is not None:
            wanted = min(wanted, self._received)
        async with self._send_lock:
            await ws.send_str(msgspec.json.encode({"type": "ack", "cursor": wanted}).decode())
        self._ack_sent = wanted

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_due.wait()
            self._ack_due.clear()
            ws = self._ws
            if ws is not None and not ws.closed and self.connected.is_set():
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await self._flush_ack(ws)  # if it fails, it is sent again after the next `ready`
            await asyncio.sleep(ACK_INTERVAL)

    # -- the connection loop ----------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            try:
                outcome = await self._connect_once()
            except asyncio.CancelledError:
                raise
            except (SessionEnded, SocketClosed) as error:
                self._end(error)
                return
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionError) as error:
                outcome = f"network: {error!r}"
            except ApiError as error:  # e.g. a rate-limited refresh: try again later
                outcome = f"refused: {error}"
            except Exception as error:
                log.exception("WebSocket loop failed")
                self._end(error)
                return
            finally:
                self.connected.clear()
                self._ws = None
                self._fail_requests(ConnectionError("connection lost"))
            if self._closing:
                return
            if outcome == "refresh" and failures < 2:
                failures += 1
                continue  # at once, with the new token (but not forever: the clocks may disagree)
            if outcome.startswith("ready"):
                failures = 0  # it was up: the next attempt is quick
            failures += 1
            delay = min(self._max_backoff, 0.25 * 2 ** (failures - 1)) * (0.5 + random.random() / 2)
            log.info("WebSocket closed (%s); reconnecting in %.2f s", outcome, delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> str:
        """One connection, until it ends: how it ended ("refresh": reconnect at once with the new token)."""
        token = await self.http.fresh_access_token()
        ws = await self.http.session.ws_connect(
            self.http.base_url + "/api/v1/ws", heartbeat=self._heartbeat, autoping=True
        )
        try:
            auth: dict[str, Any] = {"type": "authenticate", "token": token}
            if self._received is not None:
                auth["cursor"] = self._received
            await ws.send_str(msgspec.json.encode(auth).decode())
            first = await ws.receive(timeout=READY_TIMEOUT)
            if first.type != aiohttp.WSMsgType.TEXT:
                return await self._after_close(ws, token, None)
            ready = msgspec.json.decode(first.data)
            if ready.get("type") != "ready":
                return await self._after_close(ws, token, ready)
            self._on_ready(ready)
            self._ws = ws
            self.connected.set()
            self._ack_sent = None
            self._ack_due.set()  # the new connection learns our position
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    await self._on_frame(msgspec.json.decode(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    await self._on_frame(msgspec.msgpack.decode(message.data))
            outcome = await self._after_close(ws, token, None)
            return outcome if outcome == "refresh" else f"ready, then {outcome}"
        finally:
            if not ws.closed:
                await ws.close()

    async def _after_close(self, ws: aiohttp.ClientWebSocketResponse, token: str, error: dict | None) -> str:
        """Decide what a close means; raises when the stream must end."""
        if error is not None:
            # the server sends an error frame before a refusal; wait for its close code
            with contextlib.suppress(Exception):
                await ws.receive(timeout=5)
        code = ws.close_code
        error_code = (error or {}).get("code")
        if code == CLOSE_REVOKED:
            raise DeviceRevoked("this device was revoked: log in again", code)
        if code == CLOSE_BAD_REQUEST:
            raise ProtocolViolation(f"the server refused this client: {(error or {}).get('detail')}", code)
        if code == CLOSE_UNAUTHORIZED:
            if error_code in ("invalid_token", "refresh_token_reused"):
                raise SessionEnded(401, error_code, (error or {}).get("detail", "session ended"), error)
            await self.http.refresh_after(token)  # raises SessionEnded when the refresh token is dead too
            return "refresh"
        return f"closed {code}"

    def _on_ready(self, ready: dict[str, Any]) -> None:
        self.ready = ready
        self.connections += 1
        resume_from = ready["resume_from"]
        if ready.get("resync"):
            self._enqueue(
                {
                    "type": "resync",
                    "cursor": None,
                    "resume_from": resume_from,
                    "stream_end": ready.get("stream_end"),
                    "previous_cursor": self._received,
                }
            )
            self._received = resume_from
        elif self._received is None:
            self._received = resume_from
        for listener in self.on_ready:
            try:
                listener(ready)
            except Exception:
                log.exception("ready listener failed")

    async def _on_frame(self, frame: dict[str, Any]) -> None:
        request_id = frame.get("request_id")
        if request_id is not None and request_id in self._requests:
            future = self._requests.pop(request_id)
            if not future.done():
                future.set_result(frame)
            return
        cursor = frame.get("cursor")
        if cursor is None:
            if frame.get("type") == "pong":
                return
            # typing and presence are worthless late: drop them rather than wait for room
            if len(self._frames) < self._max_buffered:
                self._enqueue(frame)
            return
        if self._received is not None and cursor <= self._received:
            return  # already handed out (a replay after reconnect)
        if self._received is not None and cursor != self._received + 1:
            log.warning("event stream jumped from %s to %s", self._received, cursor)
        while len(self._frames) >= self._max_buffered:
            # Stop reading: the server buffers, then closes with 4008 and we resume from _received.
            self._has_room.clear()
            await self._has_room.wait()
        self._received = cursor
        self._enqueue(frame)

    def _enqueue(self, item: dict[str, Any] | _End) -> None:
        self._frames.append(item)
        self._has_frames.set()

    def _end(self, error: BaseException | None) -> None:
        if not self._frames or not isinstance(self._frames[-1], _End):
            self._enqueue(_End(error))
        self.connected.clear()

    def _fail_requests(self, error: BaseException) -> None:
        for future in self._requests.values():
            if not future.done():
                future.set_exception(error)
        self._requests.clear()
