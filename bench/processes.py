"""N `sup` processes on one Postgres + Redis, behind one load generator: throughput and CPU per message.

For each count in --counts (default 1, 2, 4) the benchmark creates a fresh Postgres database, starts
that many `python -m sup run` processes on it (one data directory, so one secret key; the bus on
Redis so that a message sent on one process reaches a receiver connected to another), registers
users and runs the messaging benchmark's throughput phase with the clients spread over the processes:

- pairs share --chats group chats (pair j writes into chat j % chats), and a chat's senders sit on
  different processes: several processes append to the same chats at once (seq bumps on the same
  chat rows, device-row locks on the same members): a lock-order deadlock would fail a whole batch
  and show as refused or lost messages;
- a pair's receiver is on the next process: with N > 1 every message crosses processes (Redis hint,
  then the receiving process reads the event from the database);
- every client checks its device stream (cursors gap-free, no duplicates) and each chat's messages
  arriving in seq order; the phase's checks turn any miss into a problem (exit status 1).

Figures per count: messages/s sent and delivered, and the CPU of all `sup` processes (and of
Postgres) per message; the figure that must hold on more processes is the server CPU per message,
within 20 % of one process's. On 2 cores the total cannot grow with N.

Usage (from the project root):

    .venv/bin/python bench/processes.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \\
        [--redis-url redis://127.0.0.1:6379/0] [--counts 1,2,4] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from foundation import BENCH_DIR, PostgresDatabases, software_info
from harness import (
    HTTP_CONCURRENCY,
    Bench,
    add_profiling,
    add_server_env,
    bench_parser,
    bench_run,
    bounded_gather,
    config_of,
    create_chat,
    parse_checked,
    problem_lines,
    register,
    run_main,
)
from phases import WS_PATH, Run, add_client_options, measure_throughput
from watch import Profiler, summarize_profile

TOTAL_BUDGET_S = 900.0


async def one_count(bench: Bench, n: int) -> dict[str, Any]:
    """Start n servers on a fresh database, run the throughput phase across them, stop them."""
    args = bench.args
    database_url = await bench.pg.create()
    data_dir = bench.tmp / f"data-{n}"
    env = [("SUP_BUS_URL", args.redis_url), *args.server_env]
    report: dict[str, Any] = {"processes": n}
    try:
        # The first one alone: it migrates the database and writes the data dir's secrets.
        servers = [await bench.server(env, data_dir, database_url=database_url)]
        servers += await asyncio.gather(*(bench.server(env, data_dir, database_url=database_url) for _ in range(n - 1)))
        base = servers[0].base_url
        accounts = await register(bench.session, base, 2 * args.pairs)
        senders, receivers = accounts[0::2], accounts[1::2]
        urls = [f"ws://127.0.0.1:{s.port}{WS_PATH}" for s in servers]
        for j in range(args.pairs):
            senders[j]["url"] = urls[j % n]
            receivers[j]["url"] = urls[(j + 1) % n]
        chats = []
        for g in range(args.chats):
            members = [a for j in range(g, args.pairs, args.chats) for a in (senders[j], receivers[j])]
            chats.append((members[0], members[1:]))
        chat_ids = await bounded_gather(
            HTTP_CONCURRENCY, [create_chat(bench.session, base, owner, rest, False) for owner, rest in chats]
        )
        pairs = [
            {
                "index": j,
                "sender": senders[j],
                "receiver": receivers[j],
                "chat_id": chat_ids[j % args.chats],
                "direct": False,
            }
            for j in range(args.pairs)
        ]
        run = Run(args, servers[0], await bench.load_generators(args.workers))
        await asyncio.sleep(1.5)  # let the setup's writes and acks settle
        # Every server counts as "sup server" in the CPU figures (the phase's CpuWatch sums by label).
        run.extra_labels = {s.pid: "sup server" for s in servers[1:]}
        original_phase = run.phase
        labels = {s.pid: "sup server" for s in servers[1:]}

        async def phase_with_all_servers(*a: Any, before_go: Any = None, **kw: Any) -> Any:
            async def go() -> None:  # the profiler's start sets its own label: keep the servers'
                if before_go is not None:
                    await before_go()
                run.extra_labels = {**run.extra_labels, **labels}

            run.extra_labels = dict(labels)
            return await original_phase(*a, before_go=go, **kw)

        run.phase = phase_with_all_servers  # type: ignore[method-assign]
        profiler = None
        if args.profile:  # the first process only: it holds 1/n of the senders and receivers like the others
            raw = args.profile.with_name(f"{args.profile.name}-n{n}.raw")
            profiler = Profiler(args.py_spy, servers[0].pid, raw, 100, args.profile_option)
        commits = await bench.pg.commits(database_url)
        tp = await measure_throughput(run, pairs, args.messages, f"n{n}", profiler)
        await asyncio.sleep(1.5)  # Postgres publishes its counters with a delay
        # Transactions per message, all processes (group commits, acks, reads outside a transaction).
        committed = await bench.pg.commits(database_url) - commits
        if profiler is not None and profiler.out.exists():
            report["profile_raw"] = str(profiler.out)
            report["profile"] = summarize_profile(profiler.out)
        bench.take(run)
        cpu = tp["cpu"]
        servers_cpu = cpu["cpu_s_by_process"].get("sup server", cpu["server_cpu_s"])
        postgres_cpu = cpu["postgres_pct_of_one_cpu"] * cpu["elapsed_s"] / 100
        complete = tp["complete"]
        report.update(
            {
                "msgs_per_s": tp["msgs_per_s"],
                "steady_msgs_per_s": tp["steady_msgs_per_s"],
                "complete": complete,
                "lost": tp["lost"],
                "refused": tp["refused"],
                "send_to_receive_ms": tp["send_to_receive"],
                "servers_cpu_s": servers_cpu,
                "servers_cpu_ms_per_msg": round(servers_cpu * 1000 / complete, 3) if complete else None,
                "postgres_cpu_ms_per_msg": round(postgres_cpu * 1000 / complete, 3) if complete else None,
                "postgres_commits_per_msg": round(committed / complete, 3) if complete else None,
                "other_cpu_pct_of_host": cpu["other_cpu_pct_of_host"],
                "streams": tp["streams"],
                "throughput": tp,
            }
        )
        for s in servers:
            await bench.stop(s, f"{n} processes: server {s.port}")
    finally:
        report["server_log_problems"] = await bench.close(f"{n} processes: the servers")
        await bench.pg.drop(database_url)
    return report


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    software = software_info(args.python)
    software["postgres"] = await PostgresDatabases(args.database_url).server_version()
    config = config_of(args, leave_out=("server_env",))
    async with bench_run("processes", args, config, TOTAL_BUDGET_S, software=software) as bench:
        results = bench.report["runs"] = []
        for n in args.counts:
            results.append(await one_count(bench, n))
    one = next((r for r in results if r["processes"] == 1), None)
    if one and one.get("servers_cpu_ms_per_msg"):
        for r in results:
            if r.get("servers_cpu_ms_per_msg"):
                r["cpu_per_msg_vs_one_process"] = round(r["servers_cpu_ms_per_msg"] / one["servers_cpu_ms_per_msg"], 2)
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"SUP on N processes (Postgres + Redis) - {report.get('machine', {}).get('cpu_count')} CPUs"]
    for r in report.get("runs", []):
        s = r.get("streams", {})
        latency = r.get("send_to_receive_ms", {})
        lines.append(
            f"  {r['processes']} process(es): {r.get('msgs_per_s')} msgs/s (steady {r.get('steady_msgs_per_s')}),"
            f" sup CPU {r.get('servers_cpu_ms_per_msg')} ms/msg (x{r.get('cpu_per_msg_vs_one_process')} of one"
            f" process), postgres {r.get('postgres_cpu_ms_per_msg')} ms/msg,"
            f" {r.get('postgres_commits_per_msg')} transactions/msg;"
            f" send->receive p50 {latency.get('p50_ms')} / p99 {latency.get('p99_ms')} ms;"
            f" lost {r.get('lost')}, refused {r.get('refused')}; streams: gaps {s.get('gaps')}, duplicates"
            f" {s.get('duplicates')}, chat seq out of order {s.get('chat_seq_disorder')};"
            f" other load {r.get('other_cpu_pct_of_host')}% of the host"
        )
    return "\n".join(lines + problem_lines(report))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="the bus (default redis://127.0.0.1:6379/0)")
    p.add_argument("--counts", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4])
    p.add_argument("--pairs", type=int, default=40, help="sender/receiver pairs (default 40)")
    p.add_argument("--chats", type=int, default=10, help="group chats the pairs share (default 10)")
    p.add_argument("--messages", type=int, default=8000, help="messages per count (default 8000)")
    p.add_argument("--workers", type=int, default=2, help="load-generator processes (default 2)")
    p.add_argument("--window", type=int, default=8, help="sends awaiting message.sent per sender (default 8)")
    p.add_argument("--max-seconds", type=float, default=40.0, help="sending stops after this, per count (40)")
    add_profiling(p, "py-spy record the first process during each count: PATH-n<N>.raw")
    p.add_argument("--profile-option", action="append", default=[], help="extra py-spy record option, e.g. --gil")
    add_client_options(p)
    add_server_env(p, "a server setting, repeatable")
    args = parse_checked(p, argv)
    args.json_out = args.json_out or BENCH_DIR / "reports" / "processes.json"
    if not args.database_url:
        p.error("--database-url postgresql://... is required: several processes share one Postgres")
    if args.pairs < args.chats or args.chats < 1:
        p.error("--pairs must be at least --chats, and --chats at least 1")
    return args


if __name__ == "__main__":
    sys.exit(run_main("processes", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
