"""The load generators of the messaging benchmark: separate processes that drive WebSocket clients.

Each process (loadgen_process, started by LoadGen) runs its own event loop (uvloop when installed),
so the load never shares a loop or a GIL with the orchestrator. Over a pipe it takes one command at a
time: connect the given accounts (wsclient.Conn), report `connected`, wait for `go` (or `abort`),
run the phase (idle, throughput = PairRun, paced = Paced for latency and fan-out), report the `result`
with the connections still open, wait for `release`, close them and report `closed`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing
import os
import signal
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
from foundation import BenchError, percentile
from wsclient import Conn, WireFrame, merge_conn_stats, open_all

DRAIN_S = 10.0  # after the last send: how long outstanding answers/receipts may take before they count as lost


# -- statistics ---------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


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


# -- the control pipe ----------------------------------------------------------------------------


class Pipe:
    """The worker's end of the control pipe (blocking reads run in a thread)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, value: dict[str, Any]) -> None:
        self.conn.send(value)

    async def recv(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.conn.recv)


# -- the phases ---------------------------------------------------------------------------------


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


# -- the process, and the orchestrator's side of it -----------------------------------------------


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
