"""Big rooms: fan-out to a 1,000-member group all online, and what a 10,000-member channel costs its sender.

1. group fan-out: --group-members users registered over HTTP and put in one unencrypted group at its
   creation; every member connected over the WebSocket (the messaging benchmark's load generator); the
   owner sends --group-messages messages at --group-rate per second. Figures: deliveries/s (messages x
   members received, over the time from the first send to the last receipt), send -> each member p50/p99,
   and send -> the last member (the time until everyone has the message).
2. channel sender cost: two channels made over HTTP by one owner, one with --small-channel members and
   one with --big-channel members, mostly offline; the members (users with one device each) are written
   straight into the database, as an existing install has them. The owner sends --channel-messages
   messages to each, one at a time over REST (`POST /api/v1/messages`), the two channels alternating.
   Figures per channel: send -> 201 p50/p99 (the sender waits for the durable commit), and the server's
   CPU per send.

Usage (from the project root):

    .venv/bin/python bench/rooms.py [--database-url postgresql://...] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from foundation import cpu_seconds, post, summarize_ms
from harness import (
    add_profiling,
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
from phases import Run, add_client_options, measure_paced
from watch import Profiler, summarize_profile

TOTAL_BUDGET_S = 900.0


async def add_offline_members(database_url: str | None, data_dir: Path, chat_id: str, count: int) -> None:
    """`count` users with one device each, members of the chat with its member role, written to the database."""
    now = int(time.time() * 1000)
    users = [(str(uuid.uuid4()), f"room_{uuid.uuid4().hex[:12]}") for _ in range(count)]
    if database_url:
        import asyncpg

        conn = await asyncpg.connect(database_url)
        try:
            role = await conn.fetchval(
                "SELECT id FROM chat_roles WHERE chat_id = $1 AND kind = 'member'", uuid.UUID(chat_id)
            )
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "users",
                    columns=["id", "username", "username_key", "password_hash", "created_at", "updated_at"],
                    records=[(uuid.UUID(u), name, name, "x", now, now) for u, name in users],
                )
                await conn.copy_records_to_table(
                    "user_devices",
                    columns=["id", "user_id", "name", "created_at", "last_seen_at"],
                    records=[(uuid.uuid4(), uuid.UUID(u), "phone", now, now) for u, _ in users],
                )
                await conn.copy_records_to_table(
                    "chat_members",
                    columns=["chat_id", "user_id", "role_id", "joined_at"],
                    records=[(uuid.UUID(chat_id), uuid.UUID(u), role, now) for u, _ in users],
                )
        finally:
            await conn.close()
        return
    db = sqlite3.connect(data_dir / "sup.db", timeout=30)
    try:
        role = db.execute("SELECT id FROM chat_roles WHERE chat_id = ? AND kind = 'member'", (chat_id,)).fetchone()[0]
        with db:
            db.executemany(
                "INSERT INTO users (id, username, username_key, password_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, 'x', ?, ?)",
                [(u, name, name, now, now) for u, name in users],
            )
            db.executemany(
                "INSERT INTO user_devices (id, user_id, name, created_at, last_seen_at) VALUES (?, ?, 'phone', ?, ?)",
                [(str(uuid.uuid4()), u, now, now) for u, _ in users],
            )
            db.executemany(
                "INSERT INTO chat_members (chat_id, user_id, role_id, joined_at) VALUES (?, ?, ?, ?)",
                [(chat_id, u, role, now) for u, _ in users],
            )
    finally:
        db.close()


async def channel_costs(args: argparse.Namespace, server: Any, session: aiohttp.ClientSession, owner: dict[str, str]):
    base = server.base_url
    channels = {}
    for label, size in (("small", args.small_channel), ("big", args.big_channel)):
        answer = await post(
            session,
            f"{base}/api/v1/chats",
            {"type": "channel", "title": f"{label} channel", "member_ids": [], "visibility": "public"},
            owner["token"],
        )
        await add_offline_members(server.database_url, server.data_dir, answer["id"], size - 1)
        channels[label] = answer["id"]
    times: dict[str, list[float]] = {label: [] for label in channels}
    cpu: dict[str, float] = dict.fromkeys(channels, 0.0)
    for i in range(2):  # warm up (statement caches, plans), unmeasured
        for label, chat_id in channels.items():
            body = {"chat_id": chat_id, "client_id": f"{label}-warm-{i}", "body": "warming up"}
            await post(session, f"{base}/api/v1/messages", body, owner["token"])
    profiled = None
    if args.profile:  # py-spy on the server while only the big channel is sent to
        profiler = Profiler(args.py_spy, server.pid, args.profile, 100, [])
        await profiler.start()
        try:
            for i in range(args.channel_messages):
                body = {"chat_id": channels["big"], "client_id": f"prof-{i}", "body": f"profiled {i}"}
                await post(session, f"{base}/api/v1/messages", body, owner["token"])
        finally:
            await profiler.stop()
        profiled = summarize_profile(args.profile) if args.profile.exists() else {"error": profiler.log.decode()[-500:]}
    for i in range(args.channel_messages + 2):
        for label, chat_id in channels.items():
            body = {"chat_id": chat_id, "client_id": f"{label}-{i}", "body": f"announcement {i} " + "x" * 64}
            before_cpu, started = cpu_seconds(server.pid), time.perf_counter()
            await post(session, f"{base}/api/v1/messages", body, owner["token"])
            elapsed, used = time.perf_counter() - started, cpu_seconds(server.pid) - before_cpu
            if i >= 2:  # the first two of each warm up (statement caches, plans)
                times[label].append(elapsed)
                cpu[label] += used
    out = {}
    for label, size in (("small", args.small_channel), ("big", args.big_channel)):
        out[label] = {
            "members": size,
            "send_to_201": summarize_ms(times[label]),
            "server_cpu_ms_per_send": round(cpu[label] * 1000 / len(times[label]), 2),
        }
    if profiled is not None:
        out["big_channel_profile"] = profiled
    small, big = out["small"]["send_to_201"]["p50_ms"], out["big"]["send_to_201"]["p50_ms"]
    out["big_vs_small_p50"] = round(big / small, 1) if small else None
    return out


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    fd_limit = raise_fd_limit()[0]  # 1,000 sockets in the load generator and in the server
    async with bench_run("rooms", args, config_of(args), TOTAL_BUDGET_S, session_timeout_s=120) as bench:
        report = bench.report
        report["fd_limit"] = fd_limit
        server = await bench.server()
        t = time.perf_counter()
        accounts = await register(bench.session, server.base_url, args.group_members + 1)
        report["register_s"] = round(time.perf_counter() - t, 1)
        owner, members = accounts[0], accounts[1:]
        group = await create_chat(bench.session, server.base_url, owner, members, False)
        run = Run(args, server, await bench.load_generators(1))
        fan = await measure_paced(
            run,
            "group fan-out",
            [{"sender": owner, "chat_id": group, "receivers": members}],
            args.group_rate,
            args.group_messages / args.group_rate,
            "room",
        )
        bench.take(run)
        last = fan["send_to_last_receiver"]
        span_s = args.group_messages / args.group_rate + last.get("mean_ms", 0) / 1000
        report["group"] = {
            "members_online": len(members),
            "messages": args.group_messages,
            "rate_per_s": args.group_rate,
            "deliveries": fan["received"],
            "deliveries_per_s_offered_window": round(fan["received"] / span_s, 1) if span_s else None,
            "send_to_each_member": fan["send_to_receive"],
            "send_to_last_member": last,
            "server_cpu_ms_per_delivery": round(fan["cpu"]["server_cpu_s"] * 1000 / fan["received"], 3)
            if fan["received"]
            else None,
            "cpu": fan["cpu"],
        }
        report["channels"] = await channel_costs(args, server, bench.session, owner)
        await bench.stop(server)
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"SUP big rooms - database: {report.get('database')}"]
    g = report.get("group")
    if g:
        lines.append(
            f"  group of {g['members_online'] + 1}, all online: {g['deliveries']} deliveries,"
            f" ~{g['deliveries_per_s_offered_window']}/s; send -> each member p50 {g['send_to_each_member']['p50_ms']}"
            f" / p99 {g['send_to_each_member']['p99_ms']} ms; send -> last member p50"
            f" {g['send_to_last_member']['p50_ms']} / max {g['send_to_last_member']['max_ms']} ms;"
            f" server CPU {g['server_cpu_ms_per_delivery']} ms per delivery"
        )
    c = report.get("channels")
    if c:
        for label in ("small", "big"):
            x = c[label]
            lines.append(
                f"  channel of {x['members']} (mostly offline): send -> 201 p50 {x['send_to_201']['p50_ms']}"
                f" / p99 {x['send_to_201']['p99_ms']} ms, server CPU {x['server_cpu_ms_per_send']} ms per send"
            )
        lines.append(f"  big channel / small channel, sender's p50: x{c['big_vs_small_p50']}")
    return "\n".join(lines + problem_lines(report))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--group-members", type=int, default=1000, help="online members besides the sender (1000)")
    p.add_argument("--group-messages", type=int, default=20, help="messages sent into the group (20)")
    p.add_argument("--group-rate", type=float, default=2.0, help="group messages per second (2)")
    p.add_argument("--small-channel", type=int, default=100, help="members of the small channel (100)")
    p.add_argument("--big-channel", type=int, default=10000, help="members of the big channel (10000)")
    p.add_argument("--channel-messages", type=int, default=30, help="measured sends into each channel (30)")
    add_client_options(p)
    add_profiling(p, "py-spy the server while sending to the big channel; raw stacks here")
    args = parse_checked(p, argv)
    if not 1 <= args.group_members <= 1000:
        p.error("--group-members is 1 to 1000 (the most a group takes at its creation)")
    return args


if __name__ == "__main__":
    sys.exit(run_main("rooms", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
