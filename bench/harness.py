"""What every benchmark script does around what it measures.

Its common options (--database-url, --json-out, --python, --server-env) and its entry point; the accounts
and chats it makes over HTTP; and one run (`bench_run`): a temporary directory, a fresh Postgres database
with --database-url, the `sup run` servers and load generators it starts, and the report's first and last
keys. Whatever was started is stopped, killed and its log read at the end, even when a step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from foundation import (
    BENCH_DIR,
    PASSWORD,
    PostgresDatabases,
    ServerProcess,
    add_database_url,
    check_database_url,
    kill_server,
    log_problems,
    post,
    report_head,
    report_tail,
    run_and_report,
    software_info,
    spawn_server,
    stop_server,
    wait_healthy,
)
from loadgen import LoadGen
from phases import Run

HTTP_CONCURRENCY = 8  # registrations / chat creations in flight (argon2 is CPU-bound anyway)


# -- command line ---------------------------------------------------------------------------------


def database_of(args: argparse.Namespace) -> str:
    return "postgres" if getattr(args, "database_url", None) else "sqlite"


def bench_parser(doc: str, json_out_help: str | None = None) -> argparse.ArgumentParser:
    """A benchmark's command line: the first paragraph of its docstring; --database-url, --json-out, --python."""
    p = argparse.ArgumentParser(description=doc.split("\n\n", 1)[0])
    add_database_url(p)
    p.add_argument("--json-out", type=Path, help=json_out_help)
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `-m sup run` (default: this)")
    return p


def parse_checked(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, and exit through p.error() when --database-url is not a Postgres URL."""
    args = p.parse_args(argv)
    check_database_url(p, args)
    return args


def server_setting(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def add_server_env(
    p: argparse.ArgumentParser, text: str, setting: Callable[[str], tuple[str, str]] = server_setting
) -> None:
    """--server-env SUP_NAME=VALUE, repeatable (text: its help)."""
    p.add_argument("--server-env", action="append", default=[], type=setting, metavar="SUP_NAME=VALUE", help=text)


def add_profiling(p: argparse.ArgumentParser, profile_help: str) -> None:
    """--profile PATH (profile_help: what py-spy records there) and --py-spy, the executable it runs."""
    p.add_argument("--profile", type=Path, help=profile_help)
    p.add_argument(
        "--py-spy",
        default=shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy")),
        help="py-spy executable for --profile (default: on PATH, else next to this interpreter)",
    )


def config_of(args: argparse.Namespace, leave_out: Iterable[str] = ()) -> dict[str, Any]:
    """The options as the report's config shows them."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in leave_out}


def run_main(
    name: str,
    args: argparse.Namespace,
    benchmark: Callable[[argparse.Namespace], Coroutine[Any, Any, dict[str, Any]]],
    summary: Callable[[dict[str, Any]], str],
    budget_s: float,
) -> int:
    """Run the benchmark, print its summary, write its report (--json-out, else bench/reports/NAME-<database>.json)."""
    json_out: Path = args.json_out or BENCH_DIR / "reports" / f"{name}-{database_of(args)}.json"
    return run_and_report(name, benchmark(args), summary, json_out, budget_s)


def problem_lines(report: dict[str, Any]) -> list[str]:
    """The summary's last lines: one per problem and per warning."""
    return [
        *(f"PROBLEM: {p}" for p in report.get("problems", [])),
        *(f"WARNING: {w}" for w in report.get("warnings", [])),
    ]


def raise_fd_limit() -> tuple[int, int]:
    """As many open files as allowed (inherited by the server and the load generators); the (soft, hard) limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- accounts and chats over HTTP -----------------------------------------------------------------


async def bounded_gather(concurrency: int, coros: Sequence[Awaitable[Any]]) -> list[Any]:
    limit = asyncio.Semaphore(concurrency)

    async def one(coro: Awaitable[Any]) -> Any:
        async with limit:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def register(session: aiohttp.ClientSession, base: str, count: int, prefix: str = "mb") -> list[dict[str, str]]:
    """`count` users PREFIX_00000...; each one's username, user_id, device_id and token."""

    async def one(i: int) -> dict[str, str]:
        name = f"{prefix}_{i:05d}"
        data = await post(session, f"{base}/api/v1/auth/register", {"username": name, "password": PASSWORD})
        return {
            "username": name,
            "user_id": data["user"]["id"],
            "device_id": data["device_id"],
            "token": data["access_token"],
        }

    return await bounded_gather(HTTP_CONCURRENCY, [one(i) for i in range(count)])


async def create_chat(
    session: aiohttp.ClientSession, base: str, owner: dict[str, str], members: Sequence[dict[str, str]], direct: bool
) -> str:
    body: dict[str, Any] = {"type": "direct", "member_ids": [m["user_id"] for m in members]}
    if not direct:
        body.update({"type": "group", "title": "bench", "encrypted": False})
    data = await post(session, f"{base}/api/v1/chats", body, owner["token"])
    return data["id"]


async def pair_chats(
    session: aiohttp.ClientSession, base: str, accounts: Sequence[dict[str, str]], direct: bool
) -> list[dict[str, Any]]:
    """Accounts taken two by two, sender and receiver, each pair in a chat of its own."""
    owners, others = accounts[0::2], accounts[1::2]
    chat_ids = await bounded_gather(
        HTTP_CONCURRENCY, [create_chat(session, base, s, [r], direct) for s, r in zip(owners, others, strict=True)]
    )
    return [
        {"index": i, "sender": s, "receiver": r, "chat_id": c, "direct": direct}
        for i, (s, r, c) in enumerate(zip(owners, others, chat_ids, strict=True))
    ]


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One benchmark run: its report, problems and warnings, and what it started."""

    args: argparse.Namespace
    report: dict[str, Any]
    tmp: Path
    session: aiohttp.ClientSession
    pg: PostgresDatabases | None
    database_url: str | None = None  # the run's fresh Postgres database, once a server needed it
    servers: list[ServerProcess] = field(default_factory=list)
    workers: list[LoadGen] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    async def server(
        self,
        env: Iterable[tuple[str, str]] = (),
        data_dir: Path | None = None,
        log_per_port: bool = True,
        database_url: str | None = None,
    ) -> ServerProcess:
        """Spawn `sup run` and wait until it is healthy: in TMP/data and on the run's database unless told."""
        if database_url is None and self.pg:
            if self.database_url is None:
                self.database_url = await self.pg.create()
            database_url = self.database_url
        server = spawn_server(self.args.python, data_dir or self.tmp / "data", database_url, env, log_per_port)
        self.servers.append(server)
        await wait_healthy(server, self.session)
        return server

    async def load_generators(self, count: int) -> list[LoadGen]:
        workers = [LoadGen(i) for i in range(count)]
        self.workers += workers
        await asyncio.gather(*(w.start() for w in workers))
        return workers

    async def stop(self, server: ServerProcess, what: str = "server") -> dict[str, Any]:
        """SIGTERM; a problem unless it exits 0 in time."""
        stopped = await stop_server(server)
        if not stopped["ok"]:
            self.problems.append(f"{what} did not exit 0 within 10 s of SIGTERM: {stopped}")
        return stopped

    def take(self, run: Run) -> None:
        """The problems and warnings of a phases.Run on this run's servers."""
        self.problems += run.problems
        self.warnings += run.warnings

    async def close(self, what: str = "the server") -> list[str]:
        """Stop the load generators and kill the servers still running; their logs' problem lines (a problem if any)."""
        for w in self.workers:
            await asyncio.to_thread(w.stop)
        bad: list[str] = []
        for server in self.servers:
            kill_server(server)
            bad += log_problems(server)
        if bad:
            self.problems.append(f"{what} logged {len(bad)} ERROR/WARNING/Traceback lines (see server_log_problems)")
        self.workers.clear()
        self.servers.clear()
        return bad[:40]

    async def _cleanup(self) -> None:
        started_any = bool(self.servers)
        bad = await self.close()
        if started_any:
            self.report["server_log_problems"] = bad
        if self.pg:
            await self.pg.drop_all()

    def finish(self) -> dict[str, Any]:
        """The report with its verdict and run time."""
        return report_tail(self.report, self.problems, self.warnings, self.started)


@contextlib.asynccontextmanager
async def bench_run(
    name: str,
    args: argparse.Namespace,
    config: dict[str, Any],
    budget_s: float,
    session_timeout_s: float = 60.0,
    software: dict[str, Any] | None = None,
) -> AsyncIterator[Bench]:
    """A run of benchmark NAME within budget_s: cleaned up on the way out, its report from bench.finish() after."""
    report = report_head(name, database_of(args), software or software_info(args.python), config)
    pg = PostgresDatabases(args.database_url) if database_of(args) == "postgres" else None
    with tempfile.TemporaryDirectory(prefix=f"sup-bench-{name}-") as tmp:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=session_timeout_s)) as session:
            bench = Bench(args, report, Path(tmp), session, pg)
            try:
                async with asyncio.timeout(budget_s):
                    yield bench
            finally:
                await bench._cleanup()
