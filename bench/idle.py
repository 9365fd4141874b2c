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
import resource
import signal
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import phases
from foundation import (
    BENCH_DIR,
    PASSWORD,
    PostgresDatabases,
    add_database_url,
    check_database_url,
    kill_server,
    log_problems,
    memory_mib,
    post,
    report_head,
    report_tail,
    run_and_report,
    software_info,
    spawn_server,
    stop_server,
    summarize_ms,
    wait_healthy,
)
from loadgen import LoadGen
from messaging import register
from phases import Run, measure_idle

TOTAL_BUDGET_S = 1200.0
MEMTRACE_DIR = Path(__file__).resolve().parent / "memtrace"


async def delivery_pair(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """A sender and a receiver (not among the idle accounts) in a group of two."""
    a, b = [
        await post(session, f"{base}/api/v1/auth/register", {"username": name, "password": PASSWORD})
        for name in ("idle_probe_sender", "idle_probe_receiver")
    ]
    chat = await post(
        session,
        f"{base}/api/v1/chats",
        {"type": "group", "member_ids": [b["user"]["id"]], "title": "probe", "encrypted": False},
        a["access_token"],
    )
    return {"sender": a["access_token"], "receiver": b["access_token"], "chat_id": chat["id"]}


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


def raise_fd_limit() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


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
    workers = len(run.workers)
    commands = {
        i: {"op": "idle", "accounts": list(accounts[i::workers]), "opts": run.opts}
        for i in range(workers)
        if accounts[i::workers]
    }
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
    database = "postgres" if args.database_url else "sqlite"
    pg = PostgresDatabases(args.database_url) if args.database_url else None
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = report_head("idle", database, software_info(args.python), config)
    soft, hard = raise_fd_limit()
    report["fd_limit"] = {"soft": soft, "hard": hard}
    if args.connections + 100 > soft:
        raise SystemExit(
            f"--connections {args.connections} needs about {args.connections + 100} open files; limit {soft}"
        )
    phases.STAGE_TIMEOUT_S = max(phases.STAGE_TIMEOUT_S, args.connections / 50)  # connecting them all takes a while
    started = time.perf_counter()
    problems: list[str] = []
    warnings: list[str] = []
    server = None
    workers: list[LoadGen] = []
    env = [("SUP_WEBSOCKET_HEARTBEAT_SECONDS", str(args.heartbeat))]
    if args.tracemalloc:
        path = os.pathsep.join(p for p in (str(MEMTRACE_DIR), os.environ.get("PYTHONPATH", "")) if p)
        env += [("PYTHONPATH", path), ("BENCH_TRACEMALLOC", str(Path(tmp_root()) / "snapshot"))]
    with tempfile.TemporaryDirectory(prefix="sup-bench-idle-") as tmp:
        _TMP[0] = tmp
        try:
            async with asyncio.timeout(TOTAL_BUDGET_S):
                database_url = await pg.create() if pg else None
                server = spawn_server(args.python, Path(tmp) / "data", database_url, env, log_per_port=True)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
                    await wait_healthy(server, session)
                    accounts = await register(session, server.base_url, args.accounts)
                    pair = await delivery_pair(session, server.base_url)
                    workers = [LoadGen(i) for i in range(args.workers)]
                    await asyncio.gather(*(w.start() for w in workers))
                    run = Run(args, server, workers)
                    report["memory_after_setup"] = memory_mib(server.pid)
                    if args.tracemalloc:
                        conns = [accounts[i % len(accounts)] for i in range(args.tracemalloc)]
                        await asyncio.sleep(1.5)
                        report["traced"] = traced = await traced_step(run, conns, Path(tmp_root()) / "snapshot")
                        print(f"  traced, {args.tracemalloc} connections: {traced}", flush=True)
                    for n in args.steps:
                        conns = [accounts[i % len(accounts)] for i in range(n)]
                        await asyncio.sleep(1.5)
                        probe = partial(deliveries, session, server.base_url, pair, args.deliveries)
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
                            problems.append(f"{n} idle connections: {delivered['lost']} probe messages not received")
                    problems += run.problems
                    warnings += run.warnings
                    stop = await stop_server(server)
                    if not stop["ok"]:
                        problems.append(f"server did not exit 0 within 10 s of SIGTERM: {stop}")
        finally:
            for w in workers:
                await asyncio.to_thread(w.stop)
            if server is not None:
                kill_server(server)
                bad = log_problems(server)
                report["server_log_problems"] = bad[:40]
                if bad:
                    problems.append(f"the server logged {len(bad)} ERROR/WARNING/Traceback lines")
            if pg:
                await pg.drop_all()
    return report_tail(report, problems, warnings, started)


def tmp_root() -> str:
    """Where the traced server's snapshots go (removed with the run's temporary directory)."""
    return _TMP[0]


_TMP = [""]


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
    for p in report.get("problems", []):
        lines.append(f"PROBLEM: {p}")
    for w in report.get("warnings", []):
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    add_database_url(p)
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
    p.add_argument("--ack-every", type=int, default=16)
    p.add_argument("--compress", action="store_true")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    check_database_url(p, args)
    args.steps = sorted({min(1000, args.connections), args.connections})
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database = "postgres" if args.database_url else "sqlite"
    json_out = args.json_out or BENCH_DIR / "reports" / f"idle-{database}.json"
    return run_and_report("idle", run_benchmark(args), format_summary, json_out, TOTAL_BUDGET_S)


if __name__ == "__main__":
    sys.exit(main())
