"""What rate limits cost a request: a cheap authenticated route with the limits off, counted in the
process (memory:// bus) and counted in Redis (redis:// bus, one Lua script per request).

Each setting gets its own `sup run` (SQLite, fresh data dir) on a free loopback port; `--clients`
users each repeat `GET /api/v1/users/me` on their own connection for `--seconds` after a warm-up.
The limits are set far above the load, so every request is counted and none refused.

    .venv/bin/python bench/ratelimit.py [--redis-url redis://127.0.0.1:6379/0] [--seconds 8] [--clients 16]

Prints requests/s and latency per setting, writes bench/reports/ratelimit.json. Exit status: 0 when
every request answered 200 and every server stopped cleanly with a clean log, 1 otherwise, 2 when the
benchmark could not run.
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
from foundation import BENCH_DIR, client_session, summarize_ms
from harness import Bench, bench_run, register, run_main

HIGH = "100000000"  # a budget no run reaches: every request counted, none refused
WARM_UP_S = 1.0
BUDGET_S = 300.0


def settings(redis_url: str) -> dict[str, dict[str, str]]:
    limits = {"SUP_RATELIMIT_ENABLED": "true", "SUP_RATELIMIT_REQUESTS_PER_USER": HIGH}
    return {
        "off": {"SUP_RATELIMIT_ENABLED": "false"},
        "memory": {**limits, "SUP_BUS_URL": "memory://"},
        "redis": {**limits, "SUP_BUS_URL": redis_url},
    }


async def _client(
    session: aiohttp.ClientSession, url: str, token: str, until: float, start: float
) -> tuple[list[float], int]:
    latencies: list[float] = []
    failures = 0
    headers = {"Authorization": f"Bearer {token}"}
    while (now := time.perf_counter()) < until:
        async with session.get(url, headers=headers) as response:
            await response.read()
            ok = response.status == 200
        if now >= start:  # the warm-up is not measured
            latencies.append(time.perf_counter() - now)
            failures += not ok
    return latencies, failures


async def measure(bench: Bench, name: str, env: dict[str, str]) -> dict[str, Any]:
    args = bench.args
    server = await bench.server(env.items(), data_dir=bench.tmp / name)
    async with client_session(args.clients) as session:
        tokens = [a["token"] for a in await register(session, server.base_url, args.clients, prefix="bench_user")]
        start = time.perf_counter() + WARM_UP_S
        until = start + args.seconds
        url = f"{server.base_url}/api/v1/users/me"
        results = await asyncio.gather(*(_client(session, url, t, until, start) for t in tokens))
    stopped = await bench.stop(server, f"the {name} server")
    latencies = [s for lat, _ in results for s in lat]
    return {
        "env": env,
        "requests": len(latencies),
        "failures": sum(f for _, f in results),
        "requests_per_s": round(len(latencies) / args.seconds, 1),
        "latency": summarize_ms(latencies),
        "stopped_cleanly": stopped["ok"],
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    config = {
        "seconds": args.seconds,
        "clients": args.clients,
        "redis_url": args.redis_url,
        "route": "GET /api/v1/users/me",
    }
    async with bench_run("ratelimit", args, config, BUDGET_S) as bench:
        results = {name: await measure(bench, name, env) for name, env in settings(args.redis_url).items()}
        bench.report["settings"] = results
        bench.problems += [f"{name}: {r['failures']} requests failed" for name, r in results.items() if r["failures"]]
    return bench.finish()


def summary(report: dict[str, Any]) -> str:
    lines = [f"rate limits, {report['config']['clients']} clients, {report['config']['route']}:"]
    base = report["settings"]["off"]["requests_per_s"] or 1
    for name, r in report["settings"].items():
        lat = r["latency"]
        lines.append(
            f"  {name:<7} {r['requests_per_s']:>8.1f} req/s ({r['requests_per_s'] / base:>5.0%} of off)"
            f"  p50 {lat.get('p50_ms')} ms  p99 {lat.get('p99_ms')} ms  failures {r['failures']}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--json-out", type=Path, default=BENCH_DIR / "reports" / "ratelimit.json")
    p.set_defaults(python=sys.executable)  # the servers run on this interpreter
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(run_main("ratelimit", parse_args(), run, summary, BUDGET_S))
