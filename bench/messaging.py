"""Messaging benchmark: WebSocket throughput, latency, group fan-out and idle-connection memory of `sup run`.

Everything runs against a real `python -m sup run` subprocess on a free loopback port, with a fresh
temporary data directory (SQLite by default; with --database-url postgresql://... a fresh Postgres
database is created for the run and dropped afterwards). The load comes from separate load-generator
processes (--workers) that speak the WebSocket protocol the way a client does (JSON frames,
`authenticate` first, `ack` of the event cursor, `message.send` answered by `message.sent`):

1. throughput: P sender/receiver pairs, each in its own chat, pipelined sends (W awaiting their
   durable `message.sent` per connection); a message counts when the sender got `message.sent` AND
   the receiver got `message.new`; a fixed number of messages, reported as messages/s; then the same
   against bench/echo_server.py, a bare aiohttp + uvloop server answering from memory (the ceiling
   on this machine in this run; --no-baseline skips it);
2. latency: send -> receive at a steady, paced rate (open loop), the send time embedded in the body;
3. group fan-out: one sender, M receiving members connected, send -> each receipt, paced;
4. memory: RSS of the server with N idle authenticated WebSocket clients: on the server that registered
   the users, on the same server after phases 1-3, and on a server restarted on the same data.

Usage (from the project root):

    .venv/bin/python bench/messaging.py [--database-url URL] [--json-out PATH] [--profile PATH]

A human-readable summary is printed; every figure is written as JSON to --json-out (default
bench/reports/messaging-<database>.json). Exit status: 0 when every message was stored and delivered
exactly once, in order, and the server stopped cleanly; 1 otherwise; 2 when the benchmark could not run.

This module is the entry point and runs the phases in order; the pieces live next to it: loadgen.py
(the load-generator processes) and wsclient.py (their WebSocket clients), phases.py (one phase on the
load generators, and its figures), watch.py (CPU, memory, py-spy), messaging_report.py (configuration,
targets, the summary). foundation.py provides the server process, /proc readings and machine information.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from baseline import measure_echo_baseline
from foundation import (
    PostgresDatabases,
    describe_process,
    memory_mib,
    software_info,
    working_tree,
)
from harness import (
    add_profiling,
    add_server_env,
    bench_parser,
    bench_run,
    create_chat,
    database_of,
    pair_chats,
    parse_checked,
    register,
    run_main,
)
from messaging_report import config_info, format_summary, server_package, targets_report
from phases import Run, add_client_options, measure_idle, measure_paced, measure_throughput
from watch import Profiler, summarize_profile

TOTAL_BUDGET_S = 180.0  # the whole benchmark is cut off after this

# Between phases: the server stores acks at most once a second and records last-seen times of the clients
# that left; let that finish so that it does not fall into the next phase's measurements.
ACK_SETTLE_S = 1.5


# -- the benchmark ------------------------------------------------------------------------------


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

    tp_pairs = await pair_chats(session, base, tp_accounts, False)
    dp_pairs = await pair_chats(session, base, dp_accounts, True) if direct_pairs else []
    lat_pairs = await pair_chats(session, base, lat_accounts, False)
    fan_chat = await create_chat(session, base, fan_accounts[0], fan_accounts[1:], False)
    report["setup"]["chats"] = len(tp_pairs) + len(dp_pairs) + len(lat_pairs) + 1
    report["setup"]["chats_s"] = round(time.perf_counter() - started, 2)
    report["memory_after_setup"] = memory_mib(server.pid)

    run.accounts = accounts
    phases = args.phases

    # 4. idle clients, on this server: it has just hashed every registration's password
    if "idle" in phases:
        report["idle"] = await measure_idle(run, accounts[: args.idle_clients], "idle clients")

    # A warm-up, then the statistics a running server's autovacuum would have gathered by now: on a fresh
    # database Postgres keeps plans made on empty tables (a sequential scan of messages per send).
    if args.warmup and "throughput" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        report["warmup"] = {"messages": (await measure_throughput(run, tp_pairs, args.warmup, "warm"))["complete"]}
        if pg and server.database_url:
            await pg.analyze(server.database_url)
            report["warmup"]["analyzed"] = True

    # 1. throughput
    if "throughput" in phases:
        await asyncio.sleep(ACK_SETTLE_S)
        commits = await pg.commits(server.database_url) if pg and server.database_url else None
        report["throughput"] = tp = await measure_throughput(run, tp_pairs, args.messages, "tp")
        if commits is not None and tp["complete"]:
            await asyncio.sleep(ACK_SETTLE_S)  # Postgres publishes its counters with a delay
            # Group commit's batch size, seen from Postgres: transactions per message (acks included).
            committed = await pg.commits(server.database_url) - commits
            tp["postgres_commits"] = committed
            tp["postgres_commits_per_msg"] = round(committed / tp["complete"], 3)
    # 1b. the same against a bare aiohttp + uvloop server answering from memory: the ceiling, this run
    if "throughput" in phases and args.baseline:
        report["baseline_echo"] = echo = await measure_echo_baseline(run, session, tp_pairs, args.messages)
        if echo["msgs_per_s"] and report["throughput"]["msgs_per_s"]:
            report["throughput"]["of_baseline"] = round(report["throughput"]["msgs_per_s"] / echo["msgs_per_s"], 3)
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
    database = database_of(args)
    software = software_info(args.python)
    software["msgspec"] = msgspec.__version__
    software["working_tree"] = working_tree()
    software["server_sup_package"] = server_package(args)
    if args.database_url:
        software["postgres"] = await PostgresDatabases(args.database_url).server_version()
    async with bench_run("messaging", args, config_info(args, database), TOTAL_BUDGET_S, software=software) as bench:
        report = bench.report
        server = await bench.server(args.server_env)
        report["start_to_healthy_ms"] = round(server.healthy_ms or 0, 1)
        run = Run(args, server, await bench.load_generators(args.workers))
        report.update(await measure(run, bench.session, bench.pg))
        bench.take(run)
        report["shutdown"] = await bench.stop(server)

        # 4c. idle clients on a restarted server (same data): no password was hashed in this process
        if "idle" in args.phases and args.idle_restarted:
            server = await bench.server(args.server_env, data_dir=server.data_dir)
            again = Run(args, server, bench.workers)
            label = "idle clients, restarted server"
            report["idle_restarted"] = await measure_idle(again, run.accounts[: args.idle_clients], label)
            bench.take(again)
            await bench.stop(server, "restarted server")
    report["targets"] = targets_report(report)
    return bench.finish()


# -- command line ---------------------------------------------------------------------------------


def env_setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("SUP_"):
        raise argparse.ArgumentTypeError("expected SUP_NAME=VALUE")
    return name, value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__, "JSON report (default bench/reports/messaging-<database>.json)")
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
    p.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the throughput phase against bench/echo_server.py (a bare aiohttp + uvloop server answering "
        "from memory), which otherwise follows SUP's in the same run",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=0,
        help="first send this many messages, then ANALYZE on Postgres as autovacuum would on a running server "
        "(default 0: measure a fresh database, as before)",
    )
    add_client_options(p)
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
    add_profiling(
        p,
        "also run the throughput phase once more under `py-spy record` and write its raw (collapsed) "
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
    add_server_env(
        p,
        "a server setting for experiments, repeatable (e.g. SUP_DATABASE_SQLITE_SYNCHRONOUS=normal); "
        "the figures are then not those of the defaults",
        env_setting,
    )
    args = parse_checked(p, argv)
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


if __name__ == "__main__":
    sys.exit(run_main("messaging", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
