"""One WebSocket connection of one device: a single writer that keeps the stream in order.

Live events arrive as hints (`push`); the pump sends them if they continue the stream
exactly, and otherwise (after a short wait for a late hint) reads what is missing from the
database. While it catches up, or when more than `queue_limit` live events wait, it keeps no
copies (it reads them from the database instead), so memory stays flat under any burst. Replies (pong, message.sent,
error) are bounded too: a client that draws more of them than `reply_limit` without reading
is closed like a slow consumer.

What is queued in one turn of the event loop is written by one callback as one transport write
(a batch's replies and events: one system call, not one per frame). The writer (the pump) is a task
only while it must wait: reading from the database, or for a client that is not taking in what it is
sent. The queues exist only while they hold something: an idle connection costs its attributes, not
a task, a waiter and three deques (~3.5 KiB of the 16 KiB an idle socket may cost, issue 15).

Liveness is measured by progress, not by one send: while frames wait for the client, the
bytes its socket took in (written, minus what is still buffered in the process) must grow
by `stall_min_bytes` per window, so a slow but steady reader is never cut. A connection
that is dropped gets its close frame written behind what is buffered, and the transport
is given a bounded time to flush it before it is aborted.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from sup.bus.process import stop_task
from sup.delivery import Delivery
from sup.domain.accounts import Principal
from sup.domain.stream import EventStream
from sup.observe.metrics import Metrics
from sup.transport.statuses import Close

try:
    import fcntl
    import termios

    _SIOCOUTQ: int | None = termios.TIOCOUTQ  # the same request as SIOCOUTQ on Linux
except (ImportError, AttributeError):  # pragma: no cover - not Linux
    _SIOCOUTQ = None

log = logging.getLogger("sup.ws")

_READ_PAGE = 500
_EPHEMERAL_LIMIT = 256
# A hint that skips a seq waits this long for the missing one before the stream is read from the database:
# with several processes, another process's hint (through Redis) often arrives after this one's own.
_LATE_HINT_SECONDS = 0.05
# How long a dropped connection's transport may take to flush its close frame (behind what was
# buffered) before it is aborted: long enough for a slow reader, short enough to free the memory.
CLOSE_FLUSH_SECONDS = 10.0


class Codec:
    """JSON text frames, or msgpack binary frames under the `sup.msgpack` subprotocol.

    It holds no state of a connection: connections share one of each (`Codec.of`), not one apiece.
    """

    @staticmethod
    def of(msgpack: bool) -> Codec:
        return _MSGPACK if msgpack else _JSON

    def __init__(self, msgpack: bool) -> None:
        self.msgpack = msgpack
        self._json_decode = msgspec.json.Decoder().decode
        self._mp_encode = msgspec.msgpack.Encoder().encode
        self._mp_decode = msgspec.msgpack.Decoder().decode
        self._json_encode = msgspec.json.Encoder().encode

    def wire(self, payload: bytes) -> tuple[bytes, WSMsgType]:
        """A JSON event as this connection's frame: its data and opcode."""
        if self.msgpack:
            return self._mp_encode(self._json_decode(payload)), WSMsgType.BINARY
        return payload, WSMsgType.TEXT

    async def send_json_bytes(self, ws: web.WebSocketResponse, payload: bytes) -> None:
        await ws.send_frame(*self.wire(payload))

    def encode(self, value: Any) -> bytes:
        return self._json_encode(value)

    def decode(self, message: Any) -> Any:
        if message.type == WSMsgType.TEXT:
            return self._json_decode(message.data)
        if message.type == WSMsgType.BINARY:
            return self._mp_decode(message.data) if self.msgpack else self._json_decode(message.data)
        raise ValueError(f"unexpected frame {message.type}")


_JSON, _MSGPACK = Codec(msgpack=False), Codec(msgpack=True)


_FIN = 0x80
_HEAD_SHORT = struct.Struct("!BB").pack
_HEAD_MEDIUM = struct.Struct("!BBH").pack
_HEAD_LONG = struct.Struct("!BBQ").pack


def _frame_into(chunks: list[bytes], data: bytes, opcode: int) -> None:
    """Append one whole, unmasked, uncompressed server frame (RFC 6455 section 5.2) to `chunks`."""
    length = len(data)
    if length < 126:
        chunks.append(_HEAD_SHORT(_FIN | opcode, length))
    elif length < 65536:
        chunks.append(_HEAD_MEDIUM(_FIN | opcode, 126, length))
    else:
        chunks.append(_HEAD_LONG(_FIN | opcode, 127, length))
    chunks.append(data)


_NO_ITEMS: tuple[Any, ...] = ()  # what an idle connection's queues are until first used


class Connection:
    # No per-instance dict, and the queues and waiters are made on first use: an idle socket keeps
    # none of them (an empty deque is 0.76 KiB, an asyncio.Event holds one more).
    __slots__ = (
        "__weakref__",  # the call relay keys its state by connection, weakly
        "_aborting",
        "_catching_up",
        "_closing_task",
        "_control",
        "_ephemeral",
        "_flush_due",
        "_gap_timer",
        "_need_catch_up",
        "_pending",
        "_progress_mark",
        "_queue_limit",
        "_raw",
        "_reply_limit",
        "_room",
        "_sending",
        "_stopped",
        "_stream",
        "_transport",
        "_woken",
        "_written",
        "acked",
        "broken",
        "closing",
        "codec",
        "last_sent",
        "metrics",
        "principal",
        "pump_task",
        "spawn",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        principal: Principal,
        codec: Codec,
        *,
        cursor: int,
        stream: EventStream,
        queue_limit: int,
        reply_limit: int = 256,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.principal = principal
        self.codec = codec
        self.last_sent = cursor
        self.acked = cursor
        self._stream = stream
        self._queue_limit = queue_limit
        self._reply_limit = reply_limit
        self._transport = transport
        self._written = 0  # bytes handed to the transport
        self._progress_mark = (time.monotonic(), 0)  # (when, bytes accepted then): the window's start
        self._pending: deque[Delivery] | None = None  # live events, continuing the stream, by seq
        self._gap_timer: asyncio.TimerHandle | None = None  # waiting for a late hint (see _LATE_HINT_SECONDS)
        self._control: deque[bytes] | None = None  # replies
        self._ephemeral: deque[bytes] | None = None  # typing notices (lossy)
        self._woken = False  # something was queued since the pump last looked
        self._flush_due = False  # a flush is scheduled for this turn of the event loop
        # Frames go straight to the transport unless they are compressed (the gateway never compresses)
        # or there is no transport to check for backpressure (then every write goes through aiohttp).
        self._raw = transport is not None and not ws.compress
        self._stopped = False  # the session ended: no pump is started any more
        self.broken = False  # the pump stopped on an error (a broken socket): the session ends it
        self._room: asyncio.Future[None] | None = None  # resolved when the reply queue is below half again
        self._catching_up = True
        self._need_catch_up = True
        self._sending = False
        self._aborting = False
        self._closing_task: asyncio.Task[None] | None = None  # the close this side began (close_soon)
        self.closing = False  # set when the connection is being closed: its frames are no longer handled
        # The single writer, while there is something to write: an idle connection has no task.
        self.pump_task: asyncio.Task[None] | None = None
        self.metrics: Metrics | None = None
        # Set by the hub: runs a coroutine as a task it owns (and awaits at shutdown).
        self.spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None

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
        pending = self._pending
        if self._catching_up:
            self._need_catch_up = True
        elif pending is None:
            self._pending = deque((delivery,))
        elif len(pending) >= self._queue_limit:  # too much to hold: read it from the database
            pending.clear()
            self._need_catch_up = True
        elif pending and delivery.seq < pending[-1].seq:  # hints from two processes crossed
            bisect.insort(pending, delivery, key=_seq)
        else:
            pending.append(delivery)
        self._wake()

    def behind(self, last_seq: int) -> None:
        """The database says the stream goes further than what was sent: catch up."""
        if last_seq > self.last_sent:
            self._need_catch_up = True
            self._wake()

    def push_ephemeral(self, payload: bytes) -> None:
        if self._ephemeral is None:
            self._ephemeral = deque(maxlen=_EPHEMERAL_LIMIT)
        self._ephemeral.append(payload)  # lossy by design: an old typing notice is worthless
        self._wake()

    def reply(self, value: Any) -> None:
        if self.closing:
            return
        control = self._control
        if control is None:
            control = self._control = deque()
        elif len(control) >= self._reply_limit:  # the client draws replies and does not read them
            control.clear()
            self.close_soon(Close.RESUME, b"too many unread replies: read what you are sent")
            return
        control.append(self.codec.encode(value))
        self._wake()

    @property
    def replies_waiting(self) -> int:
        return len(self._control or _NO_ITEMS)

    async def room_for_replies(self) -> None:
        """Wait while the reply queue is over half full: the gateway reads no more frames meanwhile, so
        a client that asks faster than it reads is held back by TCP, and only one that never reads is closed."""
        while self.replies_waiting >= self._reply_limit // 2 and not self.closing:
            self._room = room = asyncio.get_running_loop().create_future()
            try:
                await room
            finally:
                self._room = None

    def _wake(self) -> None:
        self._woken = True
        if self.pump_task is None and not self._flush_due and not self._stopped and self.spawn is not None:
            # Not written at once: what else is queued meanwhile goes out in the same write, one system
            # call instead of one per frame. Two turns of the loop later, not one: a batch's commit pushes
            # its events first, and the callbacks that answer its sends run in the next turn; this way a
            # sender's events and its `message.sent` replies share one write.
            self._flush_due = True
            loop = asyncio.get_running_loop()
            loop.call_soon(loop.call_soon, self._flush)

    def _flush(self) -> None:
        """Write everything queued as one transport write, without a task.

        Only what has to wait starts the pump (a task): a read from the database, a client whose socket
        is not taking in what it is sent (bytes still buffered), a socket that is closing. Otherwise the
        frames are written in the pump's order, which the pump's checks keep: control, ephemeral, then
        live events that continue the stream exactly.
        """
        self._flush_due = False
        if self.pump_task is not None or self._stopped or self.broken or self.spawn is None:
            return
        transport = self._transport
        if (
            self._need_catch_up
            or not self._raw
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
            or self.ws.closed
        ):
            self.pump_task = self.spawn(self._pump())
            return
        self._woken = False
        chunks: list[bytes] = []
        wire = self.codec.wire
        control = self._control
        if control:
            for payload in control:
                _frame_into(chunks, *wire(payload))
            self._control = None
        ephemeral = self._ephemeral
        if ephemeral:
            for payload in ephemeral:
                _frame_into(chunks, *wire(payload))
            self._ephemeral = None
        pending = self._pending
        if pending and (self._gap_timer is None or pending[0].seq <= self.last_sent + 1):
            self._pending = None
            last, metrics = self.last_sent, self.metrics
            for i, delivery in enumerate(pending):
                if delivery.seq <= last:
                    continue
                if delivery.seq != last + 1:  # a hint is late (another process's) or lost
                    if last != self.last_sent:
                        self._stop_waiting_for_hint()  # the stream moved on: this gap gets its own wait
                    self._pending = deque(itertools.islice(pending, i, None))
                    self._wait_for_late_hint()
                    break
                _frame_into(chunks, *wire(delivery.payload))
                last = delivery.seq
                if metrics is not None:
                    metrics.event_sent(delivery.at)
            else:
                self._stop_waiting_for_hint()
            self.last_sent = last
        if chunks:
            data = b"".join(chunks)
            self._written += len(data)
            try:
                transport.write(data)
            except Exception:  # a broken socket ends this connection, not the server
                log.debug("write to device %s failed", self.device_id, exc_info=True)
                self.broken = True
        if control or self.broken:
            self._make_room()
        if self._need_catch_up and not self.broken:
            self.pump_task = self.spawn(self._pump())

    def start(self) -> None:
        """Added to the hub: catch up, and write what was queued before (the `ready` reply)."""
        self._wake()

    async def stop(self) -> None:
        """The session ends: the pump is stopped for good (a reply that comes later goes nowhere)."""
        self._stopped = True
        self._stop_waiting_for_hint()
        await stop_task(self.pump_task)

    def _make_room(self) -> None:
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)

    def close_soon(self, code: int, message: bytes = b"resume from your cursor") -> None:
        """Close this connection from synchronous code (a callback, the hub's bus listener)."""
        if self.closing:
            return
        self.closing = True
        if self.spawn is not None:
            self._closing_task = self.spawn(self.abort(code, message))

    async def closed_by_us(self) -> None:
        """Wait for the close this side began, bounded by CLOSE_FLUSH_SECONDS.

        A session that ended before it would drop the TCP connection while the client's close reply,
        behind its unread frames, is still arriving: the kernel answers those with a reset, and a
        client that had not yet read the close frame loses it and sees 1006 instead of the code.
        """
        task = self._closing_task
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def _buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    def _unacknowledged(self) -> int:
        """Bytes in the kernel's send queue, not yet acknowledged by the client (Linux; else 0).

        They count as waiting, not as progress: the kernel says "writable" only once a third of its
        (megabytes large) buffer is free, so the process's own buffer moves in jumps seconds apart
        even for a client that reads steadily; what the client acknowledges moves as it reads.
        """
        transport = self._transport
        sock = transport.get_extra_info("socket") if transport is not None and not transport.is_closing() else None
        if sock is None or _SIOCOUTQ is None:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), _SIOCOUTQ, b"\0\0\0\0"))[0]
        except (OSError, ValueError):
            return 0

    def stalled(self, now: float, window: float, min_bytes: int) -> bool:
        """True when frames wait for the client and its socket took in under min_bytes over the last window."""
        since, base = self._progress_mark
        if self._written == base and not self._sending:
            # All it was sent had been acknowledged at the mark, and nothing was sent since: idle, and
            # known without asking the kernel (the hub asks this of every socket, thousands at a time).
            self._progress_mark = (now, base)
            return False
        buffered, unacked = self._buffered(), self._unacknowledged()
        accepted = self._written - buffered - unacked  # what the client's TCP has acknowledged
        if not (self._sending or buffered or unacked) or accepted - base >= min_bytes:
            self._progress_mark = (now, accepted)  # idle, or progressing: a new window starts
            return False
        return now - since >= window

    async def abort(self, code: int, message: bytes = b"resume from your cursor") -> None:
        """Close now, even with the pump stuck on a socket that accepts nothing.

        The close frame goes behind what is buffered (a TCP stream cannot reorder), without
        waiting for the client to read it all first; the transport then gets CLOSE_FLUSH_SECONDS
        to hand it over, and is aborted after that, so a client that reads nothing costs nothing.
        """
        if self._aborting:
            return
        self._aborting = True
        self.closing = True
        self._make_room()
        if self._flush_due:  # what was queued before the close goes out ahead of it, as a running pump wrote it
            self._flush()
        with contextlib.suppress(Exception):
            await self.stop()
        transport = self._transport
        try:
            async with asyncio.timeout(CLOSE_FLUSH_SECONDS):
                with contextlib.suppress(Exception):
                    await self.ws.close(code=code, message=message, drain=False)
                # A transport signals only "below the low-water mark", not "empty": poll for the last bytes.
                while transport is not None and transport.get_write_buffer_size() > 0:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        except TimeoutError:
            pass
        finally:
            if transport is not None and transport.get_write_buffer_size() > 0:
                transport.abort()  # what is still buffered would never be read

    async def _send(self, payload: bytes) -> None:
        data, opcode = self.codec.wire(payload)
        # Counted before the write: the frame is in the transport's buffer while the send waits.
        self._written += len(data) + (2 if len(data) < 126 else 4 if len(data) < 65536 else 10)
        self._sending = True
        try:
            await self.ws.send_frame(data, opcode)
        finally:
            self._sending = False

    # -- the single writer ------------------------------------------------------------------

    async def _pump(self) -> None:
        """Write until nothing is left, then end (the next `_wake` starts another): one at a time."""
        try:
            while True:
                self._woken = False
                control = self._control
                if control:
                    while control:
                        await self._send(control.popleft())
                        if len(control) < self._reply_limit // 2:
                            self._make_room()
                    self._control = None  # an idle connection keeps no empty queue
                ephemeral = self._ephemeral
                if ephemeral:
                    while ephemeral:
                        await self._send(ephemeral.popleft())
                    self._ephemeral = None
                if self._need_catch_up:
                    await self._catch_up()
                    continue
                pending = self._pending
                if pending and (self._gap_timer is None or pending[0].seq <= self.last_sent + 1):
                    delivery = pending.popleft()
                    if not pending:
                        self._pending = None
                    if delivery.seq <= self.last_sent:
                        continue
                    if delivery.seq != self.last_sent + 1:  # a hint is late (another process's) or lost
                        self._pending = deque((delivery, *(pending or ())))
                        self._wait_for_late_hint()
                        continue
                    self._stop_waiting_for_hint()
                    await self._send(delivery.payload)
                    self.last_sent = delivery.seq
                    if self.metrics is not None:
                        self.metrics.event_sent(delivery.at)
                    continue
                if self._woken:  # queued while the last frame was written: look again
                    continue
                self.pump_task = None  # in the same step as the checks above: nothing is missed
                return
        except Exception:  # a broken socket ends this connection, not the server
            log.debug("pump for device %s stopped", self.device_id, exc_info=True)
            self.broken = True  # pump_task stays set: no other pump starts
            self._make_room()

    def _wait_for_late_hint(self) -> None:
        """Give a missing seq _LATE_HINT_SECONDS to arrive as a hint before reading the stream (once per gap)."""
        if self._gap_timer is None:
            self._gap_timer = asyncio.get_running_loop().call_later(_LATE_HINT_SECONDS, self._hint_lost)

    def _stop_waiting_for_hint(self) -> None:
        if self._gap_timer is not None:
            self._gap_timer.cancel()
            self._gap_timer = None

    def _hint_lost(self) -> None:
        self._gap_timer = None
        self._need_catch_up = True
        self._wake()

    async def _catch_up(self) -> None:
        self._catching_up = True
        self._pending = None
        self._stop_waiting_for_hint()
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


def _seq(delivery: Delivery) -> int:
    return delivery.seq
