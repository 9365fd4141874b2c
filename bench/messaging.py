"""Messaging benchmark: WebSocket throughput, latency, group fan-out and idle-connection memory of `sup run`.

Everything runs against a real `python -m sup run` subprocess on a free loopback port, with a fresh
temporary data directory (SQLite by default; with --database-url postgresql://... a fresh Postgres
database is created for the run and dropped afterwards). The load comes from separate load-generator
processes (--workers) that speak the WebSocket protocol the way a client does (JSON frames,
`authenticate` first, `ack` of the event cursor, `message.send` answered by `message.sent`):

1. throughput: P sender/receiver pairs, each in its own chat, pipelined sends (W awaiting their
   durable `message.sent` per connection); a message counts when the sender got `message.sent` AND
   the receiver got `message.new`; a fixed number of messages, reported as messages/s;
2. latency: send -> receive at a steady, paced rate (open loop), the send time embedded in the body;
3. group fan-out: one sender, M receiving members connected, send -> each receipt, paced;
4. memory: RSS of the server with N idle authenticated WebSocket clients: on the server that registered
   the users, on the same server after phases 1-3, and on a server restarted on the same data.

Usage (from the project root):

    .venv/bin/python bench/messaging.py [--database-url URL] [--json-out PATH] [--profile PATH]

A human-readable summary is printed; every figure is written as JSON to --json-out (default
bench/reports/messaging-<database>.json). Exit status: 0 when every message was stored and delivered
exactly once, in order, and the server stopped cleanly; 1 otherwise; 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec
from foundation import (
    HOST,
    PASSWORD,
    BenchError,
    PostgresDatabases,
    ServerProcess,
    cpu_by_name,
    cpu_seconds,
    describe_process,
    free_port,
    host_cpu_times,
    kill_server,
    machine_info,
    memory_mib,
    percentile,
    process_cpu_snapshot,
    read_log,
    run_and_report,
    server_env,
    software_info,
    stop_server,
    summarize_ms,
    wait_healthy,
)

BENCH_DIR = Path(__file__).resolve().parent
WS_PATH = "/api/v1/ws"
TOTAL_BUDGET_S = 180.0  # the whole benchmark is cut off after this
CONNECT_TIMEOUT_S = 15.0  # one WebSocket connect + authenticate + ready
STAGE_TIMEOUT_S = 60.0  # connecting a phase's clients, closing them
DRAIN_S = 10.0  # after the last send: how long outstanding answers/receipts may take before they count as lost
CONNECT_CONCURRENCY = 20  # WebSocket handshakes in flight per load generator
HTTP_CONCURRENCY = 8  # registrations / chat creations in flight (argon2 is CPU-bound anyway)
OTHER_LOAD_WARN_PCT = 5.0
LOG_PROBLEMS = ("ERROR", "WARNING", "Traceback", "CRITICAL")
# Between phases: the server stores acks at most once a second and records last-seen times of the clients
# that left; let that finish so that it does not fall into the next phase's measurements.
ACK_SETTLE_S = 1.5
TARGETS = {  # the targets (one process, SQLite)
    "throughput_msgs_per_s": 5000,
    "latency_p99_ms": 20.0,
    "fanout_p99_ms": 20.0,
    "idle_rss_mb": 70.0,  # decimal megabytes; 70 MB = 66.8 MiB
}


# -- statistics ---------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def steady_rate(times: Sequence[float], low: float = 10, high: float = 90) -> float | None:
    """Completions/s between the low-th and high-th percentile completion: the rate without ramp-up/tail."""
    if len(times) < 20:
        return None
    ordered = sorted(times)
    a, b = percentile(ordered, low), percentile(ordered, high)
    between = sum(1 for t in ordered if a <= t <= b)
    return rate(between - 1, b - a)


def per_second(sent_ats: Sequence[float], latencies: Sequence[float], start: float) -> list[dict[str, Any]]:
    """Receipts grouped by the second (since start) their message was sent: count, p50, p99, max in ms."""
    buckets: dict[int, list[float]] = {}
    for t, latency in zip(sent_ats, latencies, strict=True):
        buckets.setdefault(int(t - start), []).append(latency * 1000)
    return [
        {
            "second": second,
            "receipts": len(values),
            "p50_ms": round(percentile(values, 50), 2),
            "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(max(values), 2),
        }
        for second, values in sorted(buckets.items())
    ]


def mb(kib: float) -> float:
    return round(kib * 1024 / 1e6, 1)


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
    detail: str | None = None
    resume_from: int | None = None


_decode_frame = msgspec.json.Decoder(WireFrame).decode
_encode = msgspec.json.Encoder().encode


# -- load generator process: one WebSocket client connection --------------------------------------


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

    def stats(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
            "acks_sent": self.acks_sent,
            "errors": dict(self.errors),
            "unexpected_close": [self.close_code] if self.unexpected_close else [],
        }


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
        "acks_sent": sum(c.acks_sent for c in conns),
        "error_frames": dict(errors),
        "unexpected_closes": dict(closes),
        "compressed": sum(1 for c in conns if c.compressed),
    }


# -- load generator process: the phases ----------------------------------------------------------


class Pipe:
    """The worker's end of the control pipe (blocking reads run in a thread)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, value: dict[str, Any]) -> None:
        self.conn.send(value)

    async def recv(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.conn.recv)


async def open_all(session: aiohttp.ClientSession, url: str, accounts: Sequence[dict[str, str]], opts: dict[str, Any]):
    """Connect and authenticate every account; (connections, connect times, failures)."""
    conns = [Conn(session, url, a, opts) for a in accounts]
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


def body_for(prefix: str, k: int, t: float, pad: str) -> str:
    """`<client_id>|<perf_counter at send>|<padding>`: the receiver reads the send time from the body."""
    return f"{prefix}{k}|{t!r}|{pad}"


def send_frame(chat_id: str, client_id: str, request_id: int, body: str | None, recipients: str | None) -> str:
    head = f'{{"type":"message.send","request_id":"{request_id}","chat_id":"{chat_id}","client_id":"{client_id}"'
    if recipients is not None:  # direct chat: per-device ciphertexts, as real clients send
        return f'{head},"recipients":{recipients}}}'
    return f'{head},"body":"{body}"}}'


class PairRun:
    """Throughput: one sender streams n messages to one receiver, `window` awaiting message.sent."""

    def __init__(self, index: int, sender: Conn, receiver: Conn, pair: dict[str, Any], cmd: dict[str, Any]) -> None:
        self.sender = sender
        self.receiver = receiver
        self.chat_id = pair["chat_id"]
        self.n: int = cmd["per_pair"][index]
        self.prefix = f"{cmd['tag']}.{pair['index']}."
        self.pad = "x" * cmd["body_bytes"]
        self.recipients = None
        if pair.get("direct"):
            ciphertext = base64.b64encode(os.urandom(cmd["body_bytes"])).decode()
            self.recipients = json.dumps([{"device_id": pair["receiver"]["device_id"], "ciphertext": ciphertext}])
        self.window = asyncio.Semaphore(cmd["window"])
        self.t_send = [0.0] * self.n
        self.t_sent = [0.0] * self.n
        self.t_recv = [0.0] * self.n
        self.t_done: list[float] = []
        self.issued = 0
        self.refused: Counter[str] = Counter()
        self.dup_sent = 0
        self.dup_recv = 0
        self.bad_content = 0
        self.settled = 0  # complete or refused
        self.done = asyncio.Event()
        sender.handler = self.on_sender
        receiver.handler = self.on_receiver

    def _settle(self) -> None:
        self.settled += 1
        if self.settled >= self.n:
            self.done.set()

    def on_sender(self, frame: WireFrame, now: float) -> None:
        kind = frame.type
        if kind == "message.sent":
            i = int(frame.request_id or -1)
            if not 0 <= i < self.n or self.t_sent[i]:
                self.dup_sent += 1
                return
            self.t_sent[i] = now
            self.window.release()
            if self.t_recv[i]:
                self.t_done.append(now)
                self._settle()
        elif kind == "error" and frame.request_id is not None:
            self.refused[frame.code or "?"] += 1
            self.window.release()
            self._settle()

    def on_receiver(self, frame: WireFrame, now: float) -> None:
        message = frame.message
        if frame.type != "message.new" or message is None or not message.client_id.startswith(self.prefix):
            return
        i = int(message.client_id[len(self.prefix) :])
        if not 0 <= i < self.n or self.t_recv[i]:
            self.dup_recv += 1
            return
        self.t_recv[i] = now
        if self.recipients is None:
            if not (message.body or "").startswith(f"{message.client_id}|"):
                self.bad_content += 1
        elif not message.ciphertext:
            self.bad_content += 1
        if self.t_sent[i]:
            self.t_done.append(now)
            self._settle()

    async def run(self, deadline: float) -> None:
        for i in range(self.n):
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self.sender.closed.is_set():
                break
            try:
                await asyncio.wait_for(self.window.acquire(), remaining)
            except TimeoutError:
                break
            if self.sender.closed.is_set():
                break
            t = time.perf_counter()
            self.t_send[i] = t
            client_id = f"{self.prefix}{i}"
            body = None if self.recipients else body_for(self.prefix, i, t, self.pad)
            try:
                await self.sender.send(send_frame(self.chat_id, client_id, i, body, self.recipients))
            except (ConnectionError, aiohttp.ClientError):
                break
            self.issued += 1
        if self.issued < self.n:  # could not send them all: only what was sent can settle
            self.settled += self.n - self.issued
            if self.settled >= self.n:
                self.done.set()
        waiters = [asyncio.ensure_future(self.done.wait()), asyncio.ensure_future(self.sender.closed.wait())]
        await asyncio.wait(
            waiters, timeout=max(0.0, deadline - time.perf_counter()) + DRAIN_S, return_when="FIRST_COMPLETED"
        )
        for w in waiters:
            w.cancel()


async def wait_go(pipe: Pipe, ready: dict[str, Any]) -> dict[str, Any]:
    """Report `ready`, then wait for go (or abort); sleeps until the common start time."""
    pipe.send({"stage": "connected", **ready})
    cmd = await pipe.recv()
    if cmd["op"] == "go":
        delay = cmd["go_at"] - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
    return cmd


async def finish(pipe: Pipe, conns: Sequence[Conn], result: dict[str, Any]) -> None:
    """Send the result (connections still open), wait for release, close everything."""
    for c in conns:
        with contextlib.suppress(Exception):
            await c.ack()
    result["conn_stats"] = merge_conn_stats(conns)
    pipe.send({"stage": "result", **result})
    await pipe.recv()  # release
    await asyncio.gather(*(c.close() for c in conns))
    pipe.send({"stage": "closed"})


async def op_idle(pipe: Pipe, session: aiohttp.ClientSession, url: str, cmd: dict[str, Any]) -> None:
    conns, connect_s, failures = await open_all(session, url, cmd["accounts"], cmd["opts"])
    live = [c for c in conns if c.reader is not None]
    go = await wait_go(pipe, {"connections": len(live), "failures": dict(failures), "connect_s": connect_s})
    if go["op"] != "go":
        await asyncio.gather(*(c.close() for c in live))
        return
    await finish(pipe, live, {})


async def op_throughput(pipe: Pipe, session: aiohttp.ClientSession, url: str, cmd: dict[str, Any]) -> None:
    pairs = cmd["pairs"]
    conns, connect_s, failures = await open_all(
        session, url, [a for p in pairs for a in (p["sender"], p["receiver"])], cmd["opts"]
    )
    live = [c for c in conns if c.reader is not None]
    go = await wait_go(pipe, {"connections": len(live), "failures": dict(failures), "connect_s": connect_s})
    if go["op"] != "go":
        await asyncio.gather(*(c.close() for c in live))
        return
    runs = [
        PairRun(i, conns[2 * i], conns[2 * i + 1], p, cmd)
        for i, p in enumerate(pairs)
        if conns[2 * i].reader is not None and conns[2 * i + 1].reader is not None
    ]
    wall0 = time.time() - time.perf_counter()
    started = time.perf_counter()
    await asyncio.gather(*(r.run(started + cmd["max_seconds"]) for r in runs))
    ended = time.perf_counter()
    refused: Counter[str] = Counter()
    send_to_recv, send_to_sent = [], []
    for r in runs:
        refused.update(r.refused)
        for i in range(r.issued):
            if r.t_recv[i]:
                send_to_recv.append(r.t_recv[i] - r.t_send[i])
            if r.t_sent[i]:
                send_to_sent.append(r.t_sent[i] - r.t_send[i])
    result = {
        "pairs": len(runs),
        "requested": sum(cmd["per_pair"]),
        "issued": sum(r.issued for r in runs),
        "sent_acks": sum(1 for r in runs for t in r.t_sent if t),
        "received": sum(1 for r in runs for t in r.t_recv if t),
        "complete": sum(len(r.t_done) for r in runs),
        "refused": dict(refused),
        "duplicate_sent_acks": sum(r.dup_sent for r in runs),
        "duplicate_receipts": sum(r.dup_recv for r in runs),
        "bad_content": sum(r.bad_content for r in runs),
        "go_wall": wall0 + started,
        "end_wall": wall0 + ended,
        "completions_wall": [wall0 + t for r in runs for t in r.t_done],
        "send_to_receive_s": send_to_recv,
        "send_to_durable_s": send_to_sent,
    }
    await finish(pipe, live, result)


class Paced:
    """Latency and fan-out: open-loop sends at a fixed rate; each receipt's latency from the body's timestamp."""

    def __init__(self, senders: Sequence[Conn], chats: Sequence[str], receivers: Sequence[Sequence[Conn]], cmd) -> None:
        self.senders = senders
        self.chats = chats
        self.count: int = cmd["count"]
        self.rate: float = cmd["rate"]
        self.prefix = f"{cmd['tag']}."
        self.pad = "x" * cmd["body_bytes"]
        self.expected = sum(len(r) for r in receivers) * self.count // len(senders)
        self.t_send = [0.0] * self.count
        self.lag = [0.0] * self.count  # actual send - scheduled send
        self.t_sent = [0.0] * self.count
        self.latencies: list[float] = []  # send -> receipt, every receipt
        self.sent_ats: list[float] = []  # the matching send times
        self.started = 0.0
        self.per_message_last = [0.0] * self.count  # send -> the last receiver's receipt
        self.seen = [bytearray(self.count) for _ in range(sum(len(r) for r in receivers))]
        self.received = 0
        self.duplicates = 0
        self.bad_content = 0
        self.refused: Counter[str] = Counter()
        self.done = asyncio.Event()
        self.issued = 0
        self.answered = 0  # message.sent or error frames for our sends
        self.sending_done = False
        for s in senders:
            s.handler = self.on_sender
        index = 0
        for group in receivers:
            for r in group:
                r.handler = self._receiver(index)
                index += 1

    def _check_done(self) -> None:
        """Done when every send is answered (message.sent or error) and every receipt has arrived."""
        if self.sending_done and self.received >= self.expected and self.answered >= self.issued:
            self.done.set()

    def on_sender(self, frame: WireFrame, now: float) -> None:
        if frame.type == "message.sent":
            k = int(frame.request_id or -1)
            if 0 <= k < self.count and not self.t_sent[k]:
                self.t_sent[k] = now
                self.answered += 1
                self._check_done()
        elif frame.type == "error" and frame.request_id is not None:
            self.refused[frame.code or "?"] += 1
            self.answered += 1
            self._check_done()

    def _receiver(self, index: int) -> Callable[[WireFrame, float], None]:
        seen = self.seen[index]
        prefix = self.prefix

        def on_frame(frame: WireFrame, now: float) -> None:
            message = frame.message
            if frame.type != "message.new" or message is None or not message.client_id.startswith(prefix):
                return
            parts = (message.body or "").split("|")
            try:
                k = int(message.client_id[len(prefix) :])
                sent_at = float(parts[1])
            except (IndexError, ValueError):
                self.bad_content += 1
                return
            if not 0 <= k < self.count or seen[k]:
                self.duplicates += 1
                return
            seen[k] = 1
            latency = now - sent_at
            self.latencies.append(latency)
            self.sent_ats.append(sent_at)
            if latency > self.per_message_last[k]:
                self.per_message_last[k] = latency
            self.received += 1
            self._check_done()

        return on_frame

    async def run(self, max_seconds: float) -> dict[str, Any]:
        self.started = started = time.perf_counter()
        deadline = started + max_seconds
        n = len(self.senders)
        for k in range(self.count):
            due = started + k / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sender = self.senders[k % n]
            if time.perf_counter() > deadline or sender.closed.is_set():
                break
            t = time.perf_counter()
            self.t_send[k] = t
            self.lag[k] = t - due
            client_id = f"{self.prefix}{k}"
            frame = send_frame(self.chats[k % n], client_id, k, body_for(self.prefix, k, t, self.pad), None)
            try:
                await sender.send(frame)
            except (ConnectionError, aiohttp.ClientError):
                break
            self.issued += 1
        last_send = time.perf_counter()
        if self.issued < self.count:
            self.expected = self.expected * self.issued // self.count
        self.sending_done = True
        self._check_done()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.done.wait(), DRAIN_S)
        issued = self.issued
        return {
            "issued": issued,
            "requested": self.count,
            "send_seconds": round(last_send - started, 3),
            "achieved_send_rate": rate(issued - 1, self.t_send[issued - 1] - self.t_send[0]) if issued > 1 else 0.0,
            "scheduler_lag_s": self.lag[:issued],
            "sent_acks": sum(1 for t in self.t_sent[:issued] if t),
            "send_to_durable_s": [self.t_sent[k] - self.t_send[k] for k in range(issued) if self.t_sent[k]],
            "expected_receipts": self.expected,
            "received": self.received,
            "duplicate_receipts": self.duplicates,
            "bad_content": self.bad_content,
            "refused": dict(self.refused),
            "send_to_receive_s": self.latencies,
            "per_second": per_second(self.sent_ats, self.latencies, self.started),
            "send_to_last_receiver_s": [v for v in self.per_message_last[:issued] if v],
        }


async def op_paced(pipe: Pipe, session: aiohttp.ClientSession, url: str, cmd: dict[str, Any]) -> None:
    """Latency (pairs, each its chat) or fan-out (one sender, one chat, many receivers)."""
    groups = cmd["groups"]  # [{"sender": account, "chat_id": ..., "receivers": [accounts]}]
    accounts = [a for g in groups for a in (g["sender"], *g["receivers"])]
    conns, connect_s, failures = await open_all(session, url, accounts, cmd["opts"])
    live = [c for c in conns if c.reader is not None]
    go = await wait_go(pipe, {"connections": len(live), "failures": dict(failures), "connect_s": connect_s})
    if go["op"] != "go":
        await asyncio.gather(*(c.close() for c in live))
        return
    if len(live) != len(conns):
        await finish(pipe, live, {"error": "not every client connected"})
        return
    senders, chats, receivers = [], [], []
    at = 0
    for g in groups:
        senders.append(conns[at])
        chats.append(g["chat_id"])
        receivers.append(conns[at + 1 : at + 1 + len(g["receivers"])])
        at += 1 + len(g["receivers"])
    paced = Paced(senders, chats, receivers, cmd)
    result = await paced.run(cmd["max_seconds"])
    await finish(pipe, live, result)


OPS = {"idle": op_idle, "throughput": op_throughput, "paced": op_paced}


async def _loadgen(conn: Connection) -> None:
    pipe = Pipe(conn)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        pipe.send({"stage": "started", "pid": os.getpid()})
        while True:
            cmd = await pipe.recv()
            if cmd["op"] == "exit":
                return
            try:
                await OPS[cmd["op"]](pipe, session, cmd["url"], cmd)
            except Exception as exc:
                pipe.send(
                    {"stage": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
                )


def loadgen_process(conn: Connection) -> None:
    """Child process entry point: a control loop on its own event loop (uvloop when installed)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop
    except ImportError:
        asyncio.run(_loadgen(conn))
    else:
        uvloop.run(_loadgen(conn))


class LoadGen:
    """Parent side of one load-generator process."""

    def __init__(self, index: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.index = index
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=loadgen_process, args=(child,), daemon=True, name=f"loadgen-{index}")

    async def start(self) -> None:
        self._proc.start()
        await self.expect("started", 30)

    @property
    def pid(self) -> int:
        return self._proc.pid or 0

    def send(self, value: dict[str, Any]) -> None:
        self._conn.send(value)

    async def expect(self, stage: str, wait_s: float) -> dict[str, Any]:
        if not await asyncio.to_thread(self._conn.poll, wait_s):
            raise BenchError(f"load generator {self.index} did not answer within {wait_s:.0f} s (waiting for {stage})")
        reply = self._conn.recv()
        if reply.get("stage") == "failed":
            raise BenchError(f"load generator {self.index} failed: {reply['error']}\n{reply.get('traceback', '')}")
        if reply.get("stage") != stage:
            raise BenchError(f"load generator {self.index}: expected {stage}, got {reply.get('stage')}")
        return reply

    def stop(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send({"op": "exit"})
            self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


# -- CPU accounting -------------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, float]:
    """{tid: cpu seconds} of every thread of pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


# Processes that belong to the benchmark; any other CPU use is load from elsewhere on the host.
OWN_PROCESSES = ("sup server", "load generators", "bench orchestrator", "postgres", "py-spy")


class CpuWatch:
    """CPU used between construction and result(): server (event-loop thread vs the others), load
    generators, orchestrator, Postgres, and the host as a whole (see foundation.CpuWatch)."""

    def __init__(
        self,
        server_pid: int,
        loadgen_pids: Sequence[int],
        extra: dict[int, str] | None = None,
        pg_database: str | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.labels = {server_pid: "sup server", os.getpid(): "bench orchestrator", **(extra or {})}
        self.labels.update({pid: "load generators" for pid in loadgen_pids})
        self.loadgen_pids = list(loadgen_pids)
        self.pg_database = pg_database
        self.processes = process_cpu_snapshot()
        self.latest = dict(self.processes)  # last CPU time seen of every process, also of those that exited
        self._label_postgres(self.processes)
        self.server = cpu_seconds(server_pid)
        self.threads = thread_cpu(server_pid)
        self.host = host_cpu_times()
        self.started = time.perf_counter()

    def _label_postgres(self, snapshot: dict[int, tuple[str, float]]) -> None:
        """Postgres backends serving other databases (another test run on the host) are other load."""
        for pid, (name, _) in snapshot.items():
            if name != "postgres" or pid in self.labels:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            # a client backend's title: "postgres: 15/main: <user> <database> <host>(<port>) <state>"
            parts = title.split()
            if len(parts) >= 5 and ("(" in parts[4] or parts[4] == "[local]"):
                own = self.pg_database is not None and parts[3] == self.pg_database
                self.labels[pid] = "postgres" if own else "postgres, other databases"

    def sample(self) -> None:
        snapshot = process_cpu_snapshot()
        self._label_postgres(snapshot)
        self.latest.update(snapshot)

    async def sample_forever(self, interval: float = 0.5) -> None:
        """Processes that exit during the phase (e.g. a Postgres backend the pool replaced) keep the CPU
        time they had at the last sample; without sampling it would count as other load."""
        while True:
            await asyncio.sleep(interval)
            self.sample()

    def result(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        server = cpu_seconds(self.server_pid) - self.server
        threads = thread_cpu(self.server_pid)
        main = min(server, threads.get(self.server_pid, 0.0) - self.threads.get(self.server_pid, 0.0))
        self.sample()
        after = self.latest
        by_name = cpu_by_name(self.processes, after, self.labels)
        per_loadgen = [
            round(after.get(pid, ("", 0.0))[1] - self.processes.get(pid, ("", 0.0))[1], 2) for pid in self.loadgen_pids
        ]
        busy, total = host_cpu_times()
        tick = os.sysconf("SC_CLK_TCK")
        host_busy_s = (busy - self.host[0]) / tick
        capacity_s = (total - self.host[1]) / tick
        own = sum(by_name[name] for name in OWN_PROCESSES)
        other = max(0.0, host_busy_s - own)

        def pct(seconds: float) -> float:
            return round(100 * seconds / elapsed, 1) if elapsed else 0.0

        return {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(server, 2),
            "server_pct_of_one_cpu": pct(server),
            "server_event_loop_thread_pct": pct(main),
            "server_other_threads_pct": pct(server - main),
            "load_generators_pct_of_one_cpu": pct(by_name["load generators"]),
            "load_generator_cpu_s_each": per_loadgen,
            "postgres_pct_of_one_cpu": pct(by_name["postgres"]),
            "orchestrator_pct_of_one_cpu": pct(by_name["bench orchestrator"]),
            "host_cpu_busy_pct": round(100 * host_busy_s / capacity_s, 1) if capacity_s else 0.0,
            "other_cpu_pct_of_host": round(100 * other / capacity_s, 1) if capacity_s else 0.0,
            "cpu_s_by_process": {name: round(sec, 2) for name, sec in by_name.most_common(6)},
        }


# -- setup over HTTP ------------------------------------------------------------------------------


async def bounded_gather(concurrency: int, coros: Sequence[Awaitable[Any]]) -> list[Any]:
    limit = asyncio.Semaphore(concurrency)

    async def one(coro: Awaitable[Any]) -> Any:
        async with limit:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, json=body, headers=headers) as resp:
        data = await resp.read()
        if resp.status not in (200, 201):
            raise BenchError(f"POST {url} -> {resp.status}: {data[:300]!r}")
        return json.loads(data)


async def register(session: aiohttp.ClientSession, base: str, count: int) -> list[dict[str, str]]:
    async def one(i: int) -> dict[str, str]:
        data = await post(session, f"{base}/api/v1/auth/register", {"username": f"mb_{i:05d}", "password": PASSWORD})
        return {"user_id": data["user"]["id"], "device_id": data["device_id"], "token": data["access_token"]}

    return await bounded_gather(HTTP_CONCURRENCY, [one(i) for i in range(count)])


async def create_chat(
    session: aiohttp.ClientSession, base: str, owner: dict[str, str], members: Sequence[dict[str, str]], direct: bool
) -> str:
    body: dict[str, Any] = {"type": "direct", "member_ids": [m["user_id"] for m in members]}
    if not direct:
        body.update({"type": "group", "title": "bench", "encrypted": False})
    data = await post(session, f"{base}/api/v1/chats", body, owner["token"])
    return data["id"]


# -- profiling ------------------------------------------------------------------------------------


class Profiler:
    """py-spy record --format raw on the server for the duration of a phase; summarised afterwards."""

    def __init__(self, py_spy: str, pid: int, out: Path, rate_hz: int, options: Sequence[str]) -> None:
        self.out = out
        self.cmd = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate_hz)]
        self.cmd += ["--threads", "--nolineno", "--output", str(out), *options]
        self.proc: asyncio.subprocess.Process | None = None
        self.log = b""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        await asyncio.sleep(0.5)  # let it attach
        if self.proc.returncode is not None:
            out = await self.proc.stdout.read() if self.proc.stdout else b""
            raise BenchError(f"py-spy exited at once: {out.decode(errors='replace')}")

    async def stop(self) -> None:
        """SIGINT: py-spy writes its output and exits."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
            self.log = out or b""
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares by function, per thread, from py-spy's collapsed stacks."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        total += count
        by_thread[thread] += count
        self_samples[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"function": f, "samples": n, "pct": round(100 * n / total, 1)} for f, n in counter.most_common(top)]

    return {
        "samples": total,
        "by_thread": share(by_thread),
        "self": share(self_samples),
        "inclusive": share(inclusive),
    }


# -- the benchmark ------------------------------------------------------------------------------


def spawn_server(args: argparse.Namespace, data_dir: Path, database_url: str | None) -> ServerProcess:
    """foundation.spawn_server, plus the --server-env settings (none by default)."""
    port = free_port()
    log_path = data_dir.with_name(data_dir.name + f"-{port}.log")
    cmd = [args.python, "-m", "sup", "run", "--data-dir", str(data_dir), "--host", HOST, "--port", str(port)]
    env = {**server_env(database_url), **dict(args.server_env)}
    with open(log_path, "wb") as log:
        spawned_at = time.perf_counter()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir.parent
        )
    return ServerProcess(proc, port, data_dir, log_path, spawned_at, database_url)


@dataclass
class Run:
    args: argparse.Namespace
    server: ServerProcess
    workers: list[LoadGen]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra_labels: dict[int, str] = field(default_factory=dict)  # more processes of the benchmark (py-spy)
    accounts: list[dict[str, str]] = field(default_factory=list)

    @property
    def loadgen_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def opts(self) -> dict[str, Any]:
        return {"ack_every": self.args.ack_every, "compress": self.args.compress}

    def check_other_load(self, what: str, cpu: dict[str, Any]) -> None:
        if cpu["other_cpu_pct_of_host"] > OTHER_LOAD_WARN_PCT:
            self.warnings.append(
                f"{what}: {cpu['other_cpu_pct_of_host']}% of the host's CPU went to processes that are not this "
                "benchmark; its figures are lower than on a quiet host"
            )

    async def phase(
        self,
        name: str,
        commands: dict[int, dict[str, Any]],
        max_seconds: float,
        before_go: Callable[[], Awaitable[None]] | None = None,
        after_result: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        """Run one phase on the given workers: connect -> go -> results -> (hook) -> release -> closed.

        Returns (connected replies, results, cpu during go..results, hook result)."""
        chosen = [self.workers[i] for i in commands]
        for i, cmd in commands.items():
            self.workers[i].send({**cmd, "url": f"ws://{HOST}:{self.server.port}{WS_PATH}"})
        connected = await asyncio.gather(*(w.expect("connected", STAGE_TIMEOUT_S) for w in chosen))
        failures: Counter[str] = Counter()
        for c in connected:
            failures.update(c["failures"])
        if failures:
            for w in chosen:
                w.send({"op": "abort"})
            raise BenchError(f"{name}: clients could not connect: {dict(failures)}")
        if before_go is not None:
            await before_go()
        pg_database = urlsplit(self.server.database_url).path.lstrip("/") if self.server.database_url else None
        cpu = CpuWatch(self.server.pid, self.loadgen_pids, self.extra_labels, pg_database)
        go_at = time.time() + 0.05  # every worker starts at the same moment
        for w in chosen:
            w.send({"op": "go", "go_at": go_at})
        sampler = asyncio.create_task(cpu.sample_forever())
        try:
            results = await asyncio.gather(*(w.expect("result", max_seconds + DRAIN_S + 30) for w in chosen))
        finally:
            sampler.cancel()
        cpu_used = cpu.result()
        hooked = await after_result() if after_result is not None else {}
        for w in chosen:
            w.send({"op": "release"})
        await asyncio.gather(*(w.expect("closed", STAGE_TIMEOUT_S) for w in chosen))
        for r in results:
            stats = r["conn_stats"]
            if stats["gaps"] or stats["duplicates"]:
                self.problems.append(
                    f"{name}: event streams had {stats['gaps']} missing and {stats['duplicates']} duplicate cursors"
                )
            if stats["unexpected_closes"]:
                self.problems.append(f"{name}: server closed connections: {stats['unexpected_closes']} (close code: n)")
            bad_errors = {k: v for k, v in stats["error_frames"].items()}
            if bad_errors:
                self.problems.append(f"{name}: error frames / socket errors: {bad_errors}")
            if r.get("error"):
                self.problems.append(f"{name}: {r['error']}")
        return connected, results, cpu_used, hooked


def merge_stats(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"connections": 0, "events": 0, "gaps": 0, "duplicates": 0, "acks_sent": 0, "compressed": 0}
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for r in results:
        s = r["conn_stats"]
        for key in out:
            out[key] += s[key]
        errors.update(s["error_frames"])
        closes.update(s["unexpected_closes"])
    out["error_frames"] = dict(errors)
    out["unexpected_closes"] = dict(closes)
    return out


def connect_summary(connected: Sequence[dict[str, Any]]) -> dict[str, Any]:
    times = [t for c in connected for t in c["connect_s"]]
    return summarize_ms(times)


async def measure_idle(run: Run, accounts: Sequence[dict[str, str]], label: str) -> dict[str, Any]:
    """N idle authenticated clients; RSS after idle_seconds."""
    n = len(accounts)
    workers = len(run.workers)
    commands = {
        i: {"op": "idle", "accounts": list(accounts[i::workers]), "opts": run.opts}
        for i in range(workers)
        if accounts[i::workers]
    }
    before = memory_mib(run.server.pid)

    async def hold() -> dict[str, Any]:
        at_connect = memory_mib(run.server.pid)
        await asyncio.sleep(run.args.idle_seconds)
        return {"at_connect": at_connect, "after_idle": memory_mib(run.server.pid), "status": rss_kib(run.server.pid)}

    connected, results, cpu, held = await run.phase(label, commands, 10, after_result=hold)
    held["status"]["rss_mb"] = mb(held["status"]["VmRSS"])
    after_close = memory_mib(run.server.pid)
    return {
        "clients": n,
        "connect_ms": connect_summary(connected),
        "rss_before_mib": before["rss_mib"],
        "rss_connected_mib": held["at_connect"]["rss_mib"],
        "rss_idle_mib": held["after_idle"]["rss_mib"],
        "rss_idle_mb": held["status"]["rss_mb"],
        "rss_anon_file_shmem_kib": {k: held["status"].get(k) for k in ("RssAnon", "RssFile", "RssShmem")},
        "peak_rss_mib": held["after_idle"]["peak_rss_mib"],
        "threads": held["after_idle"]["threads"],
        "per_client_kib": round((held["after_idle"]["rss_mib"] - before["rss_mib"]) * 1024 / n, 1) if n else None,
        "rss_after_disconnect_mib": after_close["rss_mib"],
        "idle_seconds": run.args.idle_seconds,
        "streams": merge_stats(results),
        "cpu_while_idle": cpu,
    }


def rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def split_counts(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def measure_throughput(
    run: Run, pairs: Sequence[dict[str, Any]], total: int, tag: str, profiler: Profiler | None = None
) -> dict[str, Any]:
    args = run.args
    per_pair = split_counts(total, len(pairs))
    workers = len(run.workers)
    commands = {}
    for i in range(workers):
        mine = list(range(i, len(pairs), workers))
        if not mine:
            continue
        commands[i] = {
            "op": "throughput",
            "pairs": [pairs[j] for j in mine],
            "per_pair": [per_pair[j] for j in mine],
            "window": args.window,
            "body_bytes": args.body_bytes,
            "tag": tag,
            "max_seconds": args.max_seconds,
            "opts": run.opts,
        }

    async def start_profiler() -> None:
        if profiler is not None:
            await profiler.start()
            run.extra_labels = {profiler.pid: "py-spy"}

    async def stop_profiler() -> dict[str, Any]:
        if profiler is not None:
            await profiler.stop()
        return {}

    try:
        connected, results, cpu, _ = await run.phase(
            f"throughput {tag}", commands, args.max_seconds, before_go=start_profiler, after_result=stop_profiler
        )
    finally:
        run.extra_labels = {}
    go = min(r["go_wall"] for r in results)
    completions = sorted(t for r in results for t in r["completions_wall"])
    complete = len(completions)
    elapsed = (completions[-1] - go) if completions else 0.0
    requested = sum(r["requested"] for r in results)
    issued = sum(r["issued"] for r in results)
    sent = sum(r["sent_acks"] for r in results)
    received = sum(r["received"] for r in results)
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r["refused"])
    report = {
        "pairs": len(pairs),
        "chat_type": "direct (encrypted, per-device ciphertexts)" if pairs[0]["direct"] else "group (unencrypted)",
        "window_per_connection": args.window,
        "in_flight_max": args.window * len(pairs),
        "requested": requested,
        "issued": issued,
        "durable_acks": sent,
        "received": received,
        "complete": complete,
        "refused": dict(refused),
        "lost": issued - complete - sum(refused.values()),
        "duplicate_receipts": sum(r["duplicate_receipts"] for r in results),
        "duplicate_acks": sum(r["duplicate_sent_acks"] for r in results),
        "bad_content": sum(r["bad_content"] for r in results),
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": rate(complete, elapsed),
        "steady_msgs_per_s": steady_rate(completions),
        "send_to_receive": summarize_ms([x for r in results for x in r["send_to_receive_s"]]),
        "send_to_durable_ack": summarize_ms([x for r in results for x in r["send_to_durable_s"]]),
        "connect_ms": connect_summary(connected),
        "streams": merge_stats(results),
        "cpu": cpu,
    }
    report["server_cpu_ms_per_msg"] = round(cpu["server_cpu_s"] * 1000 / complete, 3) if complete else None
    name = f"throughput {tag}"
    if complete != issued:  # sent but not both durable and delivered within the drain time, or refused
        run.problems.append(
            f"{name}: {complete} of {issued} sent messages completed (durable {sent}, received {received}, "
            f"refused {dict(refused)}, lost {report['lost']})"
        )
    if issued < requested:
        run.warnings.append(
            f"{name}: only {issued} of {requested} messages were sent before --max-seconds "
            f"({args.max_seconds:.0f} s); the rate covers those"
        )
    for key in ("duplicate_receipts", "duplicate_acks", "bad_content"):
        if report[key]:
            run.problems.append(f"{name}: {report[key]} {key.replace('_', ' ')}")
    run.check_other_load(name, cpu)
    return report


async def measure_paced(
    run: Run, name: str, groups: Sequence[dict[str, Any]], rate_per_s: float, seconds: float, tag: str
) -> dict[str, Any]:
    """Latency / fan-out on worker 0 (sender and receivers in one process: one clock)."""
    args = run.args
    count = max(1, round(rate_per_s * seconds))
    cmd = {
        "op": "paced",
        "groups": list(groups),
        "count": count,
        "rate": rate_per_s,
        "tag": tag,
        "body_bytes": args.body_bytes,
        "max_seconds": seconds + 10,
        "opts": run.opts,
    }
    connected, results, cpu, _ = await run.phase(name, {0: cmd}, seconds + 10)
    r = results[0]
    lag = r["scheduler_lag_s"]
    report = {
        "senders": len(groups),
        "receivers_per_message": len(groups[0]["receivers"]),
        "rate_per_s": rate_per_s,
        "requested": count,
        "issued": r["issued"],
        "achieved_send_rate": r["achieved_send_rate"],
        "durable_acks": r["sent_acks"],
        "expected_receipts": r["expected_receipts"],
        "received": r["received"],
        "lost": r["expected_receipts"] - r["received"],
        "duplicate_receipts": r["duplicate_receipts"],
        "bad_content": r["bad_content"],
        "refused": r["refused"],
        "send_to_receive": summarize_ms(r["send_to_receive_s"]),
        "send_to_receive_per_second": r["per_second"],
        "send_to_last_receiver": summarize_ms(r["send_to_last_receiver_s"]),
        "send_to_durable_ack": summarize_ms(r["send_to_durable_s"]),
        "scheduler_lag": summarize_ms(lag),
        "connect_ms": connect_summary(connected),
        "streams": merge_stats(results),
        "cpu": cpu,
    }
    if r["issued"] != count or r["received"] != r["expected_receipts"] or r["sent_acks"] != r["issued"]:
        run.problems.append(
            f"{name}: issued {r['issued']} of {count}, durable {r['sent_acks']}, "
            f"received {r['received']} of {r['expected_receipts']} receipts, refused {r['refused']}"
        )
    if r["duplicate_receipts"] or r["bad_content"]:
        run.problems.append(f"{name}: {r['duplicate_receipts']} duplicate receipts, {r['bad_content']} bad bodies")
    seconds = report["send_to_receive_per_second"]
    if len(seconds) >= 3 and seconds[-1]["p50_ms"] > max(50.0, 5 * seconds[0]["p50_ms"]):
        run.warnings.append(
            f"{name}: the server fell behind the offered {rate_per_s:g} msgs/s: the median latency grew from "
            f"{seconds[0]['p50_ms']:.0f} ms in the first second to {seconds[-1]['p50_ms']:.0f} ms in the last "
            "(a queue built up; the percentiles depend on the duration)"
        )
    if lag and percentile(lag, 99) > 0.005:
        run.warnings.append(
            f"{name}: the load generator fell behind its schedule (p99 lag {percentile(lag, 99) * 1000:.1f} ms): "
            "latencies include load-generator delay"
        )
    run.check_other_load(name, cpu)
    return report


def targets_report(report: dict[str, Any]) -> dict[str, Any]:
    out = {}

    def add(key: str, measured: float | None, ok: bool | None, unit: str, target: str) -> None:
        out[key] = {"target": target, "measured": measured, "unit": unit, "met": ok}

    t = report.get("throughput")
    if t:
        add("throughput", t["msgs_per_s"], t["msgs_per_s"] >= TARGETS["throughput_msgs_per_s"], "msgs/s", ">= 5000")
    lat = report.get("latency", {}).get("send_to_receive", {})
    if lat.get("count"):
        add("latency_p99", lat["p99_ms"], lat["p99_ms"] <= TARGETS["latency_p99_ms"], "ms", "<= 20 at 500/s")
    fan = report.get("fanout", {}).get("send_to_receive", {})
    if fan.get("count"):
        add("fanout_p99", fan["p99_ms"], fan["p99_ms"] <= TARGETS["fanout_p99_ms"], "ms", "<= 20")
    for key, label in (
        ("idle", "after registering its users (argon2 hashing in this process)"),
        ("idle_restarted", "restarted on the same data (no hashing in this process)"),
    ):
        idle = report.get(key)
        if idle:
            ok = idle["rss_idle_mb"] <= TARGETS["idle_rss_mb"]
            add(f"{key}_rss", idle["rss_idle_mb"], ok, "MB", f"<= 70 MB with {idle['clients']} idle clients; {label}")
    return out


def server_package(args: argparse.Namespace) -> str | None:
    """Where the server's interpreter, in the server's environment, imports `sup` from (PYTHONPATH may
    point it at another checkout than this one; the git figures describe this one)."""
    with tempfile.TemporaryDirectory() as cwd:
        try:
            out = subprocess.run(
                [args.python, "-c", "import sup; print(sup.__file__)"],
                env={**server_env(None), **dict(args.server_env)},
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return str(Path(out).parent)


def working_tree() -> dict[str, Any]:
    """Uncommitted changes to the server's code at the time of the run: which files, and a digest of the diff."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "sup", "migrations"], cwd=BENCH_DIR.parent, capture_output=True, check=True
        ).stdout
        names = subprocess.run(
            ["git", "status", "--porcelain", "--", "sup", "migrations"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"changed": names.split("\n")[:-1], "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def config_info(args: argparse.Namespace, database: str) -> dict[str, Any]:
    from sup.config import Config

    defaults = Config()
    return {
        "database": database,
        "env": {
            "SUP_RATELIMIT_ENABLED": "false",
            "SUP_DATABASE_URL": "<fresh database>" if args.database_url else "(unset: SQLite at <data_dir>/sup.db)",
            **dict(args.server_env),
        },
        "sqlite_synchronous": defaults.database.sqlite_synchronous,
        "pg_pool": [defaults.database.pool_min, defaults.database.pool_max],
        "access_log": defaults.logging.access_log,
        "ws_queue_limit": defaults.websocket.queue_limit,
        "ws_catch_up_seconds": defaults.websocket.catch_up_seconds,
        "workers": args.workers,
        "pairs": args.pairs,
        "messages": args.messages,
        "window": args.window,
        "ack_every": args.ack_every,
        "body_bytes": args.body_bytes,
        "direct_messages": args.direct_messages,
        "latency_rate": args.latency_rate,
        "latency_seconds": args.latency_seconds,
        "latency_pairs": args.latency_pairs,
        "fanout_members": args.fanout_members,
        "fanout_rate": args.fanout_rate,
        "fanout_seconds": args.fanout_seconds,
        "idle_clients": args.idle_clients,
        "idle_seconds": args.idle_seconds,
        "compress": args.compress,
        "profile": str(args.profile) if args.profile else None,
        "phases": sorted(args.phases),
        "server_env": dict(args.server_env),
    }


async def measure(run: Run, session: aiohttp.ClientSession, pg: PostgresDatabases | None) -> dict[str, Any]:
    args = run.args
    server = run.server
    report: dict[str, Any] = {"server_process": describe_process(server.pid)}
    report["memory_at_start"] = memory_mib(server.pid)

    # setup: users and chats
    P, L, M = args.pairs, args.latency_pairs, args.fanout_members
    direct_pairs = P if args.direct_messages else 0
    needed = 2 * P + 2 * direct_pairs + 2 * L + M + 1
    users = max(needed, args.idle_clients)
    base = server.base_url
    started = time.perf_counter()
    accounts = await register(session, base, users)
    report["setup"] = {"users": users, "register_s": round(time.perf_counter() - started, 2)}
    at = 0

    def take(n: int) -> list[dict[str, str]]:
        nonlocal at
        taken = accounts[at : at + n]
        at += n
        return taken

    started = time.perf_counter()
    tp_accounts, dp_accounts, lat_accounts, fan_accounts = take(2 * P), take(2 * direct_pairs), take(2 * L), take(M + 1)

    async def pair_chats(accs: list[dict[str, str]], direct: bool) -> list[dict[str, Any]]:
        owners, others = accs[0::2], accs[1::2]
        chat_ids = await bounded_gather(
            HTTP_CONCURRENCY, [create_chat(session, base, s, [r], direct) for s, r in zip(owners, others, strict=True)]
        )
        return [
            {"index": i, "sender": s, "receiver": r, "chat_id": c, "direct": direct}
            for i, (s, r, c) in enumerate(zip(owners, others, chat_ids, strict=True))
        ]

    tp_pairs = await pair_chats(tp_accounts, False)
    dp_pairs = await pair_chats(dp_accounts, True) if direct_pairs else []
    lat_pairs = await pair_chats(lat_accounts, False)
    fan_chat = await create_chat(session, base, fan_accounts[0], fan_accounts[1:], False)
    report["setup"]["chats"] = len(tp_pairs) + len(dp_pairs) + len(lat_pairs) + 1
    report["setup"]["chats_s"] = round(time.perf_counter() - started, 2)
    report["memory_after_setup"] = memory_mib(server.pid)

    run.accounts = accounts
    phases = args.phases

    # 4. idle clients, on this server: it has just hashed every registration's password
    if "idle" in phases:
        report["idle"] = await measure_idle(run, accounts[: args.idle_clients], "idle clients")

    # 1. throughput
    if "throughput" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        report["throughput"] = await measure_throughput(run, tp_pairs, args.messages, "tp")
    if dp_pairs:
        await asyncio.sleep(ACK_SETTLE_S)
        report["throughput_direct"] = await measure_throughput(run, dp_pairs, args.direct_messages, "dp")
    if args.profile:
        profiler = Profiler(args.py_spy, server.pid, args.profile, args.profile_rate, args.profile_option)
        await asyncio.sleep(ACK_SETTLE_S)  # the same clients again: let their last acks be stored first
        try:
            profiled = await measure_throughput(run, tp_pairs, args.messages, "prof", profiler)
        finally:
            profiler.kill()
        profiled["profile_raw"] = str(args.profile)
        profiled["py_spy_output"] = profiler.log.decode(errors="replace")[-2000:]
        if args.profile.exists():
            profiled["profile"] = summarize_profile(args.profile)
        else:
            run.warnings.append(f"py-spy wrote no profile: {profiled['py_spy_output']}")
        report["throughput_profiled"] = profiled

    # 2. latency at a steady rate, 1:1
    if "latency" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        lat_groups = [{"sender": p["sender"], "chat_id": p["chat_id"], "receivers": [p["receiver"]]} for p in lat_pairs]
        report["latency"] = await measure_paced(
            run, "latency", lat_groups, args.latency_rate, args.latency_seconds, "lat"
        )

    # 3. group fan-out
    if "fanout" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        fan_groups = [{"sender": fan_accounts[0], "chat_id": fan_chat, "receivers": fan_accounts[1:]}]
        report["fanout"] = await measure_paced(run, "fan-out", fan_groups, args.fanout_rate, args.fanout_seconds, "fan")

    report["memory_after_load"] = memory_mib(server.pid)
    if args.idle_again and "idle" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        report["idle_after_load"] = await measure_idle(run, accounts[: args.idle_clients], "idle clients after load")
    report["memory_end"] = memory_mib(server.pid)
    return report


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    database = "postgres" if args.database_url else "sqlite"
    pg = PostgresDatabases(args.database_url) if args.database_url else None
    report: dict[str, Any] = {
        "benchmark": "messaging",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database,
        "machine": machine_info(),
        "software": software_info(args.python),
        "config": config_info(args, database),
    }
    report["software"]["msgspec"] = msgspec.__version__
    report["software"]["working_tree"] = working_tree()
    report["software"]["server_sup_package"] = server_package(args)
    if pg:
        report["software"]["postgres"] = await pg.server_version()
    bench_started = time.perf_counter()
    problems: list[str] = []
    warnings: list[str] = []
    servers: list[ServerProcess] = []
    workers: list[LoadGen] = []
    with tempfile.TemporaryDirectory(prefix="sup-bench-msg-") as tmp:
        try:
            async with asyncio.timeout(TOTAL_BUDGET_S):
                database_url = await pg.create() if pg else None
                data_dir = Path(tmp) / "data"
                server = spawn_server(args, data_dir, database_url)
                servers.append(server)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                    await wait_healthy(server, session)
                    report["start_to_healthy_ms"] = round(server.healthy_ms or 0, 1)
                    workers = [LoadGen(i) for i in range(args.workers)]
                    await asyncio.gather(*(w.start() for w in workers))
                    run = Run(args, server, workers)
                    try:
                        report.update(await measure(run, session, pg))
                    finally:
                        problems += run.problems
                        warnings += run.warnings
                    report["shutdown"] = await stop_server(server)
                    if not report["shutdown"]["ok"]:
                        problems.append(f"server did not exit 0 within 10 s of SIGTERM: {report['shutdown']}")

                    # 4c. idle clients on a restarted server (same data): no password was hashed in this process
                    if "idle" in args.phases and args.idle_restarted:
                        server = spawn_server(args, data_dir, database_url)
                        servers.append(server)
                        await wait_healthy(server, session)
                        again = Run(args, server, workers)
                        try:
                            restarted = await measure_idle(
                                again, run.accounts[: args.idle_clients], "idle clients, restarted server"
                            )
                        finally:
                            problems += again.problems
                            warnings += again.warnings
                        report["idle_restarted"] = restarted
                        stop = await stop_server(server)
                        if not stop["ok"]:
                            problems.append(f"restarted server did not exit 0 within 10 s of SIGTERM: {stop}")
        finally:
            for w in workers:
                await asyncio.to_thread(w.stop)
            bad: list[str] = []
            for server in servers:
                kill_server(server)
                bad += [line for line in read_log(server).splitlines() if any(w in line for w in LOG_PROBLEMS)]
            report["server_log_problems"] = bad[:40]
            if bad:
                problems.append(f"the server logged {len(bad)} ERROR/WARNING/Traceback lines (see server_log_problems)")
            if pg:
                await pg.drop_all()
    report["targets"] = targets_report(report)
    report["problems"] = problems
    report["warnings"] = warnings
    report["ok"] = not problems
    report["bench_runtime_s"] = round(time.perf_counter() - bench_started, 1)
    return report


# -- output -------------------------------------------------------------------------------------


def _lat(f: dict[str, Any]) -> str:
    if not f.get("count"):
        return "n/a"
    return f"p50 {f['p50_ms']:.2f} / p99 {f['p99_ms']:.2f} / max {f['max_ms']:.2f} ms (n={f['count']})"


def _cpu(c: dict[str, Any], cpus: int) -> str:
    return (
        f"CPU (% of one core): server {c['server_pct_of_one_cpu']} (event loop {c['server_event_loop_thread_pct']}, "
        f"other threads {c['server_other_threads_pct']}), load generators {c['load_generators_pct_of_one_cpu']} "
        f"{c['load_generator_cpu_s_each']} s, postgres {c['postgres_pct_of_one_cpu']}; host {c['host_cpu_busy_pct']}% "
        f"of {cpus} CPUs busy, other load {c['other_cpu_pct_of_host']}%"
    )


def _streams(s: dict[str, Any]) -> str:
    return (
        f"{s['connections']} connections, {s['events']} events, gaps {s['gaps']}, duplicates {s['duplicates']}, "
        f"acks {s['acks_sent']}, errors {s['error_frames'] or 0}, server closes {s['unexpected_closes'] or 0}, "
        f"permessage-deflate on {s['compressed']}"
    )


def _throughput_lines(title: str, t: dict[str, Any], cpus: int) -> list[str]:
    return [
        "",
        f"{title}: {t['pairs']} pairs, {t['chat_type']}, window {t['window_per_connection']}/connection "
        f"({t['in_flight_max']} in flight max)",
        f"   {t['complete']} of {t['requested']} messages durable+delivered in {t['elapsed_s']} s = "
        f"{t['msgs_per_s']} msgs/s (steady 10-90%: {t['steady_msgs_per_s']} msgs/s)",
        f"   durable acks {t['durable_acks']}, receipts {t['received']}, lost {t['lost']}, "
        f"refused {t['refused'] or 0}, duplicates {t['duplicate_receipts']}",
        f"   send -> message.sent {_lat(t['send_to_durable_ack'])}",
        f"   send -> message.new  {_lat(t['send_to_receive'])}",
        f"   server CPU {t['server_cpu_ms_per_msg']} ms/msg; {_cpu(t['cpu'], cpus)}",
        f"   streams: {_streams(t['streams'])}",
    ]


def _profile_lines(p: dict[str, Any]) -> list[str]:
    prof = p.get("profile")
    lines = ["", f"1c. throughput under py-spy: {p['msgs_per_s']} msgs/s (profile: {p['profile_raw']})"]
    if not prof:
        return [*lines, "   (no profile)"]
    lines.append(
        f"   {prof['samples']} samples; by thread: "
        + ", ".join(f"{x['function']} {x['pct']}%" for x in prof["by_thread"])
    )
    lines.append("   self time (top 15):")
    lines += [f"     {x['pct']:5.1f}%  {x['function']}" for x in prof["self"][:15]]
    lines.append("   inclusive time (top 25):")
    lines += [f"     {x['pct']:5.1f}%  {x['function']}" for x in prof["inclusive"][:25]]
    return lines


def format_summary(report: dict[str, Any]) -> str:
    m, sw = report["machine"], report["software"]
    cpus = m["cpu_count"]
    lines = [
        f"SUP messaging benchmark - database: {report['database']}"
        + (f" (PostgreSQL {sw['postgres']})" if sw.get("postgres") else ""),
        f"machine: {cpus} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, {m['platform']}",
        f"sup {sw['sup']} @ {(sw['git_commit'] or '?')[:12]}{' (dirty)' if sw.get('git_dirty') else ''}, "
        f"aiohttp {sw['aiohttp']}, uvloop {sw['uvloop']}, load generators: {report['config']['workers']} processes",
    ]
    package = sw.get("server_sup_package")
    if package and not Path(package).is_relative_to(BENCH_DIR.parent):
        lines.append(f"the server runs the sup package at {package}, NOT this checkout (git figures are this one's)")
    tree = sw.get("working_tree") or {}
    if tree.get("changed"):
        lines.append(f"uncommitted server changes (diff sha256 {str(tree['diff_sha256'])[:12]}): {tree['changed']}")
    if report["config"]["server_env"]:
        lines.append(f"NOT the defaults: server environment {report['config']['server_env']}")
    if "setup" in report:
        s = report["setup"]
        lines.append(
            f"setup: {s['users']} users registered in {s['register_s']} s, {s['chats']} chats in {s['chats_s']} s; "
            f"server RSS {report['memory_after_setup']['rss_mib']} MiB"
        )
    if "throughput" in report:
        lines += _throughput_lines("1. throughput, 1:1", report["throughput"], cpus)
    if "throughput_direct" in report:
        lines += _throughput_lines("1b. throughput, 1:1 direct chats", report["throughput_direct"], cpus)
    if "throughput_profiled" in report:
        lines += _profile_lines(report["throughput_profiled"])
    for key, title in (("latency", "2. latency, 1:1"), ("fanout", "3. group fan-out")):
        if key not in report:
            continue
        p = report[key]
        lines += [
            "",
            f"{title}: {p['senders']} sender(s), {p['receivers_per_message']} receiver(s) per message, "
            f"{p['rate_per_s']} msgs/s paced (achieved {p['achieved_send_rate']}), {p['issued']} messages",
            f"   send -> message.new  {_lat(p['send_to_receive'])}",
            "   per second, max ms: " + " ".join(f"{x['max_ms']:.0f}" for x in p["send_to_receive_per_second"]),
        ]
        if p["receivers_per_message"] > 1:
            lines.append(
                f"   send -> last of {p['receivers_per_message']} receivers {_lat(p['send_to_last_receiver'])}"
            )
        lines += [
            f"   send -> message.sent {_lat(p['send_to_durable_ack'])}",
            f"   receipts {p['received']} of {p['expected_receipts']}, lost {p['lost']}, duplicates "
            f"{p['duplicate_receipts']}; load-generator schedule lag {_lat(p['scheduler_lag'])}",
            f"   {_cpu(p['cpu'], cpus)}",
        ]
    for key, title in (
        ("idle", "4. idle clients, on the server that registered the users"),
        ("idle_after_load", "4b. idle clients, same server after the load"),
        ("idle_restarted", "4c. idle clients, server restarted on the same data (tokens still valid)"),
    ):
        if key not in report:
            continue
        i = report[key]
        lines += [
            "",
            f"{title}: {i['clients']} authenticated WebSocket clients, {i['idle_seconds']} s idle",
            f"   server RSS {i['rss_before_mib']} MiB before -> {i['rss_connected_mib']} connected -> "
            f"{i['rss_idle_mib']} MiB idle ({i['rss_idle_mb']} MB; ~{i['per_client_kib']} KiB/client), "
            f"peak {i['peak_rss_mib']} MiB, {i['rss_after_disconnect_mib']} MiB after disconnect",
            f"   connect+authenticate {_lat(i['connect_ms'])}; permessage-deflate on {i['streams']['compressed']}",
        ]
    if "memory_end" in report:
        lines += ["", f"main server's memory at its end: {report['memory_end']}"]
    if report.get("targets"):
        lines += ["", "targets (issue, one process):"]
        for name, t in report["targets"].items():
            lines.append(
                f"   {name}: {t['measured']} {t['unit']} (target {t['target']}) -> {'met' if t['met'] else 'NOT met'}"
            )
    lines += [f"WARNING: {w}" for w in report.get("warnings", [])]
    lines += [
        "",
        f"benchmark runtime {report.get('bench_runtime_s')} s; "
        + ("OK" if report.get("ok") else "PROBLEMS:\n  " + "\n  ".join(report.get("problems", []))),
    ]
    return "\n".join(lines)


def env_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("SUP_"):
        raise argparse.ArgumentTypeError("expected SUP_NAME=VALUE")
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--json-out", type=Path, help="JSON report (default bench/reports/messaging-<database>.json)")
    p.add_argument(
        "--database-url",
        help="postgresql://host:port/db to benchmark Postgres: connected to only to CREATE and DROP a fresh "
        "database for the run (default: SQLite in the data dir)",
    )
    p.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    p.add_argument("--pairs", type=int, default=50, help="throughput: sender/receiver pairs (default 50)")
    p.add_argument("--messages", type=int, default=20000, help="throughput: messages in all (default 20000)")
    p.add_argument("--window", type=int, default=8, help="throughput: sends awaiting message.sent per connection (8)")
    p.add_argument(
        "--direct-messages",
        type=int,
        default=0,
        help="also run the throughput phase on direct (encrypted) chats with this many messages (default 0: off)",
    )
    p.add_argument("--max-seconds", type=float, default=45.0, help="throughput: sending stops after this (45)")
    p.add_argument("--ack-every", type=int, default=16, help="clients acknowledge every N events (default 16)")
    p.add_argument("--body-bytes", type=int, default=64, help="padding in each message body (default 64)")
    p.add_argument("--latency-rate", type=float, default=500.0, help="latency: messages/s, paced (default 500)")
    p.add_argument("--latency-seconds", type=float, default=10.0, help="latency: duration (default 10)")
    p.add_argument("--latency-pairs", type=int, default=10, help="latency: pairs sharing the rate (default 10)")
    p.add_argument("--fanout-members", type=int, default=50, help="fan-out: receiving members (default 50)")
    p.add_argument("--fanout-rate", type=float, default=20.0, help="fan-out: messages/s (default 20)")
    p.add_argument("--fanout-seconds", type=float, default=10.0, help="fan-out: duration (default 10)")
    p.add_argument("--idle-clients", type=int, default=200, help="memory: idle WebSocket clients (default 200)")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="memory: idle time before RSS is read (5)")
    p.add_argument(
        "--no-idle-again", dest="idle_again", action="store_false", help="skip the idle-clients phase after the load"
    )
    p.add_argument(
        "--no-idle-restarted",
        dest="idle_restarted",
        action="store_false",
        help="skip the idle-clients phase on a server restarted on the same data",
    )
    p.add_argument(
        "--phases",
        type=lambda v: set(v.split(",")),
        default={"idle", "throughput", "latency", "fanout"},
        help="comma-separated subset of idle,throughput,latency,fanout (default: all)",
    )
    p.add_argument("--compress", action="store_true", help="offer permessage-deflate, as browsers do (default off)")
    p.add_argument(
        "--profile",
        type=Path,
        help="also run the throughput phase once more under `py-spy record` and write its raw (collapsed) "
        "stacks here; the summary lists the top functions",
    )
    p.add_argument("--profile-rate", type=int, default=100, help="py-spy samples per second (default 100)")
    p.add_argument(
        "--profile-option",
        action="append",
        default=[],
        help="extra py-spy record option, repeatable: e.g. --profile-option=--gil (only samples holding the GIL: "
        "where the Python CPU goes), --profile-option=--native (C frames too)",
    )
    p.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        help="py-spy executable for --profile (default: on PATH, else next to this interpreter)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=env_setting,
        metavar="SUP_NAME=VALUE",
        help="a server setting for experiments, repeatable (e.g. SUP_DATABASE_SQLITE_SYNCHRONOUS=normal); "
        "the figures are then not those of the defaults",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `-m sup run` (default: this)")
    args = p.parse_args(argv)
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        p.error("--database-url must be a postgresql:// URL (SQLite is the default)")
    for name in ("workers", "pairs", "messages", "window", "ack_every", "latency_pairs", "fanout_members"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("latency_rate", "latency_seconds", "fanout_rate", "fanout_seconds", "max_seconds"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if not args.phases <= {"idle", "throughput", "latency", "fanout"}:
        p.error("--phases takes idle, throughput, latency, fanout")
    if args.window > 64:
        p.error("--window must be at most 64 (the server's in-flight limit per connection)")
    if args.messages > 200_000 or args.direct_messages > 200_000:
        p.error("at most 200000 messages per phase")
    if args.profile and not Path(args.py_spy).exists():
        p.error(f"py-spy not found at {args.py_spy}: pip install py-spy, or pass --py-spy PATH")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database = "postgres" if args.database_url else "sqlite"
    json_out: Path = args.json_out or BENCH_DIR / "reports" / f"messaging-{database}.json"
    return run_and_report("messaging", run_benchmark(args), format_summary, json_out, TOTAL_BUDGET_S)


if __name__ == "__main__":
    sys.exit(main())
