"""One WebSocket connection of one device: a single writer that keeps the stream in order.

Live events arrive as hints (`push`); the pump sends them if they continue the stream
exactly, and otherwise reads what is missing from the database. While it catches up, or
when more than `queue_limit` live events wait, it keeps no copies (it reads them from the
database instead), so memory stays flat under any burst. A client that stops reading
blocks the pump on the socket; when one send has waited `send_timeout` seconds the
connection is closed with Close.RESUME and the client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from sup.delivery import Delivery
from sup.domain.accounts import Principal
from sup.domain.stream import EventStream
from sup.observe.metrics import Metrics

log = logging.getLogger("sup.ws")

_READ_PAGE = 500
_EPHEMERAL_LIMIT = 256


class Codec:
    """JSON text frames, or msgpack binary frames under the `sup.msgpack` subprotocol."""

    def __init__(self, msgpack: bool) -> None:
        self.msgpack = msgpack
        self._json_decode = msgspec.json.Decoder().decode
        self._mp_encode = msgspec.msgpack.Encoder().encode
        self._mp_decode = msgspec.msgpack.Decoder().decode
        self._json_encode = msgspec.json.Encoder().encode

    async def send_json_bytes(self, ws: web.WebSocketResponse, payload: bytes) -> None:
        if self.msgpack:
            await ws.send_bytes(self._mp_encode(self._json_decode(payload)))
        else:
            await ws.send_frame(payload, WSMsgType.TEXT)

    def encode(self, value: Any) -> bytes:
        return self._json_encode(value)

    def decode(self, message: Any) -> Any:
        if message.type == WSMsgType.TEXT:
            return self._json_decode(message.data)
        if message.type == WSMsgType.BINARY:
            return self._mp_decode(message.data) if self.msgpack else self._json_decode(message.data)
        raise ValueError(f"unexpected frame {message.type}")


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        principal: Principal,
        codec: Codec,
        *,
        cursor: int,
        stream: EventStream,
        queue_limit: int,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.codec = codec
        self.last_sent = cursor
        self.acked = cursor
        self._stream = stream
        self._queue_limit = queue_limit
        self._pending: deque[Delivery] = deque()
        self._control: deque[bytes] = deque()
        self._ephemeral: deque[bytes] = deque(maxlen=_EPHEMERAL_LIMIT)
        self._wake = asyncio.Event()
        self._catching_up = True
        self._need_catch_up = True
        self._close_code: int | None = None
        self._sending_since: float | None = None
        self._aborting = False
        self.pump_task: asyncio.Task[None] | None = None
        self.metrics: Metrics | None = None

    @property
    def device_id(self) -> str:
        return self.principal.device_id

    @property
    def user_id(self) -> str:
        return self.principal.user_id

    # -- fed by the hub (synchronously, on the event loop) ----------------------------------

    def push(self, delivery: Delivery) -> None:
        if delivery.seq <= self.last_sent:
            return
        if self._catching_up:
            self._need_catch_up = True
        elif len(self._pending) >= self._queue_limit:  # too much to hold: read it from the database
            self._pending.clear()
            self._need_catch_up = True
        else:
            self._pending.append(delivery)
        self._wake.set()

    def behind(self, last_seq: int) -> None:
        """The database says the stream goes further than what was sent: catch up."""
        if last_seq > self.last_sent:
            self._need_catch_up = True
            self._wake.set()

    def push_ephemeral(self, payload: bytes) -> None:
        self._ephemeral.append(payload)  # lossy by design: an old typing notice is worthless
        self._wake.set()

    def reply(self, value: Any) -> None:
        self._control.append(self.codec.encode(value))
        self._wake.set()

    def close_soon(self, code: int) -> None:
        if self._close_code is None:
            self._close_code = code
        self._wake.set()

    def stalled(self, send_timeout: float) -> bool:
        """True when one send has waited on the socket longer than send_timeout."""
        return self._sending_since is not None and time.monotonic() - self._sending_since > send_timeout

    async def abort(self, code: int) -> None:
        """Close now, even with the pump stuck on a socket that accepts nothing."""
        if self._aborting:
            return
        self._aborting = True
        if self.pump_task is not None:
            self.pump_task.cancel()
        # The close frame goes behind what is buffered, without waiting for the client to read
        # it all; if the client does not answer in time, the transport is closed regardless.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(code=code, message=b"resume from your cursor", drain=False), 10)

    async def _send(self, payload: bytes) -> None:
        self._sending_since = time.monotonic()
        await self.codec.send_json_bytes(self.ws, payload)
        self._sending_since = None

    # -- the single writer ------------------------------------------------------------------

    async def pump(self) -> None:
        try:
            while True:
                if self._close_code is not None:
                    await self.ws.close(code=self._close_code, message=b"resume from your cursor")
                    return
                while self._control:
                    await self._send(self._control.popleft())
                while self._ephemeral:
                    await self._send(self._ephemeral.popleft())
                if self._need_catch_up:
                    await self._catch_up()
                    continue
                if self._pending:
                    delivery = self._pending.popleft()
                    if delivery.seq <= self.last_sent:
                        continue
                    if delivery.seq != self.last_sent + 1:  # a hint went missing: the database has it
                        self._pending.clear()
                        self._need_catch_up = True
                        continue
                    await self._send(delivery.payload)
                    self.last_sent = delivery.seq
                    if self.metrics is not None:
                        self.metrics.event_sent(delivery.at)
                    continue
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:  # a broken socket ends this connection, not the server
            log.debug("pump for device %s stopped", self.device_id, exc_info=True)

    async def _catch_up(self) -> None:
        self._catching_up = True
        self._pending.clear()
        while self._need_catch_up:
            self._need_catch_up = False
            while True:
                rows = await self._stream.read(self.device_id, self.last_sent, _READ_PAGE)
                for seq, payload in rows:
                    await self._send(payload)
                    self.last_sent = seq
                    if self.metrics is not None:
                        self.metrics.event_sent(None)
                if len(rows) < _READ_PAGE:
                    break
        self._catching_up = False


class AckWriter:
    """Stores acknowledgements, at most one write per interval per device."""

    def __init__(self, write: Callable[[str, int], Awaitable[None]], interval: float = 1.0) -> None:
        self._write = write
        self._interval = interval
        self._due: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def ack(self, device_id: str, seq: int) -> None:
        if seq > self._due.get(device_id, -1):
            self._due[device_id] = seq
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._later(), name="ack-writer")

    async def _later(self) -> None:
        await asyncio.sleep(self._interval)
        await self.flush()

    async def flush_device(self, device_id: str) -> None:
        """Store this device's last ack now (its socket closed: the next one resumes from it)."""
        seq = self._due.pop(device_id, None)
        if seq is not None:
            await self._store(device_id, seq)

    async def flush(self) -> None:
        due, self._due = self._due, {}
        for device_id, seq in due.items():
            await self._store(device_id, seq)

    async def _store(self, device_id: str, seq: int) -> None:
        try:
            await self._write(device_id, seq)
        except Exception:  # an unsaved ack only means some events are sent again
            log.warning("could not store ack for device %s", device_id, exc_info=True)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
