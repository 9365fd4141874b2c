"""The measurement phases of the messaging benchmark, as the orchestrator runs them on the load generators.

Run.phase drives one phase on the load-generator processes (connect -> go -> results -> release ->
closed) with the CPU watched in between, and checks every client's event stream; measure_idle,
measure_throughput and measure_paced (latency and fan-out) turn the load generators' results into the
report's figures, problems and warnings.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from foundation import HOST, OTHER_LOAD_WARN_PCT, BenchError, ServerProcess, memory_mib, percentile, summarize_ms
from loadgen import DRAIN_S, LoadGen, rate
from watch import CpuWatch, Profiler, rss_kib

WS_PATH = "/api/v1/ws"
STAGE_TIMEOUT_S = 60.0  # connecting a phase's clients, closing them


def steady_rate(times: Sequence[float], low: float = 10, high: float = 90) -> float | None:
    """Completions/s between the low-th and high-th percentile completion: the rate without ramp-up/tail."""
    if len(times) < 20:
        return None
    ordered = sorted(times)
    a, b = percentile(ordered, low), percentile(ordered, high)
    between = sum(1 for t in ordered if a <= t <= b)
    return rate(between - 1, b - a)


def mb(kib: float) -> float:
    """KiB -> MB of 10^6 bytes, the unit of the idle-memory target."""
    return round(kib * 1024 / 1e6, 1)


def add_client_options(p: argparse.ArgumentParser) -> None:
    """The load generators' client options, which Run.opts and the phases read."""
    p.add_argument("--ack-every", type=int, default=16, help="clients acknowledge every N events (default 16)")
    p.add_argument("--body-bytes", type=int, default=64, help="padding in each message body (default 64)")
    p.add_argument("--compress", action="store_true", help="offer permessage-deflate, as browsers do (default off)")


def idle_commands(run: Run, accounts: Sequence[dict[str, str]]) -> dict[int, dict[str, Any]]:
    """Each load generator's share of the accounts, to hold open and idle."""
    workers = len(run.workers)
    return {
        i: {"op": "idle", "accounts": list(accounts[i::workers]), "opts": run.opts}
        for i in range(workers)
        if accounts[i::workers]
    }


# -- one phase on the load generators -----------------------------------------------------------


@dataclass
class Run:
    """One server and the load generators: runs phases on them and collects problems and warnings."""

    args: argparse.Namespace
    server: ServerProcess
    workers: list[LoadGen]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    extra_labels: dict[int, str] = field(default_factory=dict)  # more processes of the benchmark (py-spy)
    accounts: list[dict[str, str]] = field(default_factory=list)

    @property
    def loadgen_pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    @property
    def opts(self) -> dict[str, Any]:
        return {"ack_every": self.args.ack_every, "compress": self.args.compress}

    def check_other_load(self, what: str, cpu: dict[str, Any]) -> None:
        if cpu["other_cpu_pct_of_host"] > OTHER_LOAD_WARN_PCT:
            self.warnings.append(
                f"{what}: {cpu['other_cpu_pct_of_host']}% of the host's CPU went to processes that are not this "
                "benchmark; its figures are lower than on a quiet host"
            )

    async def phase(
        self,
        name: str,
        commands: dict[int, dict[str, Any]],
        max_seconds: float,
        before_go: Callable[[], Awaitable[None]] | None = None,
        after_result: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
        """Run one phase on the given workers: connect -> go -> results -> (hook) -> release -> closed.

        Returns (connected replies, results, cpu during go..results, hook result)."""
        chosen = [self.workers[i] for i in commands]
        for i, cmd in commands.items():
            self.workers[i].send({**cmd, "url": f"ws://{HOST}:{self.server.port}{WS_PATH}"})
        connected = await asyncio.gather(*(w.expect("connected", STAGE_TIMEOUT_S) for w in chosen))
        failures: Counter[str] = Counter()
        for c in connected:
            failures.update(c["failures"])
        if failures:
            for w in chosen:
                w.send({"op": "abort"})
            raise BenchError(f"{name}: clients could not connect: {dict(failures)}")
        if before_go is not None:
            await before_go()
        pg_database = urlsplit(self.server.database_url).path.lstrip("/") if self.server.database_url else None
        cpu = CpuWatch(self.server.pid, self.loadgen_pids, self.extra_labels, pg_database)
        go_at = time.time() + 0.05  # every worker starts at the same moment
        for w in chosen:
            w.send({"op": "go", "go_at": go_at})
        sampler = asyncio.create_task(cpu.sample_forever())
        try:
            results = await asyncio.gather(*(w.expect("result", max_seconds + DRAIN_S + 30) for w in chosen))
        finally:
            sampler.cancel()
        cpu_used = cpu.result()
        hooked = await after_result() if after_result is not None else {}
        for w in chosen:
            w.send({"op": "release"})
        await asyncio.gather(*(w.expect("closed", STAGE_TIMEOUT_S) for w in chosen))
        for r in results:
            stats = r["conn_stats"]
            if stats["gaps"] or stats["duplicates"]:
                self.problems.append(
                    f"{name}: event streams had {stats['gaps']} missing and {stats['duplicates']} duplicate cursors"
                )
            if stats.get("chat_seq_disorder"):
                disorder = stats["chat_seq_disorder"]
                self.problems.append(f"{name}: {disorder} messages arrived out of their chat's seq order")
            if stats["unexpected_closes"]:
                self.problems.append(f"{name}: server closed connections: {stats['unexpected_closes']} (close code: n)")
            bad_errors = {k: v for k, v in stats["error_frames"].items()}
            if bad_errors:
                self.problems.append(f"{name}: error frames / socket errors: {bad_errors}")
            if r.get("error"):
                self.problems.append(f"{name}: {r['error']}")
        return connected, results, cpu_used, hooked


def merge_stats(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "connections": 0,
        "events": 0,
        "gaps": 0,
        "duplicates": 0,
        "chat_seq_disorder": 0,
        "chat_seq_gaps": 0,
        "acks_sent": 0,
        "compressed": 0,
    }
    errors: Counter[str] = Counter()
    closes: Counter[str] = Counter()
    for r in results:
        s = r["conn_stats"]
        for key in out:
            out[key] += s[key]
        errors.update(s["error_frames"])
        closes.update(s["unexpected_closes"])
    out["error_frames"] = dict(errors)
    out["unexpected_closes"] = dict(closes)
    return out


def connect_summary(connected: Sequence[dict[str, Any]]) -> dict[str, Any]:
    times = [t for c in connected for t in c["connect_s"]]
    return summarize_ms(times)


# -- the phases -------------------------------------------------------------------------------


async def measure_idle(
    run: Run,
    accounts: Sequence[dict[str, str]],
    label: str,
    while_idle: Callable[[], Awaitable[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """N idle authenticated clients; RSS after idle_seconds (then `while_idle`, if given, still among them)."""
    n = len(accounts)
    commands = idle_commands(run, accounts)
    before = memory_mib(run.server.pid)

    async def hold() -> dict[str, Any]:
        at_connect = memory_mib(run.server.pid)
        await asyncio.sleep(run.args.idle_seconds)
        held = {"at_connect": at_connect, "after_idle": memory_mib(run.server.pid), "status": rss_kib(run.server.pid)}
        if while_idle is not None:
            held["while_idle"] = await while_idle()
        return held

    connected, results, cpu, held = await run.phase(label, commands, 10, after_result=hold)
    held["status"]["rss_mb"] = mb(held["status"]["VmRSS"])
    after_close = memory_mib(run.server.pid)
    return {
        "clients": n,
        "connect_ms": connect_summary(connected),
        "rss_before_mib": before["rss_mib"],
        "rss_connected_mib": held["at_connect"]["rss_mib"],
        "rss_idle_mib": held["after_idle"]["rss_mib"],
        "rss_idle_mb": held["status"]["rss_mb"],
        "rss_anon_file_shmem_kib": {k: held["status"].get(k) for k in ("RssAnon", "RssFile", "RssShmem")},
        "peak_rss_mib": held["after_idle"]["peak_rss_mib"],
        "threads": held["after_idle"]["threads"],
        "per_client_kib": round((held["after_idle"]["rss_mib"] - before["rss_mib"]) * 1024 / n, 1) if n else None,
        "rss_after_disconnect_mib": after_close["rss_mib"],
        "idle_seconds": run.args.idle_seconds,
        "streams": merge_stats(results),
        "cpu_while_idle": cpu,
        **({"while_idle": held["while_idle"]} if "while_idle" in held else {}),
    }


def split_counts(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def measure_throughput(
    run: Run, pairs: Sequence[dict[str, Any]], total: int, tag: str, profiler: Profiler | None = None
) -> dict[str, Any]:
    args = run.args
    per_pair = split_counts(total, len(pairs))
    workers = len(run.workers)
    commands = {}
    for i in range(workers):
        mine = list(range(i, len(pairs), workers))
        if not mine:
            continue
        commands[i] = {
            "op": "throughput",
            "pairs": [pairs[j] for j in mine],
            "per_pair": [per_pair[j] for j in mine],
            "window": args.window,
            "body_bytes": args.body_bytes,
            "tag": tag,
            "max_seconds": args.max_seconds,
            "opts": run.opts,
        }

    async def start_profiler() -> None:
        if profiler is not None:
            await profiler.start()
            run.extra_labels = {profiler.pid: "py-spy"}

    async def stop_profiler() -> dict[str, Any]:
        if profiler is not None:
            await profiler.stop()
        return {}

    try:
        connected, results, cpu, _ = await run.phase(
            f"throughput {tag}", commands, args.max_seconds, before_go=start_profiler, after_result=stop_profiler
        )
    finally:
        run.extra_labels = {}
    go = min(r["go_wall"] for r in results)
    completions = sorted(t for r in results for t in r["completions_wall"])
    complete = len(completions)
    elapsed = (completions[-1] - go) if completions else 0.0
    requested = sum(r["requested"] for r in results)
    issued = sum(r["issued"] for r in results)
    sent = sum(r["sent_acks"] for r in results)
    received = sum(r["received"] for r in results)
    refused: Counter[str] = Counter()
    for r in results:
        refused.update(r["refused"])
    report = {
        "pairs": len(pairs),
        "chat_type": "direct (encrypted, per-device ciphertexts)" if pairs[0]["direct"] else "group (unencrypted)",
        "window_per_connection": args.window,
        "in_flight_max": args.window * len(pairs),
        "requested": requested,
        "issued": issued,
        "durable_acks": sent,
        "received": received,
        "complete": complete,
        "refused": dict(refused),
        "lost": issued - complete - sum(refused.values()),
        "duplicate_receipts": sum(r["duplicate_receipts"] for r in results),
        "duplicate_acks": sum(r["duplicate_sent_acks"] for r in results),
        "bad_content": sum(r["bad_content"] for r in results),
        "elapsed_s": round(elapsed, 3),
        "msgs_per_s": rate(complete, elapsed),
        "steady_msgs_per_s": steady_rate(completions),
        "send_to_receive": summarize_ms([x for r in results for x in r["send_to_receive_s"]]),
        "send_to_durable_ack": summarize_ms([x for r in results for x in r["send_to_durable_s"]]),
        "connect_ms": connect_summary(connected),
        "streams": merge_stats(results),
        "cpu": cpu,
    }
    report["server_cpu_ms_per_msg"] = round(cpu["server_cpu_s"] * 1000 / complete, 3) if complete else None
    name = f"throughput {tag}"
    if complete != issued:  # sent but not both durable and delivered within the drain time, or refused
        run.problems.append(
            f"{name}: {complete} of {issued} sent messages completed (durable {sent}, received {received}, "
            f"refused {dict(refused)}, lost {report['lost']})"
        )
    if issued < requested:
        run.warnings.append(
            f"{name}: only {issued} of {requested} messages were sent before --max-seconds "
            f"({args.max_seconds:.0f} s); the rate covers those"
        )
    for key in ("duplicate_receipts", "duplicate_acks", "bad_content"):
        if report[key]:
            run.problems.append(f"{name}: {report[key]} {key.replace('_', ' ')}")
    run.check_other_load(name, cpu)
    return report


async def measure_paced(
    run: Run, name: str, groups: Sequence[dict[str, Any]], rate_per_s: float, seconds: float, tag: str
) -> dict[str, Any]:
    """Latency / fan-out on worker 0 (sender and receivers in one process: one clock)."""
    args = run.args
    count = max(1, round(rate_per_s * seconds))
    cmd = {
        "op": "paced",
        "groups": list(groups),
        "count": count,
        "rate": rate_per_s,
        "tag": tag,
        "body_bytes": args.body_bytes,
        "max_seconds": seconds + 10,
        "opts": run.opts,
    }
    connected, results, cpu, _ = await run.phase(name, {0: cmd}, seconds + 10)
    r = results[0]
    lag = r["scheduler_lag_s"]
    report = {
        "senders": len(groups),
        "receivers_per_message": len(groups[0]["receivers"]),
        "rate_per_s": rate_per_s,
        "requested": count,
        "issued": r["issued"],
        "achieved_send_rate": r["achieved_send_rate"],
        "durable_acks": r["sent_acks"],
        "expected_receipts": r["expected_receipts"],
        "received": r["received"],
        "lost": r["expected_receipts"] - r["received"],
        "duplicate_receipts": r["duplicate_receipts"],
        "bad_content": r["bad_content"],
        "refused": r["refused"],
        "send_to_receive": summarize_ms(r["send_to_receive_s"]),
        "send_to_receive_per_second": r["per_second"],
        "send_to_last_receiver": summarize_ms(r["send_to_last_receiver_s"]),
        "send_to_durable_ack": summarize_ms(r["send_to_durable_s"]),
        "scheduler_lag": summarize_ms(lag),
        "connect_ms": connect_summary(connected),
        "streams": merge_stats(results),
        "cpu": cpu,
    }
    if r["issued"] != count or r["received"] != r["expected_receipts"] or r["sent_acks"] != r["issued"]:
        run.problems.append(
            f"{name}: issued {r['issued']} of {count}, durable {r['sent_acks']}, "
            f"received {r['received']} of {r['expected_receipts']} receipts, refused {r['refused']}"
        )
    if r["duplicate_receipts"] or r["bad_content"]:
        run.problems.append(f"{name}: {r['duplicate_receipts']} duplicate receipts, {r['bad_content']} bad bodies")
    seconds = report["send_to_receive_per_second"]
    if len(seconds) >= 3 and seconds[-1]["p50_ms"] > max(50.0, 5 * seconds[0]["p50_ms"]):
        run.warnings.append(
            f"{name}: the server fell behind the offered {rate_per_s:g} msgs/s: the median latency grew from "
            f"{seconds[0]['p50_ms']:.0f} ms in the first second to {seconds[-1]['p50_ms']:.0f} ms in the last "
            "(a queue built up; the percentiles depend on the duration)"
        )
    if lag and percentile(lag, 99) > 0.005:
        run.warnings.append(
            f"{name}: the load generator fell behind its schedule (p99 lag {percentile(lag, 99) * 1000:.1f} ms): "
            "latencies include load-generator delay"
        )
    run.check_other_load(name, cpu)
    return report
