"""Push latency: from a message's commit to the push service receiving the push, for offline devices.

```
.venv/bin/python bench/push.py [--devices 1000] [--messages 10] [--database-url URL] [--json-out PATH]
                               [--coalesce-seconds S] [--python PATH]
```

A real `sup run` process (spawned as in foundation.py) and, in this process, a push service on
127.0.0.1 (aiohttp) that notes when each push arrives. `--devices` users register, each one device
that subscribes with its own endpoint URL and never opens a socket (offline); they are the members of
one group with a sender. The sender then sends `--messages` messages, one at a time: after each,
the script waits until every device's push has arrived before the next (so each message is its own
burst, and coalescing does not merge two).

The latency of one push is (arrival at the push service) - (the message's `created_at`): created_at
is taken inside the sending transaction, before its commit, so the figure includes the commit, the
coalescing wait (`push.coalesce_seconds`, default 0.5 s), the job's start, the encryption and the
HTTP request. A sample of pushes is decrypted and checked (RFC 8291) after the run; the timing path
does no cryptography of its own. Reports go to bench/reports/push-<database>-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from foundation import BENCH_DIR, PROJECT_DIR, cpu_seconds, post, summarize_ms
from harness import bench_run

sys.path.insert(0, str(PROJECT_DIR))

import http_ece

from tests.pushendpoint import Device as Browser  # the project's root is on the path now

BUDGET_S = 900.0


class PushService:
    def __init__(self) -> None:
        self.arrivals: dict[str, list[tuple[float, bytes]]] = {}
        self.expected: int = 0
        self.done = asyncio.Event()
        self.origin = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{name}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.origin = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        self.arrivals.setdefault(request.match_info["name"], []).append((at, body))
        if sum(len(v) for v in self.arrivals.values()) >= self.expected:
            self.done.set()
        return web.Response(status=201)


async def register(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    name = f"p_{secrets.token_hex(6)}"
    return await post(session, f"{base}/api/v1/auth/register", {"username": name, "password": "push bench pw 1"})


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = [
        ("SUP_PUSH_ALLOW_HTTP", "true"),
        ("SUP_PUSH_ALLOW_HOSTS", "127.0.0.1"),
        ("SUP_PUSH_CONTACT", "mailto:bench@example.org"),
        ("SUP_LOGGING_ACCESS_LOG", "false"),
    ]
    if args.coalesce_seconds is not None:
        env.append(("SUP_PUSH_COALESCE_SECONDS", str(args.coalesce_seconds)))
    config = {
        "devices": args.devices,
        "messages": args.messages,
        "coalesce_seconds": args.coalesce_seconds if args.coalesce_seconds is not None else "default (0.5)",
        "server_env": dict(env),
    }
    latencies: list[float] = []
    per_message: list[dict[str, Any]] = []
    browsers: dict[str, Browser] = {}
    service = PushService()
    await service.start()
    try:
        async with bench_run("push", args, config, BUDGET_S, session_timeout_s=300) as bench:
            problems, warnings, session = bench.problems, bench.warnings, bench.session
            server = await bench.server(env, log_per_port=False)
            base = server.base_url
            setup_started = time.perf_counter()
            sender = await register(session, base)
            gate = asyncio.Semaphore(16)

            async def device(i: int) -> str:
                async with gate:
                    account = await register(session, base)
                    browser = Browser(f"d{i}", f"{service.origin}/push/d{i}")
                    browsers[browser.name] = browser
                    await post(
                        session, f"{base}/api/v1/push/subscriptions", browser.subscription(), account["access_token"]
                    )
                    return account["user"]["id"]

            member_ids = await asyncio.gather(*(device(i) for i in range(args.devices)))
            chat = await post(
                session,
                f"{base}/api/v1/chats",
                {"type": "group", "member_ids": member_ids, "title": "push bench", "encrypted": False},
                sender["access_token"],
            )
            setup_s = time.perf_counter() - setup_started
            print(f"setup: {args.devices} offline devices subscribed in {setup_s:.1f} s", flush=True)
            cpu_before, wall_before = cpu_seconds(server.pid), time.perf_counter()
            for n in range(args.messages):
                service.arrivals.clear()
                service.expected = args.devices
                service.done.clear()
                sent = await post(
                    session,
                    f"{base}/api/v1/messages",
                    {"chat_id": chat["id"], "client_id": str(uuid.uuid4()), "body": f"bench message {n}"},
                    sender["access_token"],
                )
                committed = sent["created_at"] / 1000
                try:
                    await asyncio.wait_for(service.done.wait(), args.timeout)
                except TimeoutError:
                    problems.append(
                        f"message {n}: {len(service.arrivals)}/{args.devices} pushes within {args.timeout} s"
                    )
                # Pushes of this message only: a late duplicate would be counted with the next otherwise.
                await asyncio.sleep(0.2)
                times = [at - committed for arrivals in service.arrivals.values() for at, _ in arrivals]
                latencies.extend(times)
                extra = sum(len(a) for a in service.arrivals.values()) - len(service.arrivals)
                if extra:
                    warnings.append(f"message {n}: {extra} device(s) got more than one push")
                summary = summarize_ms(times)
                per_message.append(summary)
                print(
                    f"message {n}: {summary['count']} pushes, p50 {summary['p50_ms']:.0f} ms, "
                    f"p99 {summary['p99_ms']:.0f} ms, max {summary['max_ms']:.0f} ms",
                    flush=True,
                )
                last_bodies = {name: arrivals[-1][1] for name, arrivals in service.arrivals.items()}
            # What the server spent (user + system CPU), whatever else the machine was doing: per push.
            server_cpu = cpu_seconds(server.pid) - cpu_before
            wall = time.perf_counter() - wall_before
            checked = 0
            for name, body in list(last_bodies.items())[:50]:
                browser = browsers[name]
                plain = http_ece.decrypt(body, private_key=browser.private_key, auth_secret=browser.auth)
                message = json.loads(plain)
                if message != {"type": "new", "kind": "message", "chat_id": chat["id"]} or b"bench" in plain:
                    problems.append(f"push to {name} holds {plain!r}")
                checked += 1
            stopped = await bench.stop(server)
    finally:
        await service.close()
    report = bench.report
    report["setup_s"] = round(setup_s, 1)
    report["load_average_after"] = [round(x, 2) for x in os.getloadavg()]  # other work on the machine
    report["commit_to_push_received"] = summarize_ms(latencies)
    report["per_message"] = per_message
    report["decrypted_and_checked"] = checked
    pushes = len(latencies)
    report["server_cpu"] = {
        "seconds": round(server_cpu, 2),
        "wall_seconds": round(wall, 2),
        "ms_per_push": round(server_cpu * 1000 / pushes, 3) if pushes else None,
        "note": "the server process's CPU during the messages (sends, marking, encryption, HTTP), from /proc",
    }
    report["shutdown"] = stopped
    return bench.finish()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--coalesce-seconds", type=float, default=None)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--json-out", default="")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    report = asyncio.run(run(args))
    out = (
        Path(args.json_out)
        if args.json_out
        else (BENCH_DIR / "reports" / f"push-{report['database']}-{time.strftime('%Y%m%dT%H%M%S')}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    figures = report["commit_to_push_received"]
    print(
        f"push latency, commit -> push service ({report['database']}, {args.devices} offline devices, "
        f"{args.messages} messages): p50 {figures.get('p50_ms')} ms, p99 {figures.get('p99_ms')} ms, "
        f"max {figures.get('max_ms')} ms; server CPU {report['server_cpu']['ms_per_push']} ms per push; "
        f"ok={report['ok']} problems={report['problems']}"
    )
    print(f"report: {out}")


if __name__ == "__main__":
    main()
