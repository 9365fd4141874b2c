"""Metrics overhead: 1:1 send throughput of `sup run` with and without GET /metrics scraped every second.

One server (as messaging.py starts it: a real `python -m sup run` on a free loopback port, fresh data,
SQLite unless --database-url), one set of sender/receiver pairs, and the messaging benchmark's
throughput phase run --rounds times in each condition, alternating (off, on, off, on...) so that
drift of the host's load falls on both alike:

- off: nothing reads /metrics (the server still counts everything: metrics are on by default);
- on: a scraper in this process GETs /metrics every --scrape-interval seconds (1 s; Prometheus'
  usual is 15 s or more) for the whole phase, as Prometheus would, and its answers are timed.

Usage (from the project root):

    .venv/bin/python bench/metrics_overhead.py [--rounds 3] [--messages 10000] [--database-url URL]

Prints messages/s per round and the median of each condition, and the overhead (1 - on/off); writes
everything as JSON to --json-out (default bench/reports/metrics-overhead-<database>.json). Exit status:
0 when every message was stored and delivered exactly once and every scrape answered 200; 1 otherwise;
2 when the benchmark could not run. All traffic stays on loopback; the run is cut off after 300 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from foundation import ServerProcess, cpu_seconds, stop_server, summary_end
from harness import bench_run, pair_chats, register, run_main
from messaging import ACK_SETTLE_S
from messaging import parse_args as messaging_args
from phases import Run, measure_throughput

TOTAL_BUDGET_S = 300.0
SCRAPE_COST_COUNT = 100  # scrapes back to back on the idle server, for the CPU one costs


async def scrape_every(session: aiohttp.ClientSession, url: str, interval: float, stop: asyncio.Event) -> dict:
    """GET url every `interval` seconds until `stop`; the answers' statuses, sizes and times."""
    times: list[float] = []
    statuses: dict[int, int] = {}
    size = 0
    while not stop.is_set():
        started = time.perf_counter()
        async with session.get(url) as response:
            body = await response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            size = len(body)
        times.append(time.perf_counter() - started)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (time.perf_counter() - started)))
    ordered = sorted(times)
    return {
        "scrapes": len(times),
        "statuses": statuses,
        "bytes": size,
        "ms_median": round(statistics.median(ordered) * 1000, 2) if ordered else None,
        "ms_max": round(ordered[-1] * 1000, 2) if ordered else None,
    }


async def scrape_cost(session: aiohttp.ClientSession, server: ServerProcess, count: int) -> dict[str, Any]:
    """Server CPU per scrape, on the idle server: `count` scrapes one after the other."""
    before = cpu_seconds(server.pid)
    started = time.perf_counter()
    for _ in range(count):
        async with session.get(f"{server.base_url}/metrics") as response:
            await response.read()
    wall = time.perf_counter() - started
    used = cpu_seconds(server.pid) - before
    return {
        "scrapes": count,
        "server_cpu_ms_per_scrape": round(used * 1000 / count, 2),
        "wall_ms_per_scrape": round(wall * 1000 / count, 2),
    }


async def one_round(run: Run, pairs: list[dict[str, Any]], args: argparse.Namespace, tag: str, scrape: bool) -> dict:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    stop = asyncio.Event()
    scraper = None
    try:
        if scrape:
            url = f"{run.server.base_url}/metrics"
            scraper = asyncio.create_task(scrape_every(session, url, args.scrape_interval, stop))
        figures = await measure_throughput(run, pairs, args.messages, tag)
    finally:
        stop.set()
        scraped = await scraper if scraper is not None else None
        await session.close()
    result = {
        "scraping": scrape,
        "msgs_per_s": figures["msgs_per_s"],
        "steady_msgs_per_s": figures["steady_msgs_per_s"],
        "server_cpu_ms_per_msg": figures["server_cpu_ms_per_msg"],
        "send_to_receive_ms": figures["send_to_receive"],
        "host_busy_pct": figures["cpu"].get("host_cpu_busy_pct"),
        "other_cpu_pct_of_host": figures["cpu"].get("other_cpu_pct_of_host"),
    }
    if scraped is not None:
        result["scrape"] = scraped
        if set(scraped["statuses"]) != {200}:
            run.problems.append(f"{tag}: /metrics answered {scraped['statuses']}")
    return result


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    config = {
        "rounds": args.rounds,
        "messages_per_round": args.messages,
        "pairs": args.pairs,
        "window": args.window,
        "scrape_interval_s": args.scrape_interval,
        "workers": args.workers,
        "server_env": dict(args.server_env),
    }
    async with bench_run("metrics-overhead", args, config, TOTAL_BUDGET_S) as bench:
        report = bench.report
        server = await bench.server(args.server_env, log_per_port=False)
        accounts = await register(bench.session, server.base_url, 2 * args.pairs)
        pairs = await pair_chats(bench.session, server.base_url, accounts, direct=False)
        report["idle_scrape"] = await scrape_cost(bench.session, server, SCRAPE_COST_COUNT)
        run = Run(args, server, await bench.load_generators(args.workers))
        rounds = []
        for i in range(args.rounds):
            for scrape in (False, True):
                await asyncio.sleep(ACK_SETTLE_S)
                tag = f"r{i + 1}-{'on' if scrape else 'off'}"
                rounds.append({"round": i + 1, **await one_round(run, pairs, args, tag, scrape)})
        bench.take(run)
        report["rounds"] = rounds
        report["shutdown"] = await stop_server(server)
    rounds = report.get("rounds", [])
    for key in ("msgs_per_s", "server_cpu_ms_per_msg"):
        for scraping, name in ((False, "off"), (True, "on")):
            values = [r[key] for r in rounds if r["scraping"] is scraping and r[key]]
            if values:
                report.setdefault(f"median_{key}", {})[name] = statistics.median(values)
    off = [r["msgs_per_s"] for r in rounds if not r["scraping"] and r["msgs_per_s"]]
    on = [r["msgs_per_s"] for r in rounds if r["scraping"] and r["msgs_per_s"]]
    if off and on:
        report["overhead_pct"] = round((1 - statistics.median(on) / statistics.median(off)) * 100, 1)
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"metrics overhead ({report.get('database')}): 1:1 throughput, /metrics scraped every second or not"]
    for r in report.get("rounds", []):
        scrape = r.get("scrape")
        extra = (
            f"  ({scrape['scrapes']} scrapes, median {scrape['ms_median']} ms, {scrape['bytes']} B)" if scrape else ""
        )
        lines.append(
            f"  round {r['round']} {'on ' if r['scraping'] else 'off'}: {r['msgs_per_s']} msg/s, "
            f"server CPU {r['server_cpu_ms_per_msg']} ms/msg, host busy {r['host_busy_pct']}%{extra}"
        )
    if "idle_scrape" in report:
        s = report["idle_scrape"]
        lines.append(
            f"  one scrape on the idle server: {s['server_cpu_ms_per_scrape']} ms of server CPU, "
            f"{s['wall_ms_per_scrape']} ms wall (mean of {s['scrapes']})"
        )
    if "median_msgs_per_s" in report:
        m = report["median_msgs_per_s"]
        cpu = report.get("median_server_cpu_ms_per_msg", {})
        lines.append(
            f"  median: off {m['off']} msg/s, on {m['on']} msg/s -> overhead {report['overhead_pct']}%; "
            f"server CPU per message off {cpu.get('off')} ms, on {cpu.get('on')} ms"
        )
    lines += summary_end(report)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--rounds", type=int, default=3, help="rounds of each condition, alternating (default 3)")
    p.add_argument("--messages", type=int, default=10000, help="messages per round (default 10000)")
    p.add_argument("--pairs", type=int, default=50, help="sender/receiver pairs (default 50)")
    p.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between scrapes (default 1)")
    p.add_argument("--json-out", type=Path, help="JSON report (default bench/reports/metrics-overhead-<db>.json)")
    own, rest = p.parse_known_args(argv)
    if own.rounds < 1 or own.messages < 1 or own.pairs < 1 or own.scrape_interval <= 0:
        p.error("--rounds, --messages and --pairs must be at least 1, --scrape-interval positive")
    # Everything else (--database-url, --workers, --window, --server-env...) as messaging.py takes it.
    args = messaging_args([*rest, "--messages", str(own.messages), "--pairs", str(own.pairs)])
    for name in ("rounds", "scrape_interval", "json_out"):
        setattr(args, name, getattr(own, name))
    return args


if __name__ == "__main__":
    sys.exit(run_main("metrics-overhead", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
