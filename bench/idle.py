"""Idle connections: server memory per idle authenticated WebSocket, for as many as the machine allows.

One `python -m sup run` (SQLite, or a fresh Postgres database with --database-url); --accounts users
registered over HTTP; then --connections WebSocket connections, spread over the accounts (a device may
hold several connections: each is authenticated and resumes its stream like any other) and over
--workers load-generator processes, all kept open and idle for --idle-seconds (heartbeats run: the
server pings every `websocket.heartbeat_seconds`, set to --heartbeat here so that they do during the
measurement). Figures: RSS before and with the connections, per connection (KiB), connect times, and,
while they are all still open, --deliveries messages sent one at a time (POST /api/v1/messages) to one
more idle socket, of this process: send -> received p50/p99, with those connections held.

The open-files limit of this process is raised to its hard limit first; the server and the load
generators inherit it. A server needs one descriptor per connection plus ~50: with a hard limit of
20,000 (this machine's), about 19,900 connections fit. Under systemd, `LimitNOFILE=` in
packaging/sup.service sets it (65,536 there).

Usage (from the project root):

    .venv/bin/python bench/idle.py [--connections 19000] [--database-url postgresql://...] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
import tracemalloc
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import phases
from foundation import memory_mib, summarize_ms
from harness import (
    bench_parser,
    bench_run,
    config_of,
    create_chat,
    parse_checked,
    problem_lines,
    raise_fd_limit,
    register,
    run_main,
)
from phases import Run, add_client_options, idle_commands, measure_idle

TOTAL_BUDGET_S = 1200.0
MEMTRACE_DIR = Path(__file__).resolve().parent / "memtrace"


async def delivery_pair(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A sender and a receiver (not among the idle accounts) in a group of two."""
    a, b = await register(session, base, 2, prefix="idle_probe")
    chat_id = await create_chat(session, base, a, [b], direct=False)
    return {"sender": a["token"], "receiver": b["token"], "chat_id": chat_id}


async def deliveries(session: aiohttp.ClientSession, base: str, pair: dict[str, Any], count: int) -> dict[str, Any]:
    """`count` messages, one at a time, to one more authenticated socket: send -> received, in ms."""
    latencies: list[float] = []
    lost = 0
    async with session.ws_connect(f"{base}/api/v1/ws") as ws:
        await ws.send_str(msgspec.json.encode({"type": "authenticate", "token": pair["receiver"]}).decode())
        while msgspec.json.decode((await ws.receive(timeout=30)).data)["type"] != "ready":
            pass
        await asyncio.sleep(1.0)  # it is idle among the others before the first message
        headers = {"Authorization": f"Bearer {pair['sender']}"}
        for i in range(count):
            body = f"probe {i} {time.time_ns()}"
            started = time.perf_counter()
            async with session.post(
                f"{base}/api/v1/messages",
                json={"chat_id": pair["chat_id"], "client_id": f"c{i}-{body[-8:]}", "body": body},
                headers=headers,
            ) as resp:
                await resp.read()
            try:
                async with asyncio.timeout(10):
                    while True:
                        frame = msgspec.json.decode((await ws.receive()).data)
                        if frame.get("type") == "message.new" and frame["message"].get("body") == body:
                            latencies.append(time.perf_counter() - started)
                            break
            except TimeoutError:
                lost += 1
            await asyncio.sleep(0.02)
    return {"messages": count, "lost": lost, "send_to_received": summarize_ms(latencies)}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


async def _snapshot(pid: int, path: Path) -> tracemalloc.Snapshot:
    """Ask the server (started with bench/memtrace on its path) for a tracemalloc snapshot; wait for the file."""
    os.kill(pid, signal.SIGUSR1)
    size = -1
    for _ in range(600):
        await asyncio.sleep(0.5)
        now = _size(path)  # the file is complete once it stops growing
        if now >= 0 and now == size:
            return tracemalloc.Snapshot.load(str(path))
        size = now
    raise RuntimeError(f"the server wrote no snapshot to {path}")


async def traced_step(run: Run, accounts: Sequence[dict[str, str]], prefix: Path, top: int = 25) -> dict[str, Any]:
    """Where the Python memory of N idle connections goes: tracemalloc before and with them, by source line."""
    n = len(accounts)
    commands = idle_commands(run, accounts)
    before = await _snapshot(run.server.pid, Path(f"{prefix}.1"))
    rss_before = memory_mib(run.server.pid)["rss_mib"]
    held: dict[str, Any] = {}

    async def hold() -> dict[str, Any]:
        await asyncio.sleep(run.args.idle_seconds)
        held["rss"] = memory_mib(run.server.pid)["rss_mib"]
        held["snapshot"] = await _snapshot(run.server.pid, Path(f"{prefix}.2"))
        return {}

    await run.phase(f"{n} idle connections, traced", commands, 10, after_result=hold)
    after: tracemalloc.Snapshot = held["snapshot"]
    by_line = after.compare_to(before, "lineno")
    by_file = after.compare_to(before, "filename")
    traced = sum(d.size_diff for d in by_file)
    rss_kib = (held["rss"] - rss_before) * 1024 / n
    return {
        "connections": n,
        "rss_per_connection_kib": round(rss_kib, 1),
        "python_traced_per_connection_kib": round(traced / 1024 / n, 1),
        "untraced_per_connection_kib": round(rss_kib - traced / 1024 / n, 1),
        "by_file": [
            {"file": str(d.traceback[0].filename), "bytes_per_connection": round(d.size_diff / n)}
            for d in by_file[:top]
            if d.size_diff > 0
        ],
        "by_line": [
            {
                "where": f"{d.traceback[0].filename}:{d.traceback[0].lineno}",
                "bytes_per_connection": round(d.size_diff / n),
                "blocks_per_connection": round(d.count_diff / n, 2),
            }
            for d in by_line[:top]
            if d.size_diff > 0
        ],
    }


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    soft, hard = raise_fd_limit()
    if args.connections + 100 > soft:
        raise SystemExit(
            f"--connections {args.connections} needs about {args.connections + 100} open files; limit {soft}"
        )
    phases.STAGE_TIMEOUT_S = max(phases.STAGE_TIMEOUT_S, args.connections / 50)  # connecting them all takes a while
    async with bench_run("idle", args, config_of(args), TOTAL_BUDGET_S, session_timeout_s=120) as bench:
        report = bench.report
        report["fd_limit"] = {"soft": soft, "hard": hard}
        snapshots = bench.tmp / "snapshot"  # the traced server's, removed with the run's temporary directory
        env = [("SUP_WEBSOCKET_HEARTBEAT_SECONDS", str(args.heartbeat))]
        if args.tracemalloc:
            path = os.pathsep.join(p for p in (str(MEMTRACE_DIR), os.environ.get("PYTHONPATH", "")) if p)
            env += [("PYTHONPATH", path), ("BENCH_TRACEMALLOC", str(snapshots))]
        server = await bench.server(env)
        accounts = await register(bench.session, server.base_url, args.accounts)
        pair = await delivery_pair(bench.session, server.base_url)
        run = Run(args, server, await bench.load_generators(args.workers))
        report["memory_after_setup"] = memory_mib(server.pid)
        if args.tracemalloc:
            conns = [accounts[i % len(accounts)] for i in range(args.tracemalloc)]
            await asyncio.sleep(1.5)
            report["traced"] = traced = await traced_step(run, conns, snapshots)
            print(f"  traced, {args.tracemalloc} connections: {traced}", flush=True)
        for n in args.steps:
            conns = [accounts[i % len(accounts)] for i in range(n)]
            await asyncio.sleep(1.5)
            probe = partial(deliveries, bench.session, server.base_url, pair, args.deliveries)
            result = await measure_idle(run, conns, f"{n} idle connections", probe)
            report.setdefault("steps", []).append(result)
            delivered = result["while_idle"]
            print(
                f"  {n} idle connections: RSS {result['rss_before_mib']} -> {result['rss_idle_mib']} MiB,"
                f" {result['per_client_kib']} KiB each; a message to one more idle socket, send ->"
                f" received p50 {delivered['send_to_received'].get('p50_ms')} / p99"
                f" {delivered['send_to_received'].get('p99_ms')} ms, {delivered['lost']} lost",
                flush=True,
            )
            if delivered["lost"]:
                bench.problems.append(f"{n} idle connections: {delivered['lost']} probe messages not received")
        bench.take(run)
        await bench.stop(server)
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"SUP idle WebSocket connections - database: {report.get('database')}, fd limit {report.get('fd_limit')}"]
    for s in report.get("steps", []):
        lines.append(
            f"  {s['clients']} connections: RSS {s['rss_before_mib']} -> {s['rss_idle_mib']} MiB"
            f" ({s['per_client_kib']} KiB per connection), peak {s['peak_rss_mib']} MiB, connect p50"
            f" {s['connect_ms'].get('p50_ms')} / p99 {s['connect_ms'].get('p99_ms')} ms,"
            f" RSS after they closed {s['rss_after_disconnect_mib']} MiB,"
            f" server CPU while idle {s['cpu_while_idle']['server_pct_of_one_cpu']}% of a core;"
            f" send -> received on one more idle socket p50 {s['while_idle']['send_to_received'].get('p50_ms')} /"
            f" p99 {s['while_idle']['send_to_received'].get('p99_ms')} ms"
        )
    return "\n".join(lines + problem_lines(report))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--connections", type=int, default=19000, help="the most connections (default 19000)")
    p.add_argument("--accounts", type=int, default=100, help="users the connections are spread over (100)")
    p.add_argument("--workers", type=int, default=4, help="load-generator processes (default 4)")
    p.add_argument("--idle-seconds", type=float, default=20.0, help="idle time before RSS is read (20)")
    p.add_argument("--heartbeat", type=float, default=10.0, help="the server's ping interval, seconds (10)")
    p.add_argument(
        "--tracemalloc",
        type=int,
        default=0,
        metavar="N",
        help="first, N connections on a server that traces its Python allocations (slower): where each one's"
        " memory goes, by source line (default 0: off; then the RSS steps are of a traced server too)",
    )
    p.add_argument("--deliveries", type=int, default=200, help="messages sent to one more idle socket (200)")
    add_client_options(p)
    args = parse_checked(p, argv)
    args.steps = sorted({min(1000, args.connections), args.connections})
    return args


if __name__ == "__main__":
    sys.exit(run_main("idle", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
