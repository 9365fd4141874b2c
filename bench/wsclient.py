"""One WebSocket client connection of the messaging benchmark, as a SUP client speaks the protocol.

JSON text frames, `authenticate` first and wait for `ready`, then every event's cursor is checked (the
previous one + 1, else events were lost; a cursor seen before is a duplicate) and acknowledged every
`ack_every` events. Used inside the load-generator processes (loadgen.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import msgspec

CONNECT_TIMEOUT_S = 15.0  # one WebSocket connect + authenticate + ready
CONNECT_CONCURRENCY = 20  # WebSocket handshakes in flight per load generator


# -- wire frames --------------------------------------------------------------------------------


class WireMessage(msgspec.Struct):
    id: str = ""
    seq: int = 0
    chat_id: str = ""
    sender_id: str | None = None
    client_id: str = ""
    body: str | None = None
    ciphertext: str | None = None  # base64 in JSON; left encoded


class WireFrame(msgspec.Struct):
    type: str
    cursor: int | None = None
    request_id: str | None = None
    message: WireMessage | None = None
    code: str | None = None
    resume_from: int | None = None


_decode_frame = msgspec.json.Decoder(WireFrame).decode


# -- one connection ------------------------------------------------------------------------------


class Conn:
    """One authenticated device connection; a reader task checks the event stream and dispatches frames.

    The stream is checked as a client would: every event's cursor must be the previous one + 1
    (a jump is a gap: events lost), a cursor seen before is a duplicate. Events are acknowledged
    every `ack_every` events and when the phase ends.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, account: dict[str, str], opts: dict[str, Any]):
        self.session = session
        self.url = url
        self.account = account
        self.ack_every: int = opts["ack_every"]
        self.compress: int = 15 if opts["compress"] else 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.reader: asyncio.Task[None] | None = None
        self.handler: Callable[[WireFrame, float], None] | None = None
        self.cursor = 0
        self.acked = 0
        self.unacked = 0
        self.events = 0
        self.gaps = 0
        self.duplicates = 0
        # Per chat, the last message seq seen: a chat's messages arrive in seq order, one by one.
        self.chat_seqs: dict[str, int] = {}
        self.seq_disorder = 0  # a message.new whose seq is not above the chat's last one
        self.seq_gaps = 0  # seqs skipped between two messages of a chat (0 while every message reaches everyone)
        self.acks_sent = 0
        self.errors: Counter[str] = Counter()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.closing = False  # we closed it
        self.connect_s = 0.0
        self.compressed = False

    async def open(self) -> None:
        started = time.perf_counter()
        self.ws = ws = await self.session.ws_connect(
            self.url,
            compress=self.compress,
            max_msg_size=16 * 1024 * 1024,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
        self.compressed = bool(ws.compress)
        await ws.send_str(f'{{"type":"authenticate","token":"{self.account["token"]}"}}')
        first = await ws.receive(timeout=CONNECT_TIMEOUT_S)
        if first.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"expected ready, got {first.type.name} {first.data!r} {first.extra!r}")
        frame = _decode_frame(first.data)
        if frame.type != "ready" or frame.resume_from is None:
            raise ConnectionError(f"expected ready, got {first.data[:200]!r}")
        self.cursor = self.acked = frame.resume_from
        self.connect_s = time.perf_counter() - started
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        text = aiohttp.WSMsgType.TEXT
        try:
            while True:
                msg = await ws.receive()
                if msg.type is text:
                    now = time.perf_counter()
                    try:
                        frame = _decode_frame(msg.data)
                    except msgspec.DecodeError:
                        self.errors["undecodable frame"] += 1
                        continue
                    cursor = frame.cursor
                    if cursor is not None:
                        if cursor <= self.cursor:
                            self.duplicates += 1
                            continue
                        if cursor != self.cursor + 1:
                            self.gaps += cursor - self.cursor - 1
                        self.cursor = cursor
                        self.events += 1
                        self.unacked += 1
                        if self.unacked >= self.ack_every:
                            await self.ack()
                    if frame.type == "error":
                        self.errors[frame.code or "?"] += 1
                    elif frame.type == "message.new" and frame.message is not None:
                        self._check_seq(frame.message)
                    handler = self.handler
                    if handler is not None:
                        handler(frame, now)
                elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    break
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    self.errors[f"socket error: {type(msg.data).__name__}"] += 1
                    break
        except (ConnectionError, aiohttp.ClientError) as exc:
            self.errors[f"socket error: {type(exc).__name__}"] += 1
        finally:
            self.close_code = ws.close_code
            self.closed.set()

    def _check_seq(self, message: WireMessage) -> None:
        last = self.chat_seqs.get(message.chat_id)
        if last is not None:
            if message.seq <= last:
                self.seq_disorder += 1
                return
            self.seq_gaps += message.seq - last - 1
        self.chat_seqs[message.chat_id] = message.seq

    async def ack(self) -> None:
        ws = self.ws
        if ws is None or ws.closed or self.cursor <= self.acked:
            return
        self.unacked = 0
        self.acked = self.cursor
        self.acks_sent += 1
        await ws.send_str(f'{{"type":"ack","cursor":{self.cursor}}}')

    async def send(self, payload: str) -> None:
        assert self.ws is not None
        await self.ws.send_str(payload)

    async def close(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ack()
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.reader, 5)

    @property
    def unexpected_close(self) -> bool:
        return self.closed.is_set() and not self.closing


def merge_conn_stats(conns: Sequence[Conn]) -> dict[str, Any]:
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for c in conns:
        errors.update(c.errors)
        if c.unexpected_close:
            closes[str(c.close_code)] += 1
    return {
        "connections": len(conns),
        "events": sum(c.events for c in conns),
        "gaps": sum(c.gaps for c in conns),
        "duplicates": sum(c.duplicates for c in conns),
        "chat_seq_disorder": sum(c.seq_disorder for c in conns),
        "chat_seq_gaps": sum(c.seq_gaps for c in conns),
        "acks_sent": sum(c.acks_sent for c in conns),
        "error_frames": dict(errors),
        "unexpected_closes": dict(closes),
        "compressed": sum(1 for c in conns if c.compressed),
    }


async def open_all(session: aiohttp.ClientSession, url: str, accounts: Sequence[dict[str, str]], opts: dict[str, Any]):
    """Connect and authenticate every account; (connections, connect times, failures)."""
    # An account may name its own server (several processes behind one load generator: bench/processes.py).
    conns = [Conn(session, a.get("url", url), a, opts) for a in accounts]
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
    failures: Counter[str] = Counter()

    async def one(c: Conn) -> None:
        async with limit:
            try:
                await asyncio.wait_for(c.open(), CONNECT_TIMEOUT_S)
            except Exception as exc:
                failures[f"{type(exc).__name__}: {exc}"[:200]] += 1

    await asyncio.gather(*(one(c) for c in conns))
    return conns, [c.connect_s for c in conns if c.reader is not None], failures
