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
import multiprocessing
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
from foundation import (
    BENCH_DIR,
    HOST,
    PASSWORD,
    BenchError,
    CpuWatch,
    PostgresDatabases,
    add_database_url,
    check_database_url,
    client_session,
    kill_server,
    log_problems,
    post,
    post_json_load,
    report_head,
    report_tail,
    run_and_report,
    software_info,
    spawn_server,
    stop_server,
    summarize_ms,
    wait_healthy,
)

TOTAL_BUDGET_S = 600.0
PROBE_MAX_S = 60.0


def probe_process(port: int, kind: str, token: str, chat_id: str, conn: Connection) -> None:
    """Child process: one request at a time (GET /health, or a message send) until told to stop."""
    client = http.client.HTTPConnection(HOST, port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def one() -> bool:
        if kind == "health":
            client.request("GET", "/health")
        else:
            body = json.dumps({"chat_id": chat_id, "client_id": str(uuid.uuid4()), "body": "probe"})
            client.request("POST", "/api/v1/messages", body=body, headers=headers)
        response = client.getresponse()
        response.read()
        return response.status in (200, 201)

    one()  # connect and warm up before the clock starts
    conn.send("ready")
    if conn.recv() != "go":
        return
    samples: list[float] = []
    errors = 0
    started = time.monotonic()
    while not conn.poll() and time.monotonic() - started < PROBE_MAX_S:
        t0 = time.perf_counter()
        try:
            ok = one()
        except (OSError, http.client.HTTPException):
            ok = False
            client.close()
            client = http.client.HTTPConnection(HOST, port, timeout=30)
        if ok:
            samples.append(time.perf_counter() - t0)
        else:
            errors += 1
    client.close()
    conn.send({"samples": samples, "errors": errors, "duration_s": time.monotonic() - started})


class Probe:
    def __init__(self, port: int, kind: str, token: str, chat_id: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=probe_process, args=(port, kind, token, chat_id, child), daemon=True)

    def _recv(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise BenchError("the probe process did not answer")
        return self._conn.recv()

    async def start(self) -> None:
        self._proc.start()
        if await asyncio.to_thread(self._recv, 30) != "ready":
            raise BenchError("the probe process did not start")

    @property
    def pid(self) -> int:
        return self._proc.pid or 0

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
                    bodies = [
                        {"username": setup["users"][i % len(setup["users"])], "password": PASSWORD}
                        for i in range(args.logins)
                    ]
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
    database = "postgres" if args.database_url else "sqlite"
    pg = PostgresDatabases(args.database_url) if args.database_url else None
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = report_head("logins", database, software_info(args.python), config)
    started = time.perf_counter()
    problems: list[str] = []
    server = None
    with tempfile.TemporaryDirectory(prefix="sup-bench-logins-") as tmp:
        try:
            async with asyncio.timeout(TOTAL_BUDGET_S):
                database_url = await pg.create() if pg else None
                server = spawn_server(args.python, Path(tmp) / "data", database_url, args.server_env)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
                    await wait_healthy(server, session)
                    base = server.base_url
                    users = [f"lg_{i:04d}" for i in range(args.users)]
                    accounts = [
                        await post(session, f"{base}/api/v1/auth/register", {"username": u, "password": PASSWORD})
                        for u in users
                    ]
                    sender, other = accounts[0], accounts[1]
                    chat = await post(
                        session,
                        f"{base}/api/v1/chats",
                        {"type": "group", "member_ids": [other["user"]["id"]], "title": "probe", "encrypted": False},
                        sender["access_token"],
                    )
                    setup = {"users": users, "token": sender["access_token"], "chat_id": chat["id"]}
                    report.update(await measure(args, base, server.port, server.pid, setup))
                    stop = await stop_server(server)
                    if not stop["ok"]:
                        problems.append(f"server did not exit 0 after SIGTERM: {stop}")
        finally:
            if server is not None:
                kill_server(server)
                bad = log_problems(server)
                report["server_log_problems"] = bad[:40]
                if bad:
                    problems.append(f"the server logged {len(bad)} ERROR/WARNING/Traceback lines")
            if pg:
                await pg.drop_all()
    for key in ("health_logins", "send_logins"):
        failed = report.get(key, {}).get("load", {}).get("failed")
        if failed:
            problems.append(f"{key}: {failed} logins failed")
        if report.get(key, {}).get("errors"):
            problems.append(f"{key}: {report[key]['errors']} probe requests failed")
    return report_tail(report, problems, [], started)


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
    lines += [f"PROBLEM: {p}" for p in report.get("problems", [])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    add_database_url(p)
    p.add_argument("--logins", type=int, default=400, help="logins in the burst (default 400)")
    p.add_argument("--concurrency", type=int, default=50, help="logins in flight (default 50)")
    p.add_argument("--users", type=int, default=20, help="users registered first (default 20)")
    p.add_argument("--idle-seconds", type=float, default=3.0, help="idle sampling time (default 3)")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="SUP_NAME=VALUE",
        help="a server setting, repeatable (e.g. SUP_AUTH_HASH_WORKERS=2)",
    )
    p.add_argument("--json-out", type=Path)
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(argv)
    check_database_url(p, args)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database = "postgres" if args.database_url else "sqlite"
    json_out = args.json_out or BENCH_DIR / "reports" / f"logins-{database}.json"
    return run_and_report("logins", run_benchmark(args), format_summary, json_out, TOTAL_BUDGET_S)


if __name__ == "__main__":
    sys.exit(main())
