"""Foundation benchmark: start-up, idle memory, login throughput and event-loop health of `sup run`.

Everything runs against a real `python -m sup run` subprocess on a free loopback port, with a fresh
temporary data directory (SQLite by default; with --database-url postgresql://... a fresh Postgres
database is created for the run and dropped afterwards):

a. cold start to healthy: spawn -> first `GET /health` 200, on fresh data dirs (migrations and
   secret generation included), repeated; plus a few warm starts on an initialised data dir;
b. idle RSS of the server process (VmRSS from /proc/PID/status) after ~2 s idle;
c. login throughput: register K users, then N logins at concurrency C;
d. `GET /health` latency, sampled sequentially from a separate process, while 50 logins run in
   parallel (argon2 hashing must not stall the event loop);
e. graceful shutdown: SIGTERM, the process must exit 0 within 10 s.

Usage (from the project root):

    .venv/bin/python bench/foundation.py [--json-out PATH] [--database-url URL] [--logins N] [--concurrency C]

A human-readable summary is printed; every figure is written as JSON to --json-out
(default bench/reports/foundation-<database>.json). Exit status: 0 when every request succeeded and
every server stopped cleanly, 1 otherwise, 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import math
import multiprocessing
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent

HOST = "127.0.0.1"
READY_RE = re.compile(r"ready in (\d+(?:\.\d+)?) ms")
HEALTH_POLL_S = 0.005  # cold start: poll /health this often
START_TIMEOUT_S = 30.0  # a server that is not healthy by then counts as failed
STOP_TIMEOUT_S = 10.0  # SIGTERM -> exit must take at most this long
IDLE_S = 2.0  # idle time before RSS is read
HEALTH_BASELINE_S = 1.0  # idle /health sampling, for comparison with the under-load figures
PROBE_MAX_S = 60.0  # hard bound of one health-probe run
PROBE_MAX_SAMPLES = 1_000_000
OTHER_LOAD_WARN_PCT = 5.0  # warn when other processes used more of the host's CPU than this
TOTAL_BUDGET_S = 115.0  # the whole benchmark is cut off after this
REQUEST_TIMEOUT_S = 60.0
PASSWORD = "bench-password-0123456789"
STALL_THRESHOLDS_MS = (10, 50, 100, 250)
LOG_PROBLEMS = ("ERROR", "WARNING", "Traceback", "CRITICAL")  # a server log line with one of these is a problem


class BenchError(Exception):
    """The benchmark could not run (server did not start, database not reachable, ...)."""


# -- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of values (any order); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """count/min/p50/p90/p99/p99.9/max/mean of durations given in seconds, in milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    if not ms:
        return {"count": 0}
    return {
        "count": len(ms),
        "min_ms": round(ms[0], 3),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "p999_ms": round(percentile(ms, 99.9), 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def min_median_max(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
        "all": [round(v, 1) for v in values],
    }


# -- the server process -------------------------------------------------------------------------


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    log_path: Path
    spawned_at: float  # time.perf_counter() just before the spawn
    database_url: str | None
    healthy_ms: float | None = None  # spawn -> first GET /health 200

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def report_env(database_url: str | None) -> dict[str, str]:
    """server_env() as the reports show it: the benchmark's own settings, and which database."""
    return {
        "SUP_RATELIMIT_ENABLED": "false",
        "SUP_DATABASE_URL": "<fresh database>" if database_url else "(unset: SQLite at <data_dir>/sup.db)",
    }


def server_env(database_url: str | None) -> dict[str, str]:
    """The parent environment without any SUP_* setting, plus the benchmark's own settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUP_")}
    env["SUP_RATELIMIT_ENABLED"] = "false"
    if database_url:
        env["SUP_DATABASE_URL"] = database_url
    return env


def spawn_server(
    python: str,
    data_dir: Path,
    database_url: str | None,
    extra_env: Iterable[tuple[str, str]] = (),
    log_per_port: bool = False,
) -> ServerProcess:
    """Start `python -m sup run` directly (no shell, so the PID is the server's own).

    extra_env: SUP_* settings on top of server_env(); log_per_port: name the log after the port too, so
    that a server restarted on the same data dir does not overwrite the log of the one before."""
    port = free_port()
    log_path = data_dir.with_name(data_dir.name + (f"-{port}.log" if log_per_port else ".log"))
    cmd = [python, "-m", "sup", "run", "--data-dir", str(data_dir), "--host", HOST, "--port", str(port)]
    with open(log_path, "wb") as log:
        spawned_at = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**server_env(database_url), **dict(extra_env)},
            cwd=data_dir.parent,  # never pick up a ./sup.toml of the caller
        )
    return ServerProcess(proc, port, data_dir, log_path, spawned_at, database_url)


def read_log(server: ServerProcess) -> str:
    try:
        return server.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def log_problems(server: ServerProcess) -> list[str]:
    """The lines of the server's log that say something went wrong."""
    return [line for line in read_log(server).splitlines() if any(w in line for w in LOG_PROBLEMS)]


def log_tail(server: ServerProcess, lines: int = 30) -> str:
    return "\n".join(read_log(server).splitlines()[-lines:])


def logged_ready_ms(server: ServerProcess) -> float | None:
    """The 'ready in N ms' the server logged, or None."""
    match = READY_RE.search(read_log(server))
    return float(match.group(1)) if match else None


async def wait_healthy(server: ServerProcess, session: aiohttp.ClientSession) -> float:
    """Seconds from spawn until GET /health answered 200 (polled every HEALTH_POLL_S)."""
    url = f"{server.base_url}/health"
    deadline = server.spawned_at + START_TIMEOUT_S
    while time.perf_counter() < deadline:
        if server.proc.poll() is not None:
            raise BenchError(f"server exited with status {server.proc.returncode} during start-up:\n{log_tail(server)}")
        try:
            async with session.get(url) as resp:
                await resp.read()
                if resp.status == 200:
                    elapsed = time.perf_counter() - server.spawned_at
                    server.healthy_ms = elapsed * 1000
                    return elapsed
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        await asyncio.sleep(HEALTH_POLL_S)
    raise BenchError(f"server not healthy within {START_TIMEOUT_S:.0f} s:\n{log_tail(server)}")


async def wait_logged_ready(server: ServerProcess) -> float | None:
    """The 'ready in' log line is written before the first request is served; allow 1 s anyway."""
    for _ in range(100):
        value = logged_ready_ms(server)
        if value is not None:
            return value
        await asyncio.sleep(0.01)
    return None


async def stop_server(server: ServerProcess) -> dict[str, Any]:
    """SIGTERM, then wait up to STOP_TIMEOUT_S for the exit; kill it if it does not exit."""
    started = time.perf_counter()
    server.proc.send_signal(signal.SIGTERM)
    try:
        code = await asyncio.to_thread(server.proc.wait, STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        await asyncio.to_thread(server.proc.wait, 5)
        return {"exit_code": None, "shutdown_ms": None, "killed": True, "ok": False}
    elapsed_ms = (time.perf_counter() - started) * 1000
    return {
        "exit_code": code,
        "shutdown_ms": round(elapsed_ms, 1),
        "killed": False,
        "logged_stopped": " stopped" in read_log(server),
        "ok": code == 0,
    }


def kill_server(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(5)


# -- /proc --------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def memory_mib(pid: int) -> dict[str, Any]:
    """VmRSS and VmHWM (peak RSS) of pid in MiB, and its thread count."""
    status = proc_status(pid)

    def mib(key: str) -> float:
        return round(int(status[key].split()[0]) / 1024, 1)  # reported in kB

    return {"rss_mib": mib("VmRSS"), "peak_rss_mib": mib("VmHWM"), "threads": int(status["Threads"])}


def stat_cpu_seconds(stat: str, tick: int) -> float:
    """User + system CPU seconds from the text of a /proc/PID/stat or /proc/PID/task/TID/stat file."""
    fields = stat.rsplit(")", 1)[1].split()  # after the name, which may contain spaces and ')'
    return (int(fields[11]) + int(fields[12])) / tick


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by pid (all of its threads)."""
    with open(f"/proc/{pid}/stat") as fh:
        stat = fh.read()
    return stat_cpu_seconds(stat, os.sysconf("SC_CLK_TCK"))


def host_cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of the whole machine (all CPUs), from the first line of /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already part of user
    return total - idle, total


def host_cpu_since(before: tuple[int, int]) -> tuple[float, float]:
    """(busy, capacity) CPU seconds of the whole machine since the host_cpu_times() reading `before`."""
    busy, total = host_cpu_times()
    tick = os.sysconf("SC_CLK_TCK")
    return (busy - before[0]) / tick, (total - before[1]) / tick


def process_cpu_snapshot() -> dict[int, tuple[str, float]]:
    """{pid: (name, cpu seconds)} of every process on the machine that can be read."""
    snapshot = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        snapshot[int(entry)] = (name, stat_cpu_seconds(stat, tick))
    return snapshot


def cpu_by_name(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], labels: dict[int, str]
) -> Counter[str]:
    """CPU seconds used between two snapshots, summed by process name (or labels[pid])."""
    used: Counter[str] = Counter()
    for pid, (name, seconds) in after.items():
        delta = seconds - before.get(pid, (name, 0.0))[1]
        if delta > 0:
            used[labels.get(pid, name)] += delta
    return used


# Processes that belong to the system under test; any other CPU use is load from elsewhere on the host.
OWN_PROCESSES = ("sup server", "bench client", "health probe", "postgres")


class CpuWatch:
    """CPU used between construction and result(): by the server, by process name, and by the host.

    Processes that start and exit inside the window are invisible to the per-process figures but
    not to the host total, so `other_cpu_s` (host busy minus the benchmark's own processes) also
    counts them: it is the load on the host that is not this benchmark.
    """

    def __init__(self, server_pid: int, labels: dict[int, str]) -> None:
        self.server_pid = server_pid
        self.labels = {server_pid: "sup server", os.getpid(): "bench client", **labels}
        self.processes = process_cpu_snapshot()
        self.server = cpu_seconds(server_pid)
        self.host = host_cpu_times()
        self.started = time.perf_counter()

    def result(self) -> dict[str, Any]:
        """Call while every labelled process is still alive."""
        elapsed = time.perf_counter() - self.started
        server = cpu_seconds(self.server_pid) - self.server
        by_name = cpu_by_name(self.processes, process_cpu_snapshot(), self.labels)
        host_busy_s, capacity_s = host_cpu_since(self.host)
        own = sum(by_name[name] for name in OWN_PROCESSES)
        other = max(0.0, host_busy_s - own)
        return {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(server, 2),
            "server_cpu_pct_of_one_cpu": round(100 * server / elapsed, 1) if elapsed else 0.0,
            "host_cpu_busy_pct": round(100 * host_busy_s / capacity_s, 1) if capacity_s else 0.0,
            "host_cpu_busy_s": round(host_busy_s, 2),
            "other_cpu_s": round(other, 2),
            "other_cpu_pct_of_host": round(100 * other / capacity_s, 1) if capacity_s else 0.0,
            "cpu_s_by_process": {name: round(sec, 2) for name, sec in by_name.most_common(6)},
        }


def describe_process(pid: int) -> dict[str, Any]:
    """What is running under pid, to prove it is the Python server and not a wrapper."""
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        argv = [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    status = proc_status(pid)
    return {"pid": pid, "exe": os.readlink(f"/proc/{pid}/exe"), "argv": argv, "name": status.get("Name")}


# -- /health sampler (a separate process, so the client never competes with the load's loop) ---


def get_health(client: http.client.HTTPConnection) -> bool:
    """GET /health; whether it answered 200."""
    client.request("GET", "/health")
    response = client.getresponse()
    response.read()
    return response.status == 200


def sampling_process(
    port: int,
    request: Callable[[http.client.HTTPConnection], bool],
    max_seconds: float,
    max_samples: int,
    conn: Connection,
) -> None:
    """Child process: request(client) on one keep-alive connection, one at a time, until told to stop."""
    client = http.client.HTTPConnection(HOST, port, timeout=30)
    request(client)  # connect and warm up before the clock starts
    conn.send("ready")
    if conn.recv() != "go":
        return
    samples: list[float] = []
    errors = 0
    started = time.monotonic()
    stopped_by = "stop"
    while not conn.poll():
        if len(samples) + errors >= max_samples:
            stopped_by = "max_samples"
            break
        if time.monotonic() - started > max_seconds:
            stopped_by = "max_seconds"
            break
        t0 = time.perf_counter()
        try:
            ok = request(client)
        except (OSError, http.client.HTTPException):
            ok = False
            client.close()
            client = http.client.HTTPConnection(HOST, port, timeout=30)
        elapsed = time.perf_counter() - t0
        if ok:
            samples.append(elapsed)
        else:
            errors += 1
    duration = time.monotonic() - started
    client.close()
    conn.send({"samples": samples, "errors": errors, "duration_s": duration, "stopped_by": stopped_by})


class SamplerProcess:
    """Parent side of a sampling child process: target(*args, conn) says "ready", samples after "go" until "stop"."""

    def __init__(self, what: str, target: Callable[..., None], *args: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._what = what
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(*args, child), daemon=True)

    def _recv(self, timeout: float) -> Any:
        if not self._conn.poll(timeout):
            raise BenchError(f"the {self._what} process did not answer")
        return self._conn.recv()

    async def start(self) -> None:
        """Start the process; returns once it is connected and waiting for go()."""
        self._proc.start()
        if await asyncio.to_thread(self._recv, 30) != "ready":
            raise BenchError(f"the {self._what} process did not start")

    @property
    def pid(self) -> int:
        return self._proc.pid or 0


class HealthProbe(SamplerProcess):
    """GET /health, sampled from a process of its own."""

    def __init__(self, port: int) -> None:
        super().__init__("health probe", sampling_process, port, get_health, PROBE_MAX_S, PROBE_MAX_SAMPLES)

    def go(self) -> None:
        self._conn.send("go")

    async def stop(self) -> dict[str, Any]:
        self._conn.send("stop")
        result = await asyncio.to_thread(self._recv, 30)
        await asyncio.to_thread(self._proc.join, 10)
        samples = result["samples"]
        summary = summarize_ms(samples)
        summary["errors"] = result["errors"]
        summary["duration_s"] = round(result["duration_s"], 3)
        summary["samples_per_s"] = round(len(samples) / result["duration_s"], 1) if samples else 0.0
        summary["stopped_by"] = result["stopped_by"]
        summary["over_ms"] = {str(t): sum(1 for s in samples if s * 1000 > t) for t in STALL_THRESHOLDS_MS}
        return summary

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)


# -- HTTP load ----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    requested: int
    concurrency: int
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    expected_status: int = 200

    @property
    def succeeded(self) -> int:
        return self.statuses[self.expected_status]

    @property
    def failed(self) -> int:
        return self.requested - self.succeeded

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requested,
            "concurrency": self.concurrency,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "client_errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 3),
            "requests_per_s": round(self.requested / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency": summarize_ms(self.latencies),
        }


async def post_json_load(
    session: aiohttp.ClientSession,
    url: str,
    bodies: Sequence[dict[str, Any]],
    concurrency: int,
    expected_status: int,
    all_issued: asyncio.Event | None = None,
) -> LoadResult:
    """POST each body once, `concurrency` at a time; all_issued is set when the last one is sent."""
    result = LoadResult(len(bodies), concurrency, expected_status=expected_status)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(bodies):
            body = bodies[next_index]
            next_index += 1
            if next_index == len(bodies) and all_issued is not None:
                all_issued.set()
            started = time.perf_counter()
            try:
                async with session.post(url, json=body) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                result.errors[type(exc).__name__] += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.statuses[status] += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(bodies))))))
    finally:
        if all_issued is not None:
            all_issued.set()
    result.elapsed_s = time.perf_counter() - started
    return result


async def post(session: aiohttp.ClientSession, url: str, body: dict[str, Any], token: str | None = None) -> Any:
    """POST a JSON body (as the bearer of token, if given); the decoded answer, BenchError unless 200/201."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.post(url, json=body, headers=headers) as resp:
        data = await resp.read()
        if resp.status not in (200, 201):
            raise BenchError(f"POST {url} -> {resp.status}: {data[:300]!r}")
        return json.loads(data)


def client_session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(concurrency, 1) + 10),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


def usernames(count: int) -> list[str]:
    return [f"bench_user_{i:05d}" for i in range(count)]


def login_bodies(users: Sequence[str], count: int) -> list[dict[str, Any]]:
    return [{"username": users[i % len(users)], "password": PASSWORD} for i in range(count)]


# -- Postgres -----------------------------------------------------------------------------------


class PostgresDatabases:
    """Creates fresh databases next to the one named by admin_url, and drops them again."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    async def _connect(self) -> Any:
        import asyncpg

        try:
            return await asyncpg.connect(self.admin_url, timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(f"cannot connect to {self.admin_url}: {exc}") from exc

    async def _execute(self, sql: str) -> None:
        conn = await self._connect()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def server_version(self) -> str:
        conn = await self._connect()
        try:
            return str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()

    async def analyze(self, url: str) -> None:
        """ANALYZE the run's database, as autovacuum does on a server that has run a while: the new
        statistics also invalidate the plans Postgres cached while the tables were empty."""
        import asyncpg

        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    async def commits(self, url: str) -> int:
        """Transactions committed in the database so far (pg_stat_database; its counters lag by up to ~1 s)."""
        conn = await self._connect()
        try:
            name = urlsplit(url).path.lstrip("/")
            return int(await conn.fetchval("SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name) or 0)
        finally:
            await conn.close()

    async def create(self) -> str:
        """CREATE DATABASE sup_bench_<random>; returns its URL."""
        name = f"sup_bench_{secrets.token_hex(6)}"
        await self._execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlunsplit(urlsplit(self.admin_url)._replace(path=f"/{name}"))

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        if name in self.created:
            await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.created.remove(name)

    async def drop_all(self) -> None:
        for name in list(self.created):
            with contextlib.suppress(BenchError, OSError):
                await self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.created.remove(name)


# -- context ------------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_total = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
    }


def software_info(python: str) -> dict[str, Any]:
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_DIR, capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        dirty = bool(changes.strip())
    return {
        "server_python": python,
        "sup": _version("sup-messenger"),
        "git_commit": commit,
        "git_dirty": dirty,  # tracked files modified since that commit
        "aiohttp": _version("aiohttp"),
        "uvloop": _version("uvloop"),
        "argon2_cffi": _version("argon2-cffi"),
        "aiosqlite": _version("aiosqlite"),
        "asyncpg": _version("asyncpg"),
    }


def working_tree() -> dict[str, Any]:
    """Uncommitted changes to the server's code at the time of the run: which files, and a digest of the diff."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "sup", "migrations"], cwd=PROJECT_DIR, capture_output=True, check=True
        ).stdout
        names = subprocess.run(
            ["git", "status", "--porcelain", "--", "sup", "migrations"],
            cwd=PROJECT_DIR,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {"changed": names.split("\n")[:-1], "diff_sha256": hashlib.sha256(diff).hexdigest() if diff else None}


def report_head(benchmark: str, database: str, software: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """The first keys of every benchmark's report: what ran, when, where, with which software and settings."""
    return {
        "benchmark": benchmark,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": database,
        "machine": machine_info(),
        "software": software,
        "config": config,
    }


def report_tail(report: dict[str, Any], problems: list[str], warnings: list[str], started: float) -> dict[str, Any]:
    """The last keys of every benchmark's report: the verdict, and the run time since perf_counter() `started`."""
    report["problems"] = problems
    report["warnings"] = warnings
    report["ok"] = not problems
    report["bench_runtime_s"] = round(time.perf_counter() - started, 1)
    return report


def config_info(args: argparse.Namespace, database: str) -> dict[str, Any]:
    from sup.config import Config

    defaults = Config()
    auth, db = defaults.auth, defaults.database
    return {
        "database": database,
        "env": report_env(args.database_url),
        "argon2": {
            "memory_kib": auth.argon2_memory_kib,
            "time_cost": auth.argon2_time_cost,
            "parallelism": auth.argon2_parallelism,
            "hash_workers": auth.hash_workers or os.cpu_count(),
            "hash_workers_setting": auth.hash_workers,
        },
        "sqlite_synchronous": db.sqlite_synchronous,
        "sqlite_readers": db.sqlite_readers,
        "pg_pool": [db.pool_min, db.pool_max],
        "access_log": defaults.logging.access_log,
        "log_level": defaults.logging.level,
        "cold_starts": args.starts,
        "warm_starts": args.warm_starts,
        "users": args.users,
        "logins": args.logins,
        "concurrency": args.concurrency,
        "probe_logins": args.probe_logins,
        "probe_concurrency": args.probe_concurrency,
        "idle_s": IDLE_S,
        "health_poll_ms": HEALTH_POLL_S * 1000,
    }


# -- the benchmark ------------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    pg: PostgresDatabases | None
    running: list[ServerProcess] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check_other_load(self, what: str, cpu: dict[str, Any]) -> None:
        if cpu["other_cpu_pct_of_host"] > OTHER_LOAD_WARN_PCT:
            self.warnings.append(
                f"{what}: {cpu['other_cpu_pct_of_host']}% of the host's CPU went to processes that are not "
                f"this benchmark ({cpu['other_cpu_s']} CPU s); its figures are lower than on a quiet host"
            )

    counter: int = 0

    async def start(self, session: aiohttp.ClientSession) -> ServerProcess:
        """Spawn a server on a fresh data dir (and fresh database) and wait until it is healthy."""
        self.counter += 1
        data_dir = self.tmp / f"data-{self.counter}"  # not created: the server creates it
        database_url = await self.pg.create() if self.pg else None
        server = spawn_server(self.args.python, data_dir, database_url, self.args.server_env)
        self.running.append(server)
        await wait_healthy(server, session)
        return server

    async def stop(self, server: ServerProcess, what: str) -> dict[str, Any]:
        result = await stop_server(server)
        if not result["ok"]:
            self.problems.append(f"{what}: server did not exit 0 within {STOP_TIMEOUT_S:.0f} s: {result}")
        self.running.remove(server)
        return result

    def cleanup(self) -> None:
        for server in self.running:
            kill_server(server)
        self.running.clear()


async def measure_starts(run: Run, session: aiohttp.ClientSession) -> dict[str, Any]:
    """a. cold starts on fresh data dirs, then warm starts on the last one."""
    cold_ms: list[float] = []
    cold_logged: list[float] = []
    cold_overhead: list[float] = []  # healthy - logged: interpreter start, imports, config, first poll
    shutdown_ms: list[float] = []
    last: ServerProcess | None = None
    for i in range(run.args.starts):
        server = await run.start(session)
        cold_ms.append(_healthy_ms(server))
        logged = await wait_logged_ready(server)
        if logged is not None:
            cold_logged.append(logged)
            cold_overhead.append(cold_ms[-1] - logged)
        stop = await run.stop(server, f"cold start {i + 1}")
        if stop["shutdown_ms"] is not None:
            shutdown_ms.append(stop["shutdown_ms"])
        if last is not None and run.pg and last.database_url:
            await run.pg.drop(last.database_url)
        last = server

    warm_ms: list[float] = []
    warm_logged: list[float] = []
    if last is not None:
        for i in range(run.args.warm_starts):
            server = spawn_server(run.args.python, last.data_dir, last.database_url, run.args.server_env)
            run.running.append(server)
            await wait_healthy(server, session)
            warm_ms.append(_healthy_ms(server))
            logged = await wait_logged_ready(server)
            if logged is not None:
                warm_logged.append(logged)
            stop = await run.stop(server, f"warm start {i + 1}")
            if stop["shutdown_ms"] is not None:
                shutdown_ms.append(stop["shutdown_ms"])
        if run.pg and last.database_url:
            await run.pg.drop(last.database_url)
    return {
        "cold_start_to_healthy_ms": min_median_max(cold_ms),
        "cold_logged_ready_ms": min_median_max(cold_logged),
        "cold_unlogged_overhead_ms": min_median_max(cold_overhead),
        "warm_start_to_healthy_ms": min_median_max(warm_ms),
        "warm_logged_ready_ms": min_median_max(warm_logged),
        "shutdown_ms": min_median_max(shutdown_ms),
    }


def _healthy_ms(server: ServerProcess) -> float:
    assert server.healthy_ms is not None
    return server.healthy_ms


async def measure_main(run: Run, session: aiohttp.ClientSession) -> dict[str, Any]:
    """b-e on one fresh server."""
    args = run.args
    report: dict[str, Any] = {}
    server = await run.start(session)
    report["start_to_healthy_ms"] = round(_healthy_ms(server), 1)
    report["logged_ready_ms"] = await wait_logged_ready(server)
    report["server_process"] = describe_process(server.pid)
    argv = report["server_process"]["argv"]
    if argv[1:4] != ["-m", "sup", "run"]:
        run.problems.append(f"the measured PID {server.pid} is not `python -m sup run`: {argv}")

    # b. idle RSS
    await asyncio.sleep(IDLE_S)
    report["idle_memory"] = memory_mib(server.pid)

    # idle /health baseline
    probe = HealthProbe(server.port)
    try:
        await probe.start()
        probe.go()
        await asyncio.sleep(HEALTH_BASELINE_S)
        report["health_idle"] = await probe.stop()
    finally:
        probe.kill()

    # c. register K users, then N logins at concurrency C
    users = usernames(args.users)
    async with client_session(args.concurrency) as load_session:
        register = await post_json_load(
            load_session,
            f"{server.base_url}/api/v1/auth/register",
            [{"username": u, "password": PASSWORD} for u in users],
            args.concurrency,
            expected_status=201,
        )
        report["registration"] = register.summary()
        if register.failed:
            run.problems.append(f"registration: {register.failed} of {register.requested} failed")

        cpu = CpuWatch(server.pid, {})
        logins = await post_json_load(
            load_session,
            f"{server.base_url}/api/v1/auth/login",
            login_bodies(users, args.logins),
            args.concurrency,
            expected_status=200,
        )
        report["login_throughput"] = throughput = logins.summary()
        throughput["cpu"] = cpu.result()
        run.check_other_load("login throughput", throughput["cpu"])
        throughput["server_cpu_ms_per_login"] = round(throughput["cpu"]["server_cpu_s"] * 1000 / args.logins, 2)
        if logins.failed:
            run.problems.append(f"login throughput: {logins.failed} of {logins.requested} logins failed")

    # d. /health while probe_concurrency logins run in parallel
    async with client_session(args.probe_concurrency) as load_session:
        probe = HealthProbe(server.port)
        try:
            await probe.start()
            all_issued = asyncio.Event()
            cpu = CpuWatch(server.pid, {probe.pid: "health probe"})
            probe.go()
            load = asyncio.create_task(
                post_json_load(
                    load_session,
                    f"{server.base_url}/api/v1/auth/login",
                    login_bodies(users, args.probe_logins),
                    args.probe_concurrency,
                    expected_status=200,
                    all_issued=all_issued,
                )
            )
            # Sample only while the load is at full concurrency: stop when the last login is sent.
            await all_issued.wait()
            cpu_used = cpu.result()  # before stop(): the probe's CPU is gone once it has exited
            health = await probe.stop()
            health["cpu"] = cpu_used
            loaded = await load
        finally:
            probe.kill()
    report["health_during_logins"] = health
    run.check_other_load("health during logins", health["cpu"])
    report["logins_during_health_probe"] = loaded.summary()
    if loaded.failed:
        run.problems.append(f"logins during the health probe: {loaded.failed} of {loaded.requested} failed")
    if health["errors"]:
        run.problems.append(f"GET /health failed {health['errors']} times during logins")

    report["memory_after_load"] = memory_mib(server.pid)

    # e. graceful shutdown
    report["shutdown"] = await run.stop(server, "main server")
    report["log_excerpt"] = [
        line for line in read_log(server).splitlines() if " sup: " in line or "ERROR" in line or "Traceback" in line
    ][:40]
    if run.pg and server.database_url:
        await run.pg.drop(server.database_url)
    return report


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    database = "postgres" if args.database_url else "sqlite"
    pg = PostgresDatabases(args.database_url) if args.database_url else None
    report = report_head("foundation", database, software_info(args.python), config_info(args, database))
    if pg:
        report["software"]["postgres"] = await pg.server_version()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sup-bench-") as tmp:
        run = Run(args, Path(tmp), pg)
        try:
            async with asyncio.timeout(TOTAL_BUDGET_S):
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as poll_session:
                    report["starts"] = await measure_starts(run, poll_session)
                    report.update(await measure_main(run, poll_session))
        finally:
            run.cleanup()
            if pg:
                await pg.drop_all()
    return report_tail(report, run.problems, run.warnings, started)


# -- output -------------------------------------------------------------------------------------


def _mmm(figures: dict[str, Any], unit: str = "ms") -> str:
    if not figures.get("count"):
        return "n/a"
    return f"min {figures['min']} / median {figures['median']} / max {figures['max']} {unit} (n={figures['count']})"


def format_latency(figures: dict[str, Any]) -> str:
    """p50 / p99 / max of a summarize_ms() result, for the summaries."""
    if not figures.get("count"):
        return "n/a"
    return (
        f"p50 {figures['p50_ms']:.2f} / p99 {figures['p99_ms']:.2f} / max {figures['max_ms']:.2f} ms "
        f"(n={figures['count']})"
    )


def summary_end(report: dict[str, Any]) -> list[str]:
    """The last lines of every benchmark's summary: warnings, run time, the verdict and its problems."""
    return [
        *(f"WARNING: {w}" for w in report.get("warnings", [])),
        "",
        f"benchmark runtime {report.get('bench_runtime_s')} s; "
        + ("OK" if report.get("ok") else "PROBLEMS:\n  " + "\n  ".join(report.get("problems", []))),
    ]


def format_cpu(figures: dict[str, Any], cpus: int) -> str:
    """Where a CpuWatch saw the host's CPU go, for the summaries."""
    return (
        f"CPU: server {figures['server_cpu_pct_of_one_cpu']}% of one CPU; "
        f"host {figures['host_cpu_busy_pct']}% of {cpus} CPUs busy, "
        f"{figures['other_cpu_pct_of_host']}% of it by other load; "
        f"CPU s by process: {figures['cpu_s_by_process']}"
    )


def format_summary(report: dict[str, Any]) -> str:
    """The human-readable summary of a report."""
    m, sw, cfg = report["machine"], report["software"], report["config"]
    starts = report["starts"]
    a2 = cfg["argon2"]
    lines = [
        f"SUP foundation benchmark - database: {report['database']}"
        + (f" (PostgreSQL {sw['postgres']})" if sw.get("postgres") else ""),
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"{m['platform']}",
        f"sup {sw['sup']} @ {(sw['git_commit'] or '?')[:12]}, aiohttp {sw['aiohttp']}, "
        f"uvloop {sw['uvloop']}, "
        f"argon2id m={a2['memory_kib']} KiB t={a2['time_cost']} p={a2['parallelism']} "
        f"workers={a2['hash_workers']}",
        "",
        "a. start to healthy (spawn -> GET /health 200)",
        f"   cold (fresh data dir): {_mmm(starts['cold_start_to_healthy_ms'])}",
        f"   cold, server-logged 'ready in': {_mmm(starts['cold_logged_ready_ms'])}",
        f"   cold, before serve() (interpreter, imports, config): {_mmm(starts['cold_unlogged_overhead_ms'])}",
        f"   warm (existing data dir): {_mmm(starts['warm_start_to_healthy_ms'])}",
        f"   warm, server-logged 'ready in': {_mmm(starts['warm_logged_ready_ms'])}",
    ]
    if "idle_memory" in report:
        idle, after = report["idle_memory"], report["memory_after_load"]
        reg, log_c = report["registration"], report["login_throughput"]
        hi, hl = report["health_idle"], report["health_during_logins"]
        loaded, stop = report["logins_during_health_probe"], report["shutdown"]
        proc = report["server_process"]
        lines += [
            "",
            f"b. idle RSS after {IDLE_S:.0f} s: {idle['rss_mib']} MiB ({idle['threads']} threads; "
            f"PID {proc['pid']}: {' '.join(proc['argv'][:4])})",
            f"   after the login load: RSS {after['rss_mib']} MiB, peak {after['peak_rss_mib']} MiB",
            "",
            f"c. registration: {reg['requests']} users in {reg['elapsed_s']} s = {reg['requests_per_s']} /s, "
            f"failed {reg['failed']}",
            f"   logins: {log_c['requests']} at concurrency {log_c['concurrency']}: "
            f"{log_c['requests_per_s']} req/s, latency {format_latency(log_c['latency'])}",
            f"   failed {log_c['failed']} (statuses {log_c['statuses']}, "
            f"client errors {log_c['client_errors']}); "
            f"server CPU {log_c['server_cpu_ms_per_login']} ms/login",
            f"   {format_cpu(log_c['cpu'], m['cpu_count'])}",
            "",
            f"d. GET /health, sequential, idle: {format_latency(hi)}",
            f"   while {loaded['concurrency']} logins run in parallel: {format_latency(hl)}",
            f"   samples over 10/50/100/250 ms: {'/'.join(str(v) for v in hl['over_ms'].values())}; "
            f"errors {hl['errors']}; {hl['samples_per_s']} samples/s over {hl['duration_s']} s",
            f"   those logins: {loaded['requests_per_s']} req/s, latency {format_latency(loaded['latency'])}, "
            f"failed {loaded['failed']}",
            f"   {format_cpu(hl['cpu'], m['cpu_count'])}",
            "",
            f"e. SIGTERM -> exit {stop['exit_code']} in {stop['shutdown_ms']} ms "
            f"(other starts: {_mmm(starts['shutdown_ms'])})",
        ]
    lines += summary_end(report)
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------------


def add_database_url(
    p: argparse.ArgumentParser,
    text: str = "postgresql://host:port/db to benchmark Postgres: connected to only to CREATE and DROP a fresh "
    "database for the run (default: SQLite in the data dir)",
) -> None:
    """The --database-url option of every benchmark (text: its help); check_database_url() after parsing."""
    p.add_argument("--database-url", help=text)


def check_database_url(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exits through p.error() unless --database-url is absent or a Postgres URL."""
    if args.database_url and not args.database_url.startswith(("postgresql://", "postgres://")):
        p.error("--database-url must be a postgresql:// URL (SQLite is the default)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--json-out", type=Path, help="JSON report (default bench/reports/foundation-<database>.json)")
    add_database_url(p)
    p.add_argument("--logins", type=int, default=500, help="logins for the throughput figure (default 500)")
    p.add_argument("--concurrency", type=int, default=50, help="logins in flight (default 50)")
    p.add_argument("--users", type=int, default=50, help="users registered first (default 50)")
    p.add_argument("--starts", type=int, default=5, help="cold starts on fresh data dirs (default 5)")
    p.add_argument("--warm-starts", type=int, default=3, help="starts on an initialised data dir (default 3)")
    p.add_argument("--probe-logins", type=int, default=500, help="logins run while /health is sampled (default 500)")
    p.add_argument(
        "--probe-concurrency",
        type=int,
        default=50,
        help="logins in flight while /health is sampled (default 50)",
    )
    p.add_argument("--python", default=sys.executable, help="interpreter that runs `-m sup run` (default: this)")
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        type=lambda text: tuple(text.split("=", 1)),
        metavar="SUP_NAME=VALUE",
        help="a server setting for experiments, repeatable (e.g. SUP_AUTH_HASH_WORKERS=1); the figures are then"
        " not those of the defaults",
    )
    args = p.parse_args(argv)
    check_database_url(p, args)
    for name in ("logins", "concurrency", "users", "starts", "probe_logins", "probe_concurrency"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warm_starts < 0:
        p.error("--warm-starts must not be negative")
    return args


def run_and_report(
    name: str,
    benchmark: Coroutine[Any, Any, dict[str, Any]],
    summary: Callable[[dict[str, Any]], str],
    json_out: Path,
    budget_s: float,
) -> int:
    """Run a benchmark, print its summary, write its JSON report; the exit status (0 ok, 1 problems, 2 failed)."""
    try:
        report = asyncio.run(benchmark)
    except BenchError as exc:
        print(f"{name} benchmark failed: {exc}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"{name} benchmark failed: over its {budget_s:.0f} s budget", file=sys.stderr)
        return 2
    print(summary(report))
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"JSON report: {json_out}")
    return 0 if report["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    database = "postgres" if args.database_url else "sqlite"
    json_out: Path = args.json_out or BENCH_DIR / "reports" / f"foundation-{database}.json"
    return run_and_report("foundation", run_benchmark(args), format_summary, json_out, TOTAL_BUDGET_S)


if __name__ == "__main__":
    sys.exit(main())
