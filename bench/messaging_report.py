"""The messaging benchmark's report: its configuration and targets, and the human-readable summary."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from foundation import PROJECT_DIR, format_latency, report_env, server_env, summary_end

TARGETS = {  # issue 15's targets, one process (throughput by database)
    "throughput_msgs_per_s": {"sqlite": 10000, "postgres": 3000},
    "latency_p99_ms": 20.0,
    "fanout_p99_ms": 20.0,
    "idle_rss_mb": 70.0,  # decimal megabytes; 70 MB = 66.8 MiB
}


# -- report ---------------------------------------------------------------------------------------


def targets_report(report: dict[str, Any]) -> dict[str, Any]:
    out = {}

    def add(key: str, measured: float | None, ok: bool | None, unit: str, target: str) -> None:
        out[key] = {"target": target, "measured": measured, "unit": unit, "met": ok}

    t = report.get("throughput")
    if t:
        goal = TARGETS["throughput_msgs_per_s"][report["database"]]
        add("throughput", t["msgs_per_s"], t["msgs_per_s"] >= goal, "msgs/s", f">= {goal}")
    lat = report.get("latency", {}).get("send_to_receive", {})
    if lat.get("count"):
        add("latency_p99", lat["p99_ms"], lat["p99_ms"] <= TARGETS["latency_p99_ms"], "ms", "<= 20 at 500/s")
    fan = report.get("fanout", {}).get("send_to_receive", {})
    if fan.get("count"):
        add("fanout_p99", fan["p99_ms"], fan["p99_ms"] <= TARGETS["fanout_p99_ms"], "ms", "<= 20")
    for key, label in (
        ("idle", "after registering its users (argon2 hashing in this process)"),
        ("idle_restarted", "restarted on the same data (no hashing in this process)"),
    ):
        idle = report.get(key)
        if idle:
            ok = idle["rss_idle_mb"] <= TARGETS["idle_rss_mb"]
            add(f"{key}_rss", idle["rss_idle_mb"], ok, "MB", f"<= 70 MB with {idle['clients']} idle clients; {label}")
    return out


def server_package(args: argparse.Namespace) -> str | None:
    """Where the server's interpreter, in the server's environment, imports `sup` from (PYTHONPATH may
    point it at another checkout than this one; the git figures describe this one)."""
    with tempfile.TemporaryDirectory() as cwd:
        try:
            out = subprocess.run(
                [args.python, "-c", "import sup; print(sup.__file__)"],
                env={**server_env(None), **dict(args.server_env)},
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    return str(Path(out).parent)


def config_info(args: argparse.Namespace, database: str) -> dict[str, Any]:
    from sup.config import Config

    defaults = Config()
    return {
        "database": database,
        "env": {**report_env(args.database_url), **dict(args.server_env)},
        "sqlite_synchronous": defaults.database.sqlite_synchronous,
        "pg_pool": [defaults.database.pool_min, defaults.database.pool_max],
        "access_log": defaults.logging.access_log,
        "ws_queue_limit": defaults.websocket.queue_limit,
        "ws_catch_up_seconds": defaults.websocket.catch_up_seconds,
        "workers": args.workers,
        "pairs": args.pairs,
        "messages": args.messages,
        "window": args.window,
        "ack_every": args.ack_every,
        "body_bytes": args.body_bytes,
        "direct_messages": args.direct_messages,
        "latency_rate": args.latency_rate,
        "latency_seconds": args.latency_seconds,
        "latency_pairs": args.latency_pairs,
        "fanout_members": args.fanout_members,
        "fanout_rate": args.fanout_rate,
        "fanout_seconds": args.fanout_seconds,
        "idle_clients": args.idle_clients,
        "idle_seconds": args.idle_seconds,
        "compress": args.compress,
        "profile": str(args.profile) if args.profile else None,
        "phases": sorted(args.phases),
        "server_env": dict(args.server_env),
    }


# -- summary -------------------------------------------------------------------------------------


def _cpu(c: dict[str, Any], cpus: int) -> str:
    return (
        f"CPU (% of one core): server {c['server_pct_of_one_cpu']} (event loop {c['server_event_loop_thread_pct']}, "
        f"other threads {c['server_other_threads_pct']}), load generators {c['load_generators_pct_of_one_cpu']} "
        f"{c['load_generator_cpu_s_each']} s, postgres {c['postgres_pct_of_one_cpu']}; host {c['host_cpu_busy_pct']}% "
        f"of {cpus} CPUs busy, other load {c['other_cpu_pct_of_host']}%"
    )


def _streams(s: dict[str, Any]) -> str:
    return (
        f"{s['connections']} connections, {s['events']} events, gaps {s['gaps']}, duplicates {s['duplicates']}, "
        f"acks {s['acks_sent']}, errors {s['error_frames'] or 0}, server closes {s['unexpected_closes'] or 0}, "
        f"permessage-deflate on {s['compressed']}"
    )


def _throughput_lines(title: str, t: dict[str, Any], cpus: int) -> list[str]:
    return [
        "",
        f"{title}: {t['pairs']} pairs, {t['chat_type']}, window {t['window_per_connection']}/connection "
        f"({t['in_flight_max']} in flight max)",
        f"   {t['complete']} of {t['requested']} messages durable+delivered in {t['elapsed_s']} s = "
        f"{t['msgs_per_s']} msgs/s (steady 10-90%: {t['steady_msgs_per_s']} msgs/s)",
        f"   durable acks {t['durable_acks']}, receipts {t['received']}, lost {t['lost']}, "
        f"refused {t['refused'] or 0}, duplicates {t['duplicate_receipts']}",
        f"   send -> message.sent {format_latency(t['send_to_durable_ack'])}",
        f"   send -> message.new  {format_latency(t['send_to_receive'])}",
        f"   server CPU {t['server_cpu_ms_per_msg']} ms/msg; {_cpu(t['cpu'], cpus)}",
        f"   streams: {_streams(t['streams'])}",
    ]


def _profile_lines(p: dict[str, Any]) -> list[str]:
    prof = p.get("profile")
    lines = ["", f"1c. throughput under py-spy: {p['msgs_per_s']} msgs/s (profile: {p['profile_raw']})"]
    if not prof:
        return [*lines, "   (no profile)"]
    lines.append(
        f"   {prof['samples']} samples; by thread: "
        + ", ".join(f"{x['function']} {x['pct']}%" for x in prof["by_thread"])
    )
    lines.append("   self time (top 15):")
    lines += [f"     {x['pct']:5.1f}%  {x['function']}" for x in prof["self"][:15]]
    lines.append("   inclusive time (top 25):")
    lines += [f"     {x['pct']:5.1f}%  {x['function']}" for x in prof["inclusive"][:25]]
    return lines


def format_summary(report: dict[str, Any]) -> str:
    m, sw = report["machine"], report["software"]
    cpus = m["cpu_count"]
    lines = [
        f"SUP messaging benchmark - database: {report['database']}"
        + (f" (PostgreSQL {sw['postgres']})" if sw.get("postgres") else ""),
        f"machine: {cpus} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, {m['platform']}",
        f"sup {sw['sup']} @ {(sw['git_commit'] or '?')[:12]}{' (dirty)' if sw.get('git_dirty') else ''}, "
        f"aiohttp {sw['aiohttp']}, uvloop {sw['uvloop']}, load generators: {report['config']['workers']} processes",
    ]
    package = sw.get("server_sup_package")
    if package and not Path(package).is_relative_to(PROJECT_DIR):
        lines.append(f"the server runs the sup package at {package}, NOT this checkout (git figures are this one's)")
    tree = sw.get("working_tree") or {}
    if tree.get("changed"):
        lines.append(f"uncommitted server changes (diff sha256 {str(tree['diff_sha256'])[:12]}): {tree['changed']}")
    if report["config"]["server_env"]:
        lines.append(f"NOT the defaults: server environment {report['config']['server_env']}")
    if "setup" in report:
        s = report["setup"]
        lines.append(
            f"setup: {s['users']} users registered in {s['register_s']} s, {s['chats']} chats in {s['chats_s']} s; "
            f"server RSS {report['memory_after_setup']['rss_mib']} MiB"
        )
    if "throughput" in report:
        lines += _throughput_lines("1. throughput, 1:1", report["throughput"], cpus)
    if "baseline_echo" in report:
        e = report["baseline_echo"]
        lines += [
            "",
            "1a. the same against bench/echo_server.py (bare aiohttp + uvloop, from memory: the ceiling here, now)",
            f"   {e['complete']} of {e['requested']} messages in {e['elapsed_s']} s = {e['msgs_per_s']} msgs/s; "
            f"server CPU {e['server_cpu_ms_per_msg']} ms/msg",
        ]
        if report.get("throughput", {}).get("of_baseline"):
            t = report["throughput"]
            lines.append(
                f"   SUP: {round(100 * t['of_baseline'], 1)}% of its messages/s, "
                f"{t['server_cpu_ms_per_msg']} against {e['server_cpu_ms_per_msg']} ms of server CPU per message"
            )
    if "throughput_direct" in report:
        lines += _throughput_lines("1b. throughput, 1:1 direct chats", report["throughput_direct"], cpus)
    if "throughput_profiled" in report:
        lines += _profile_lines(report["throughput_profiled"])
    for key, title in (("latency", "2. latency, 1:1"), ("fanout", "3. group fan-out")):
        if key not in report:
            continue
        p = report[key]
        lines += [
            "",
            f"{title}: {p['senders']} sender(s), {p['receivers_per_message']} receiver(s) per message, "
            f"{p['rate_per_s']} msgs/s paced (achieved {p['achieved_send_rate']}), {p['issued']} messages",
            f"   send -> message.new  {format_latency(p['send_to_receive'])}",
            "   per second, max ms: " + " ".join(f"{x['max_ms']:.0f}" for x in p["send_to_receive_per_second"]),
        ]
        if p["receivers_per_message"] > 1:
            lines.append(
                f"   send -> last of {p['receivers_per_message']} receivers "
                f"{format_latency(p['send_to_last_receiver'])}"
            )
        lines += [
            f"   send -> message.sent {format_latency(p['send_to_durable_ack'])}",
            f"   receipts {p['received']} of {p['expected_receipts']}, lost {p['lost']}, duplicates "
            f"{p['duplicate_receipts']}; load-generator schedule lag {format_latency(p['scheduler_lag'])}",
            f"   {_cpu(p['cpu'], cpus)}",
        ]
    for key, title in (
        ("idle", "4. idle clients, on the server that registered the users"),
        ("idle_after_load", "4b. idle clients, same server after the load"),
        ("idle_restarted", "4c. idle clients, server restarted on the same data (tokens still valid)"),
    ):
        if key not in report:
            continue
        i = report[key]
        lines += [
            "",
            f"{title}: {i['clients']} authenticated WebSocket clients, {i['idle_seconds']} s idle",
            f"   server RSS {i['rss_before_mib']} MiB before -> {i['rss_connected_mib']} connected -> "
            f"{i['rss_idle_mib']} MiB idle ({i['rss_idle_mb']} MB; ~{i['per_client_kib']} KiB/client), "
            f"peak {i['peak_rss_mib']} MiB, {i['rss_after_disconnect_mib']} MiB after disconnect",
            f"   connect+authenticate {format_latency(i['connect_ms'])}; "
            f"permessage-deflate on {i['streams']['compressed']}",
        ]
    if "memory_end" in report:
        lines += ["", f"main server's memory at its end: {report['memory_end']}"]
    if report.get("targets"):
        lines += ["", "targets (issue, one process):"]
        for name, t in report["targets"].items():
            lines.append(
                f"   {name}: {t['measured']} {t['unit']} (target {t['target']}) -> {'met' if t['met'] else 'NOT met'}"
            )
    lines += summary_end(report)
    return "\n".join(lines)
