"""Call set-up benchmark: the time from `call.invite` to a connected WebRTC call, on loopback.

A real `python -m sup run` subprocess (SQLite, or a fresh Postgres database with --database-url) and
Debian's `turnserver` (coturn) on 127.0.0.1, sharing a TURN secret. Two SDK clients in this process,
each with an aiortc peer (tests/webrtc_peer.py, the same code as tests/test_call_media.py), call each
other --calls times: the caller places the call, the callee's SDK rings and answers, the offer and the
answer (each pairwise-encrypted by the SDK) go through SUP, and both peers use relay candidates only
(`iceTransportPolicy: "relay"`), so ICE needs TURN allocations, permissions and checks through coturn.
Each call then echoes a line over a data channel and plays a second of audio before it is hung up.

Set-up is measured from the moment `call.invite` is sent to both peer connections being "connected";
the marks in between say where the time goes: the invite's answer, the callee's accept (its SDK
answers as soon as `call.incoming` arrives, so there is no human in it), the offer's candidate
gathering (a TURN allocation), the answer's arrival, ICE completed (a pair through the relays works),
and DTLS until connected. On loopback SUP's part (to the answer) is tens of milliseconds, and the caller's
ICE completes a few later. Most of the rest is one lost packet, seen in aioice's debug log: the callee's
first connectivity check leaves as soon as it has the offer, before the caller (which gets the answer
next) has installed the TURN permission for it, so coturn drops it, and aioice sends it again only after
its 500 ms STUN retransmission timer (it sends no triggered check when the caller's check arrives); DTLS
starts on the callee's side after that. A property of the peers with relay-only candidates, not of SUP.

Usage (from the project root):

    .venv/bin/python bench/calls.py [--calls 10] [--database-url URL] [--json-out PATH]

Prints a table and writes the JSON report (default bench/reports/calls-<database>.json). Exit status 0
when every call connected through the relay and carried data and audio, 1 otherwise, 2 when the
benchmark could not run.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from foundation import PROJECT_DIR, BenchError, summarize_ms
from harness import bench_parser, bench_run, parse_checked, run_main

sys.path.insert(0, str(PROJECT_DIR))  # the peers and the coturn runner are the tests' own

from sup.client.client import Client
from tests.turn_client import Coturn
from tests.webrtc_peer import CallResult, call_through_sup

TOTAL_BUDGET_S = 300.0
MARKS = ("invited", "accepted", "offer_gathered", "answer_received", "ice_completed", "connected")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--calls", type=int, default=10, help="calls to set up, one after another")
    return parse_checked(parser, argv)


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if Coturn.binary() is None:
        raise BenchError("no turnserver: apt-get install coturn")
    secret = secrets.token_hex(32)
    config = {"calls": args.calls, "turn": "coturn on 127.0.0.1 (udp), relay candidates only", "ring_timeout": "45 s"}
    async with bench_run("calls", args, config, TOTAL_BUDGET_S) as bench:
        coturn = await Coturn(secret, bench.tmp, ("--allow-loopback-peers",)).start()
        try:
            turn_uri = f"turn:127.0.0.1:{coturn.port}?transport=udp"
            env = [("SUP_CALLS_TURN_URIS", turn_uri), ("SUP_CALLS_TURN_SECRET", secret)]
            server = await bench.server(env, log_per_port=False)
            try:
                results = await _calls(server.base_url, bench.tmp, args.calls)
            finally:
                await bench.stop(server)
        finally:
            coturn.stop()
    for result in results:
        if result.candidate_types != {"relay"} or set(result.selected_local_types) != {"relay"}:
            bench.problems.append(f"call {result.call_id} did not go through the relay: {result.selected_local_types}")
        if result.echoed != "echo: hello through the relay" or result.audio_peak < 1000:
            bench.problems.append(f"call {result.call_id} lost data or audio")
    report = bench.report
    report["setup"] = summarize_ms([r.setup_seconds for r in results])
    report["marks"] = {name: summarize_ms([r.marks[name] for r in results]) for name in MARKS}
    report["calls"] = [
        {
            "call_id": r.call_id,
            "setup_ms": round(r.setup_seconds * 1000, 1),
            "marks_ms": {k: round(v * 1000, 1) for k, v in r.marks.items()},
            "audio_frames": r.audio_frames,
            "selected": r.selected_local_types,
        }
        for r in results
    ]
    return bench.finish()


async def _calls(base_url: str, root: Path, count: int) -> list[CallResult]:
    caller = await Client.register(
        base_url, str(root / "caller.db"), f"caller_{secrets.token_hex(4)}", "bench-password"
    )
    callee = await Client.register(
        base_url, str(root / "callee.db"), f"callee_{secrets.token_hex(4)}", "bench-password"
    )
    try:
        chat = await caller.direct_chat(callee.user_id)
        await caller.start()
        await callee.start()
        results = []
        for _ in range(count):
            results.append(await call_through_sup(caller, callee, chat["id"]))
        return results
    finally:
        await caller.close()
        await callee.close()


def format_summary(report: dict[str, Any]) -> str:
    setup = report["setup"]
    lines = [
        f"call set-up on loopback, invite -> connected ({setup['count']} calls, {report['database']}, via coturn):",
        f"  p50 {setup['p50_ms']:.1f} ms   p90 {setup['p90_ms']:.1f} ms   max {setup['max_ms']:.1f} ms",
        "  where the time goes (p50, since the invite):",
    ]
    for name in MARKS:
        lines.append(f"    {name:<16} {report['marks'][name]['p50_ms']:8.1f} ms")
    if report["problems"]:
        lines.append("PROBLEMS:")
        lines += [f"  {p}" for p in report["problems"]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main("calls", parse_args(), run_benchmark, format_summary, TOTAL_BUDGET_S))
