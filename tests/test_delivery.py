"""Nothing acknowledged is lost: across kill -9, across processes, across a Redis outage,
and across a lost response.

These tests run real `sup run` processes on the running Postgres and Redis; the Redis
outage test starts a redis-server of its own on a free loopback port, so stopping it for
ten seconds disturbs nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Api, Server, Socket, plain_group, require_redis, say, two_in_a_group
from tests.processes import Running, sup_env

SECRET = "delivery-tests-shared-secret-0123456789"


async def collect(sock: Socket, want: set[str], into: list[dict[str, Any]], timeout: float) -> None:
    """Receive message.new events into `into` until every client_id in `want` was seen."""
    seen = {e["message"]["client_id"] for e in into}
    while not want <= seen:
        frame = await sock.until(lambda f: f["type"] == "message.new", timeout=timeout)
        into.append(frame)
        seen.add(frame["message"]["client_id"])


async def drain(sock: Socket, into: list[dict[str, Any]]) -> None:
    """Read what the socket still holds until it reports closed."""
    with contextlib.suppress(ConnectionError, TimeoutError, asyncio.TimeoutError):
        while True:
            frame = await sock.recv(timeout=5)
            if frame["type"] == "message.new":
                into.append(frame)


def assert_in_order_once(received: list[dict[str, Any]], acked: set[str]) -> None:
    client_ids = [e["message"]["client_id"] for e in received]
    assert len(client_ids) == len(set(client_ids)), "a message arrived twice"
    assert acked <= set(client_ids), f"lost: {sorted(acked - set(client_ids))[:5]}"
    seqs = [e["message"]["seq"] for e in received]
    assert seqs == sorted(seqs), "out of order"
    cursors = [e["cursor"] for e in received]
    assert cursors == sorted(cursors)


async def test_kill_9_mid_stream_loses_nothing_acknowledged(database_url: str, tmp_path: Path):
    env = sup_env(tmp_path, database_url, SUP_SECRET_KEY=SECRET)
    server = await Running.start(env)
    async with aiohttp.ClientSession() as session:
        api = Api(server.url, session)
        alice, bob, chat = await two_in_a_group(api)
        receiver = await Socket.connect(server.url, session, bob.access_token)
        await receiver.events(1, "chat.created")
        sender = await Socket.connect(server.url, session, alice.access_token)
        total = 400
        for i in range(total):
            await sender.send({"type": "message.send", "chat_id": chat, "client_id": f"k{i}", "body": str(i)})
        acked: set[str] = set()
        while len(acked) < 150:
            frame = await sender.until(lambda f: f["type"] == "message.sent")
            acked.add(frame["message"]["client_id"])
        await server.kill()  # mid-stream: more sends are queued, some committed, some not
        received: list[dict[str, Any]] = []
        await drain(receiver, received)
        with contextlib.suppress(ConnectionError, TimeoutError, asyncio.TimeoutError):
            while True:
                frame = await sender.recv(timeout=5)
                if frame["type"] == "message.sent":
                    acked.add(frame["message"]["client_id"])

        restarted = await Running.start(env)
        try:
            cursor = received[-1]["cursor"] if received else 1
            back = await Socket.connect(restarted.url, session, bob.access_token, cursor=cursor)
            await collect(back, acked, received, timeout=15)
            await back.close()
            assert_in_order_once(received, acked)
            history = await Api(restarted.url, session).get(
                f"/api/v1/messages/chat/{chat}", params={"after": "0", "limit": "200"}, token=bob.access_token
            )
            seqs = [m["seq"] for m in history.body["items"]]
            assert seqs == list(range(1, len(seqs) + 1))  # gap-free after the crash too
        finally:
            await restarted.stop()


async def two_processes(database_url: str, tmp_path: Path, bus_url: str, **extra: str) -> tuple[Running, Running]:
    envs = [
        sup_env(
            tmp_path / name,
            database_url,
            SUP_SECRET_KEY=SECRET,
            SUP_BUS_URL=bus_url,
            SUP_WEBSOCKET_CATCH_UP_SECONDS="1",
            **extra,
        )
        for name in ("a", "b")
    ]
    first = await Running.start(envs[0])
    second = await Running.start(envs[1])
    return first, second


async def test_two_processes_share_events_and_survive_one_being_killed(fresh_postgres, tmp_path: Path):
    # The machine's running Postgres and Redis, as an operator would deploy it.
    database_url = await fresh_postgres.create()
    a, b = await two_processes(database_url, tmp_path, await require_redis())
    try:
        async with aiohttp.ClientSession() as session:
            api_a, api_b = Api(a.url, session), Api(b.url, session)
            alice, bob = await api_a.register(), await api_b.register()
            chat = await plain_group(api_a, alice, bob)
            on_a = await Socket.connect(a.url, session, alice.access_token)
            on_b = await Socket.connect(b.url, session, bob.access_token)

            # presence and typing cross over through Redis
            await on_a.until(lambda f: f["type"] == "presence" and f["user_id"] == bob.user_id and f["online"])
            await on_b.send({"type": "typing", "chat_id": chat})
            typing = await on_a.until(lambda f: f["type"] == "typing")
            assert typing["user_id"] == bob.user_id

            # events cross both ways, in order
            for i in range(30):
                await on_a.send({"type": "message.send", "chat_id": chat, "client_id": f"a{i}", "body": f"a{i}"})
            got_b: list[dict[str, Any]] = []
            await collect(on_b, {f"a{i}" for i in range(30)}, got_b, timeout=10)
            assert [e["message"]["body"] for e in got_b] == [f"a{i}" for i in range(30)]
            reply = await say(api_b, bob, chat, "from b")
            assert reply.status == 201
            echoed = await on_a.until(
                lambda f: f["type"] == "message.new" and f["message"]["client_id"] == reply.body["client_id"]
            )
            assert echoed["message"]["body"] == "from b"

            # bob streams from B; alice on A loses her process mid-stream and moves to B
            got_a: list[dict[str, Any]] = [echoed]
            for i in range(200):
                await on_b.send({"type": "message.send", "chat_id": chat, "client_id": f"b{i}", "body": f"b{i}"})
            acked: set[str] = set()
            while len(acked) < 60:
                frame = await on_b.until(lambda f: f["type"] == "message.sent")
                acked.add(frame["message"]["client_id"])
            await a.kill()
            await drain(on_a, got_a)
            while len(acked) < 200:
                frame = await on_b.until(lambda f: f["type"] == "message.sent", timeout=15)
                acked.add(frame["message"]["client_id"])
            moved = await Socket.connect(b.url, session, alice.access_token, cursor=got_a[-1]["cursor"])
            await collect(moved, acked, got_a, timeout=15)
            assert_in_order_once(got_a, acked | {reply.body["client_id"]})
            for sock in (on_b, moved):
                await sock.close()
    finally:
        for process in (a, b):
            await process.stop()


async def test_redis_is_only_a_hint_a_ten_second_outage_loses_nothing(fresh_postgres, redis_server, tmp_path: Path):
    database_url = await fresh_postgres.create()
    a, b = await two_processes(database_url, tmp_path, redis_server.url)
    try:
        async with aiohttp.ClientSession() as session:
            api_a = Api(a.url, session)
            alice, bob = await api_a.register(), await api_a.register()
            chat = await plain_group(api_a, alice, bob)
            sender = await Socket.connect(a.url, session, alice.access_token)
            receiver = await Socket.connect(b.url, session, bob.access_token)
            received: list[dict[str, Any]] = []
            acked: set[str] = set()

            async def storm(prefix: str, count: int) -> None:
                for i in range(count):
                    await sender.send(
                        {"type": "message.send", "chat_id": chat, "client_id": f"{prefix}{i}", "body": str(i)}
                    )
                    await asyncio.sleep(0.02)

            async def acks() -> None:
                while True:
                    frame = await sender.until(lambda f: f["type"] == "message.sent", timeout=30)
                    acked.add(frame["message"]["client_id"])

            ack_task = asyncio.create_task(acks())
            await storm("before", 50)
            await redis_server.stop()
            outage = asyncio.create_task(storm("during", 250))  # ~5 s of sends
            await asyncio.sleep(10)
            await outage
            await redis_server.start()
            await storm("after", 50)
            await asyncio.sleep(0.5)
            ack_task.cancel()
            assert len(acked) == 350
            # Delivery went on from the database the whole time; once Redis is back it is live again.
            await collect(receiver, acked, received, timeout=15)
            assert_in_order_once(received, acked)
            await sender.close()
            await receiver.close()
    finally:
        for process in (a, b):
            await process.stop()
        assert "Traceback" not in a.log + b.log


class DropResponses:
    """A TCP proxy that forwards requests and swallows the answers: the response is 'lost'."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        up_writer.write(head + await reader.readexactly(length))
        await up_writer.drain()
        await up_reader.read(1)  # the server answered...
        writer.close()  # ...and the client never hears it
        up_writer.close()

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_a_lost_response_and_a_retry_make_one_message(server: Server):
    api = server.api
    alice, _, chat = await two_in_a_group(api)
    proxy = DropResponses(int(server.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    client_id = str(uuid.uuid4())
    body = {"chat_id": chat, "client_id": client_id, "body": "did it arrive?"}
    lossy = Api(f"http://127.0.0.1:{port}", api.session)
    with pytest.raises(aiohttp.ClientError):
        await lossy.post("/api/v1/messages", json=body, token=alice.access_token)
    await proxy.close()
    retry = await api.post("/api/v1/messages", json=body, token=alice.access_token)
    assert retry.status == 200  # the first attempt was stored; this is it again
    assert await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE client_id = $1", client_id) == 1
