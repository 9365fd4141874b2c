"""Watching the server during the messaging benchmark: CPU by process and thread, memory, py-spy.

CpuWatch splits the CPU of a phase into the server (its event-loop thread and its other threads),
the load generators, the orchestrator, Postgres and other load on the host; rss_kib reads the
server's memory; Profiler runs `py-spy record` on the server and summarize_profile reads its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation import (
    BenchError,
    cpu_by_name,
    cpu_seconds,
    host_cpu_since,
    host_cpu_times,
    proc_status,
    process_cpu_snapshot,
    stat_cpu_seconds,
)

# -- CPU ------------------------------------------------------------------------------------------


def thread_cpu(pid: int) -> dict[int, float]:
    """{tid: cpu seconds} of every thread of pid."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat") as fh:
                out[int(tid)] = stat_cpu_seconds(fh.read(), tick)
    return out


# Processes that belong to the benchmark; any other CPU use is load from elsewhere on the host.
OWN_PROCESSES = ("sup server", "load generators", "bench orchestrator", "postgres", "py-spy")


class CpuWatch:
    """CPU used between construction and result(): server (event-loop thread vs the others), load
    generators, orchestrator, Postgres, and the host as a whole (see foundation.CpuWatch)."""

    def __init__(
        self,
        server_pid: int,
        loadgen_pids: Sequence[int],
        extra: dict[int, str] | None = None,
        pg_database: str | None = None,
    ) -> None:
        self.server_pid = server_pid
        self.labels = {server_pid: "sup server", os.getpid(): "bench orchestrator", **(extra or {})}
        self.labels.update({pid: "load generators" for pid in loadgen_pids})
        self.loadgen_pids = list(loadgen_pids)
        self.pg_database = pg_database
        self.processes = process_cpu_snapshot()
        self.latest = dict(self.processes)  # last CPU time seen of every process, also of those that exited
        self._label_postgres(self.processes)
        self.server = cpu_seconds(server_pid)
        self.threads = thread_cpu(server_pid)
        self.host = host_cpu_times()
        self.started = time.perf_counter()

    def _label_postgres(self, snapshot: dict[int, tuple[str, float]]) -> None:
        """Postgres backends serving other databases (another test run on the host) are other load."""
        for pid, (name, _) in snapshot.items():
            if name != "postgres" or pid in self.labels:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    title = fh.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            # a client backend's title: "postgres: 15/main: <user> <database> <host>(<port>) <state>"
            parts = title.split()
            if len(parts) >= 5 and ("(" in parts[4] or parts[4] == "[local]"):
                own = self.pg_database is not None and parts[3] == self.pg_database
                self.labels[pid] = "postgres" if own else "postgres, other databases"

    def sample(self) -> None:
        snapshot = process_cpu_snapshot()
        self._label_postgres(snapshot)
        self.latest.update(snapshot)

    async def sample_forever(self, interval: float = 0.5) -> None:
        """Processes that exit during the phase (e.g. a Postgres backend the pool replaced) keep the CPU
        time they had at the last sample; without sampling it would count as other load."""
        while True:
            await asyncio.sleep(interval)
            self.sample()

    def result(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        server = cpu_seconds(self.server_pid) - self.server
        threads = thread_cpu(self.server_pid)
        main = min(server, threads.get(self.server_pid, 0.0) - self.threads.get(self.server_pid, 0.0))
        self.sample()
        after = self.latest
        by_name = cpu_by_name(self.processes, after, self.labels)
        per_loadgen = [
            round(after.get(pid, ("", 0.0))[1] - self.processes.get(pid, ("", 0.0))[1], 2) for pid in self.loadgen_pids
        ]
        host_busy_s, capacity_s = host_cpu_since(self.host)
        own = sum(by_name[name] for name in OWN_PROCESSES)
        other = max(0.0, host_busy_s - own)

        def pct(seconds: float) -> float:
            return round(100 * seconds / elapsed, 1) if elapsed else 0.0

        return {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(server, 2),
            "server_pct_of_one_cpu": pct(server),
            "server_event_loop_thread_pct": pct(main),
            "server_other_threads_pct": pct(server - main),
            "load_generators_pct_of_one_cpu": pct(by_name["load generators"]),
            "load_generator_cpu_s_each": per_loadgen,
            "postgres_pct_of_one_cpu": pct(by_name["postgres"]),
            "orchestrator_pct_of_one_cpu": pct(by_name["bench orchestrator"]),
            "host_cpu_busy_pct": round(100 * host_busy_s / capacity_s, 1) if capacity_s else 0.0,
            "other_cpu_pct_of_host": round(100 * other / capacity_s, 1) if capacity_s else 0.0,
            "cpu_s_by_process": {name: round(sec, 2) for name, sec in by_name.most_common(6)},
        }


# -- memory ---------------------------------------------------------------------------------------


def rss_kib(pid: int) -> dict[str, int]:
    """Resident memory of pid in KiB: VmRSS, its peak VmHWM, and VmRSS split into RssAnon, RssFile, RssShmem."""
    keys = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")
    return {key: int(value.split()[0]) for key, value in proc_status(pid).items() if key in keys}


# -- profiling ------------------------------------------------------------------------------------


class Profiler:
    """py-spy record --format raw on the server for the duration of a phase; summarised afterwards."""

    def __init__(self, py_spy: str, pid: int, out: Path, rate_hz: int, options: Sequence[str]) -> None:
        self.out = out
        self.cmd = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate_hz)]
        self.cmd += ["--threads", "--nolineno", "--output", str(out), *options]
        self.proc: asyncio.subprocess.Process | None = None
        self.log = b""

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        await asyncio.sleep(0.5)  # let it attach
        if self.proc.returncode is not None:
            out = await self.proc.stdout.read() if self.proc.stdout else b""
            raise BenchError(f"py-spy exited at once: {out.decode(errors='replace')}")

    async def stop(self) -> None:
        """SIGINT: py-spy writes its output and exits."""
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), 30)
            self.log = out or b""
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def summarize_profile(raw: Path, top: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares by function, per thread, from py-spy's collapsed stacks."""
    self_samples: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    # The same per thread: the event loop and SQLite's writer thread share the GIL but not their work.
    thread_self: dict[str, Counter[str]] = {}
    thread_inclusive: dict[str, Counter[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames and frames[0].startswith(("thread", "process")) else "?"
        frames = [f for f in frames if not f.startswith(("thread", "process"))]
        if not frames:
            continue
        total += count
        by_thread[thread] += count
        self_samples[frames[-1]] += count
        thread_self.setdefault(thread, Counter())[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
            thread_inclusive.setdefault(thread, Counter())[name] += count

    def share(counter: Counter[str], of: int | None = None) -> list[dict[str, Any]]:
        whole = of or total
        return [{"function": f, "samples": n, "pct": round(100 * n / whole, 1)} for f, n in counter.most_common(top)]

    return {
        "samples": total,
        "by_thread": share(by_thread),
        "self": share(self_samples),
        "inclusive": share(inclusive),
        # threads with at least a tenth of the samples; shares are of that thread's samples
        "threads": {
            thread: {
                "samples": n,
                "self": share(thread_self[thread], n),
                "inclusive": share(thread_inclusive[thread], n),
            }
            for thread, n in by_thread.most_common()
            if n >= total / 10
        },
    }
