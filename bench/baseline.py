"""The messaging benchmark's baseline: its throughput phase against bench/echo_server.py, in the same run.

The echo server answers the same frames from memory (no database, no durability, no checks), on this
machine, now: SUP's messages/s and CPU per message are read against it, since absolute figures on these
shared machines move 2-3x from day to day.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
from foundation import ServerProcess, free_port, stop_server, wait_healthy
from phases import Run, measure_throughput

ECHO_SERVER = Path(__file__).with_name("echo_server.py")


def _members(pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    accounts = [pair[role] for pair in pairs for role in ("sender", "receiver")]
    chats = {pair["chat_id"]: [pair["sender"]["user_id"], pair["receiver"]["user_id"]] for pair in pairs}
    return {"accounts": accounts, "chats": chats}


def _spawn_echo(python: str, scratch: Path, pairs: Sequence[dict[str, Any]]) -> ServerProcess:
    members = scratch / "echo-members.json"
    members.write_text(json.dumps(_members(pairs)))
    port = free_port()
    log_path = scratch / "echo.log"
    with open(log_path, "wb") as log:
        spawned_at = time.perf_counter()
        proc = subprocess.Popen(
            [python, str(ECHO_SERVER), "--port", str(port), "--members", str(members)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=scratch,
        )
    return ServerProcess(proc, port, scratch, log_path, spawned_at, None)


async def measure_echo_baseline(
    run: Run, session: aiohttp.ClientSession, pairs: Sequence[dict[str, Any]], total: int
) -> dict[str, Any]:
    """The throughput phase, same clients, chats and messages, against a bare aiohttp + uvloop echo server."""
    echo = _spawn_echo(run.args.python, run.server.data_dir.parent, pairs)
    sup = run.server
    try:
        await wait_healthy(echo, session)
        run.server = echo  # the phase's clients connect to it, and its CPU is the one measured
        return await measure_throughput(run, pairs, total, "echo")
    finally:
        run.server = sup
        await stop_server(echo)
