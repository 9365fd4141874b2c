"""Logins against the rest: `GET /health` and message-send latency, idle and during a burst of logins.

One `python -m sup run` (SQLite, or a fresh Postgres database with --database-url). A probe process
(separate, so that it never competes with the load's event loop) sends one request at a time on one
keep-alive connection: `GET /health`, or `POST /api/v1/messages` into a group of two. Each probe runs
once idle and once while --concurrency logins (argon2id) are in flight; the figure is the loaded p99
over the idle p99 (issue 15's target: at most 2x). --server-env sets server settings to compare, e.g.
SUP_AUTH_HASH_WORKERS=2.

Usage (from the project root):

    .venv/bin/python bench/logins.py [--database-url postgresql://...] [--server-env SUP_X=Y] [--json-out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import sys
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

from foundation import (
    PROBE_MAX_S,
    PROBE_MAX_SAMPLES,
    CpuWatch,
    SamplerProcess,
    client_session,
    get_health,
    login_bodies,
    post_json_load,
    sampling_process,
    summarize_ms,
)
from harness import (
    add_server_env,
    bench_parser,
    bench_run,
    config_of,
    create_chat,
    parse_checked,
    problem_lines,
    register,
    run_main,
)

TOTAL_BUDGET_S = 600.0


def send_probe(token: str, chat_id: str, client: http.client.HTTPConnection) -> bool:
    """POST one message into the probe's chat; whether it was stored."""
    body = json.dumps({"chat_id": chat_id, "client_id": str(uuid.uuid4()), "body": "probe"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    client.request("POST", "/api/v1/messages", body=body, headers=headers)
    response = client.getresponse()
    response.read()
    return response.status in (200, 201)


class Probe(SamplerProcess):
    """One request at a time (GET /health, or a message send) from a process of its own."""

    def __init__(self, port: int, kind: str, token: str, chat_id: str) -> None:
        request = get_health if kind == "health" else partial(send_probe, token, chat_id)
        super().__init__("probe", sampling_process, port, request, PROBE_MAX_S, PROBE_MAX_SAMPLES)

    async def run(self, during: Any) -> dict[str, Any]:
        """Sample while `during` (a coroutine) runs; its result is returned under "load"."""
        self._conn.send("go")
        load = await during
        self._conn.send("stop")
        result = await asyncio.to_thread(self._recv, 30)
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()
        return {**summarize_ms(result.pop("samples")), **result, "load": load}


async def measure(args: argparse.Namespace, base: str, port: int, pid: int, setup: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("health", "send"):
        for phase in ("idle", "logins"):
            probe = Probe(port, kind, setup["token"], setup["chat_id"])
            await probe.start()
            cpu = CpuWatch(pid, {})  # the probe is gone before result(): not labelled
            if phase == "idle":
                result = await probe.run(asyncio.sleep(args.idle_seconds))
            else:
                async with client_session(args.concurrency) as session:
                    issued = asyncio.Event()
                    bodies = login_bodies(setup["users"], args.logins)
                    load = asyncio.create_task(
                        post_json_load(
                            session, f"{base}/api/v1/auth/login", bodies, args.concurrency, 200, all_issued=issued
                        )
                    )
                    result = await probe.run(issued.wait())  # sampled while the logins run at full concurrency
                    result["load"] = (await load).summary()
            result["cpu"] = cpu.result()
            out[f"{kind}_{phase}"] = result
            print(
                f"  {kind:6} {phase:6}: p50 {result.get('p50_ms')} / p99 {result.get('p99_ms')} / max"
                f" {result.get('max_ms')} ms ({result.get('count')} requests)",
                flush=True,
            )
        idle, loaded = out[f"{kind}_idle"].get("p99_ms"), out[f"{kind}_logins"].get("p99_ms")
        if idle and loaded:
            out[f"{kind}_p99_ratio"] = round(loaded / idle, 2)
    return out


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    async with bench_run("logins", args, config_of(args), TOTAL_BUDGET_S) as bench:
        server = await bench.server(args.server_env, log_per_port=False)
        accounts = await register(bench.session, server.base_url, args.users, prefix="lg")
        sender, other = accounts[0], accounts[1]
        chat_id = await create_chat(bench.session, server.base_url, sender, [other], direct=False)
        setup = {"users": [a["username"] for a in accounts], "token": sender["token"], "chat_id": chat_id}
        bench.report.update(await measure(args, server.base_url, server.port, server.pid, setup))
        await bench.stop(server)
    report = bench.report
    for key in ("health_logins", "send_logins"):
        failed = report.get(key, {}).get("load", {}).get("failed")
        if failed:
            bench.problems.append(f"{key}: {failed} logins failed")
        if report.get(key, {}).get("errors"):
            bench.problems.append(f"{key}: {report[key]['errors']} probe requests failed")
    return bench.finish()


def format_summary(report: dict[str, Any]) -> str:
    lines = [f"SUP logins against other requests - database: {report.get('database')}, env {report['config']}"]
    for kind in ("health", "send"):
        idle, loaded = report.get(f"{kind}_idle", {}), report.get(f"{kind}_logins", {})
        lines.append(
            f"  {kind}: idle p50 {idle.get('p50_ms')} / p99 {idle.get('p99_ms')} ms; during logins p50"
            f" {loaded.get('p50_ms')} / p99 {loaded.get('p99_ms')} / max {loaded.get('max_ms')} ms"
            f" -> p99 x{report.get(f'{kind}_p99_ratio')}; logins/s"
            f" {loaded.get('load', {}).get('requests_per_s')}, server CPU"
            f" {loaded.get('cpu', {}).get('server_cpu_pct_of_one_cpu')}% of a core, host"
            f" {loaded.get('cpu', {}).get('host_cpu_busy_pct')}% busy"
        )
    return "\n".join(lines + problem_lines(report))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = bench_parser(__doc__)
    p.add_argument("--logins", type=int, default=400, help="logins in the burst (default 400)")
    p.add_argument("--concurrency", type=int, default=50, help="logins in flight (default 50)")
    p.add_argument("--users", type=int, default=20, help="users registered first (default 20)")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle sampling time (default 3)")
    add_server_env(p, "a server setting, repeatable (e.g. SUP_AUTH_HASH_WORKERS=2)")
    args = parse_checked(p, argv)
    return args


if __name__ == "__main__":
    sys.exit(run_main("logins", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
