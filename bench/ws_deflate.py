"""What a browser's WebSocket costs the server: 200 connections that offer permessage-deflate.

Browsers always offer permessage-deflate; a server that accepts keeps a zlib compressor and
decompressor per connection (issue 11 measured ~131 KiB each). This starts a real `sup run`,
reads its RSS, opens N authenticated WebSockets that offer the extension as a browser does,
sends and receives traffic on each (so any compression state exists), reads RSS again, and
reports the difference per connection and whether the extension was negotiated.

    .venv/bin/python bench/ws_deflate.py [--connections 200] [--server-src DIR] [--json-out PATH]

`--server-src` runs the server from another checkout (e.g. /work/main) with this virtualenv's
packages, to compare before and after. The report goes to bench/reports/ws_deflate-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
from foundation import spawn_server, stop_server, wait_healthy
from harness import create_chat, register

HERE = Path(__file__).resolve().parent
REPORTS = HERE / "reports"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def run(connections: int, server_src: str | None) -> dict:
    env = [("SUP_LOGGING_ACCESS_LOG", "false"), *([("PYTHONPATH", server_src)] if server_src else [])]
    with tempfile.TemporaryDirectory(prefix="sup-bench-deflate-") as tmp:
        server = spawn_server(sys.executable, Path(tmp) / "data", None, env)
        url = server.base_url
        try:
            # No connector limit: aiohttp allows 100 connections per session, and each socket holds one.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                await wait_healthy(server, session)
                users = await register(session, url, 10, prefix="deflate")
                chat = await create_chat(session, url, users[0], users[1:], direct=False)
                headers = {"Authorization": f"Bearer {users[0]['token']}"}
                await asyncio.sleep(2)
                before = rss_kib(server.pid)
                sockets = []
                negotiated = 0
                for i in range(connections):
                    user = users[i % len(users)]
                    ws = await session.ws_connect(url + "/api/v1/ws", compress=15, heartbeat=None)  # as a browser
                    negotiated += bool(ws.compress)
                    await ws.send_json({"type": "authenticate", "token": user["token"]})
                    ready = await ws.receive_json(timeout=10)
                    assert ready["type"] == "ready", ready
                    sockets.append(ws)
                # Traffic both ways on every connection: a message each way, as a chat would have.
                text = "hello from the benchmark, a message of ordinary length " * 4
                for n in range(3):
                    async with session.post(
                        url + "/api/v1/messages",
                        json={"chat_id": chat, "client_id": str(uuid.uuid4()), "body": f"{n} {text}"},
                        headers=headers,
                    ) as reply:
                        assert reply.status == 201
                for ws in sockets:
                    await ws.send_json({"type": "ping", "request_id": text[:60]})
                for ws in sockets:
                    seen = 0
                    while seen < 4:  # pong and three messages (and presence notices)
                        frame = await ws.receive_json(timeout=30)
                        seen += frame["type"] in ("pong", "message.new")
                await asyncio.sleep(2)
                after = rss_kib(server.pid)
                for ws in sockets:
                    await ws.close()
        finally:
            await stop_server(server)
    return {
        "benchmark": "ws_deflate",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "server_src": server_src or str(HERE.parent),
        "connections": connections,
        "offered": "permessage-deflate; client_max_window_bits (aiohttp client, compress=15, as browsers offer)",
        "negotiated": negotiated,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_delta_kib": after - before,
        "rss_per_connection_kib": round((after - before) / connections, 1),
        "python": sys.version.split()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--server-src", help="run the server from this checkout (PYTHONPATH)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(run(args.connections, args.server_src))
    print(
        f"{report['connections']} connections offering permessage-deflate, {report['negotiated']} negotiated it: "
        f"server RSS {report['rss_before_kib'] / 1024:.1f} MiB -> {report['rss_after_kib'] / 1024:.1f} MiB, "
        f"{report['rss_per_connection_kib']} KiB per connection"
    )
    out = args.json_out or REPORTS / f"ws_deflate-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {out}")


if __name__ == "__main__":
    main()
