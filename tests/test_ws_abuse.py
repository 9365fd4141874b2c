"""One client must not hurt the others (issue 10, points 3-6 and 8): revoked devices lose their sockets
at once on every process, typing floods cost no database work, replies and frames are bounded, sends share
REST's rate limit, slow steady readers stay, and the listener times out slow and idle connections."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import subprocess
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from sup.ws.hub import HUB
from tests.conftest import (
    Account,
    Api,
    Server,
    Socket,
    connect,
    overload,
    plain_group,
    require_redis,
    say,
    two_in_a_group,
)
from tests.processes import Running, sup_env
from tests.test_ws import small_receive_buffer


async def closed_with(sock: Socket, timeout: float = 5) -> int | None:
    """Read until the socket closes; its close code (TimeoutError if it stays open)."""
    async with asyncio.timeout(timeout):
        for read in itertools.count(1):
            try:
                await sock.recv(timeout=timeout)
            except ConnectionError:
                return sock.ws.close_code
            if read % 64 == 0:
                # Buffered frames are read without suspending: thousands of them would hold the
                # event loop, which this client shares with the server, for most of a second.
                await asyncio.sleep(0)
    raise AssertionError("unreachable")


async def both_online(server: Server, alice: Account, bob: Account) -> tuple[Socket, Socket]:
    """Bob connects, then Alice: their sockets, once Bob has seen Alice come online."""
    bob_sock = await connect(server, bob)
    alice_sock = await connect(server, alice)
    await bob_sock.until(lambda f: f["type"] == "presence" and f["user_id"] == alice.user_id)
    return alice_sock, bob_sock


@pytest.fixture(scope="module")
async def quiet(server_factory) -> Server:
    """A server whose periodic database check is too rare to matter (60 s): only the bus can close a
    revoked device's socket in time, and no background query runs while queries are counted."""
    return await server_factory(
        SUP_WEBSOCKET_CATCH_UP_SECONDS="60",
        SUP_WEBSOCKET_FRAME_BURST="100000",
        SUP_WEBSOCKET_REPLY_QUEUE_LIMIT="32",
    )


# -- point 3: every way a device stops being active closes its sockets at once -------------------


async def _delete_device(server: Server, owner: Account, device: Account) -> None:
    reply = await server.api.delete(f"/api/v1/devices/{device.device_id}", token=owner.access_token)
    assert reply.status == 204, reply.body


async def _logout(server: Server, owner: Account, device: Account) -> None:
    assert (await server.api.post("/api/v1/auth/logout", token=device.access_token)).status == 204


async def _change_password(server: Server, owner: Account, device: Account) -> None:
    body = {"current_password": owner.password, "new_password": "another horse battery staple"}
    reply = await server.api.post("/api/v1/auth/password", json=body, token=owner.access_token)
    assert reply.status == 204, reply.body


async def _delete_account(server: Server, owner: Account, device: Account) -> None:
    reply = await server.api.post("/api/v1/account/delete", json={"password": owner.password}, token=owner.access_token)
    assert reply.status in (200, 202, 204), reply.body


@pytest.mark.parametrize("revoke", [_delete_device, _logout, _change_password, _delete_account])
async def test_a_revoked_device_loses_its_socket_at_once(quiet: Server, revoke: Callable[..., Any]):
    owner = await quiet.api.register()
    phone = await quiet.api.new_device(owner, device_name="phone")
    sock = await connect(quiet, phone)
    await revoke(quiet, owner, phone)
    # Within 5 s, with the periodic check 60 s away: the revocation itself closed it.
    assert await closed_with(sock, timeout=5) == 4003


async def test_a_revoked_device_loses_its_socket_on_another_process(fresh_postgres, tmp_path):
    """Two `sup run` processes on one Postgres and one Redis: the device's socket is on A, it is revoked
    through B, and A closes the socket at once (its own periodic check is 60 s away)."""
    redis_url = await require_redis()
    database_url = await fresh_postgres.create()
    env = {"SUP_BUS_URL": redis_url, "SUP_WEBSOCKET_CATCH_UP_SECONDS": "60"}
    a = await Running.start(sup_env(tmp_path / "a", database_url, **env))
    b = await Running.start(sup_env(tmp_path / "b", database_url, **env))
    try:
        async with aiohttp.ClientSession() as session:
            api_a, api_b = Api(a.url, session), Api(b.url, session)
            owner = await api_b.register()
            phone = await api_a.new_device(owner, device_name="phone")
            sock = await Socket.connect(a.url, session, phone.access_token)
            for _ in range(100):  # both processes listen on Redis
                if "subscribed to" in a.log and "subscribed to" in b.log:
                    break
                await asyncio.sleep(0.1)
            reply = await api_b.delete(f"/api/v1/devices/{phone.device_id}", token=owner.access_token)
            assert reply.status == 204
            assert await closed_with(sock, timeout=5) == 4003
    finally:
        await a.stop()
        await b.stop()


async def test_frames_after_the_revocation_are_not_handled(quiet: Server):
    api = quiet.api
    owner, friend = await api.register(), await api.register()
    chat = await plain_group(api, owner, friend)
    phone = await api.new_device(owner, device_name="phone")
    sock = await connect(quiet, phone)
    await api.delete(f"/api/v1/devices/{phone.device_id}", token=owner.access_token)
    for i in range(20):  # sent after DELETE answered: none may be stored
        try:
            await sock.send({"type": "message.send", "chat_id": chat, "client_id": f"late{i}", "body": "late"})
        except ConnectionError:
            break
    assert await closed_with(sock) == 4003
    history = await api.get(f"/api/v1/messages/chat/{chat}", token=friend.access_token)
    assert [m for m in history.body["items"] if m["body"] == "late"] == []


# -- point 4: typing costs no database work per frame --------------------------------------------


class QueryCounter:
    """Counts the queries the server's database runs (the real one, wrapped)."""

    def __init__(self, db: Any) -> None:
        self.count = 0
        self._db = db
        self._originals = {name: getattr(db, name) for name in ("execute", "fetch", "fetchrow", "fetchval")}

    def __enter__(self) -> QueryCounter:
        for name, original in self._originals.items():
            setattr(self._db, name, self._counted(original))
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._originals:
            delattr(self._db, name)

    def _counted(self, original: Callable[..., Any]) -> Callable[..., Any]:
        async def counted(*args: Any) -> Any:
            self.count += 1
            return await original(*args)

        return counted


async def test_a_typing_flood_costs_no_database_work_and_is_coalesced(quiet: Server):
    api = quiet.api
    alice, bob, chat = await two_in_a_group(api)
    alice_sock, bob_sock = await both_online(quiet, alice, bob)
    await alice_sock.send({"type": "ping", "request_id": "before"})
    await alice_sock.until(lambda f: f.get("request_id") == "before")
    tasks_before = len(asyncio.all_tasks())
    most_tasks = 0
    with QueryCounter(quiet.db) as queries:
        for i in range(3000):
            await alice_sock.send({"type": "typing", "chat_id": chat, "active": True})
            if i % 100 == 0:
                most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        await alice_sock.send({"type": "ping", "request_id": "after"})  # every typing frame was read before it
        await alice_sock.until(lambda f: f.get("request_id") == "after", timeout=30)
        await asyncio.sleep(1)  # a relay round that was due has run
    # Who is in the chat is read once (the membership and the member list), not twice per frame.
    assert queries.count <= 4, queries.count
    assert most_tasks - tasks_before < 20  # no task per frame
    typing = []
    while True:
        try:
            frame = await bob_sock.recv(timeout=1)
        except TimeoutError:
            break
        if frame["type"] == "typing":
            typing.append(frame)
    assert 1 <= len(typing) <= 3  # 3,000 frames of one state in a few seconds: one notice (renewed at most twice)
    assert typing[0]["user_id"] == alice.user_id and typing[0]["chat_id"] == chat
    # A change of state still goes through at once.
    await alice_sock.send({"type": "typing", "chat_id": chat, "active": False})
    stopped = await bob_sock.until(lambda f: f["type"] == "typing")
    assert stopped["active"] is False
    await alice_sock.close()
    await bob_sock.close()


async def test_a_typing_notice_still_waiting_when_its_message_is_sent_is_dropped(quiet: Server):
    """Coalescing holds a notice back up to half a second; it must not arrive after the message it announced."""
    api = quiet.api
    alice, bob, chat = await two_in_a_group(api)
    alice_sock, bob_sock = await both_online(quiet, alice, bob)
    await alice_sock.send({"type": "typing", "chat_id": chat, "active": False})  # relayed at once
    await bob_sock.until(lambda f: f["type"] == "typing")
    await alice_sock.send({"type": "typing", "chat_id": chat, "active": True})  # waits for the next round
    await alice_sock.send({"type": "message.send", "chat_id": chat, "client_id": "typed", "body": "typed it"})
    await bob_sock.until(lambda f: f["type"] == "message.new")
    late = []
    with contextlib.suppress(TimeoutError):
        while True:
            frame = await bob_sock.recv(timeout=1.5)
            if frame["type"] == "typing" and frame["active"]:
                late.append(frame)
    assert late == []
    await alice_sock.close()
    await bob_sock.close()


async def test_typing_in_a_chat_one_is_not_in_is_refused_without_a_flood_of_errors(quiet: Server):
    api = quiet.api
    alice, bob, eve = await api.register(), await api.register(), await api.register()
    chat = await plain_group(api, alice, bob)
    eve_sock = await connect(quiet, eve)
    for _ in range(200):
        await eve_sock.send({"type": "typing", "chat_id": chat})
    await eve_sock.send({"type": "ping", "request_id": "p"})
    frames = []
    while True:
        frame = await eve_sock.recv()
        frames.append(frame)
        if frame.get("request_id") == "p":
            break
    await asyncio.sleep(1)
    while True:
        try:
            frames.append(await eve_sock.recv(timeout=1))
        except TimeoutError:
            break
    errors = [f for f in frames if f["type"] == "error"]
    assert 1 <= len(errors) <= 3 and errors[0]["code"] == "not_found"
    await eve_sock.close()


# -- point 5: bounded replies, a frame budget, and REST's send limit ----------------------------


async def test_a_client_that_draws_replies_and_never_reads_is_bounded_then_closed(server_factory):
    server = await server_factory(
        SUP_WEBSOCKET_CATCH_UP_SECONDS="0.2",
        SUP_WEBSOCKET_SEND_TIMEOUT_SECONDS="1",
        SUP_WEBSOCKET_FRAME_BURST="1000000",
        SUP_WEBSOCKET_FRAMES_PER_SECOND="1000000",
        SUP_WEBSOCKET_REPLY_QUEUE_LIMIT="32",
    )
    bob = await server.api.register()
    sock = await connect(server, bob)
    small_receive_buffer(sock)
    hub = server.app[HUB]
    (connection,) = hub.connections_of(bob.device_id)
    most = 0

    async def flood() -> None:  # ~9 MB of pings whose pongs nobody reads
        ping = '{"type":"ping","request_id":"%s"}' % ("x" * 32)
        for i in range(200_000):
            await sock.ws.send_str(ping)
            if i % 20 == 0:
                await asyncio.sleep(0)  # the client's sends rarely wait: let the server (same loop) run

    flooding = asyncio.create_task(flood())
    for _ in range(400):
        most = max(most, connection.replies_waiting)
        if connection.closing or flooding.done():
            break
        await asyncio.sleep(0.025)
    assert most <= 32  # never more replies held than the limit
    # Stop flooding once dropped: this loop is also the client that must now read its way to the close.
    flooding.cancel()
    with pytest.raises((asyncio.CancelledError, ConnectionError, aiohttp.ClientError)):
        await flooding
    assert await closed_with(sock, timeout=30) == 4008  # a slow consumer: resume later


async def test_a_connection_over_its_frame_budget_is_told_then_closed(server_factory):
    server = await server_factory(SUP_WEBSOCKET_FRAMES_PER_SECOND="1", SUP_WEBSOCKET_FRAME_BURST="20")
    bob = await server.api.register()
    sock = await connect(server, bob)
    for i in range(25):
        await sock.send({"type": "ping", "request_id": str(i)})
    frames = [await sock.recv() for _ in range(21)]
    pongs = [f for f in frames if f["type"] == "pong"]
    (error,) = [f for f in frames if f["type"] == "error"]
    assert len(pongs) == 20
    assert error["code"] == "rate_limited" and error["status"] == 429 and error["retry_after"] > 0
    for i in range(25):  # ignoring the warning: as many frames again as the burst
        try:
            await sock.send({"type": "ping", "request_id": f"again{i}"})
        except ConnectionError:
            break
    assert await closed_with(sock) == 4029


async def test_sends_share_one_rate_limit_with_rest(server_factory):
    server = await server_factory(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_SENDS_PER_DEVICE="5")
    api = server.api
    alice, _, chat = await two_in_a_group(api)
    for i in range(3):
        assert (await say(api, alice, chat, f"rest {i}")).status == 201
    sock = await connect(server, alice)
    answers = []
    for i in range(3):
        await sock.send(
            {"type": "message.send", "request_id": f"r{i}", "chat_id": chat, "client_id": f"w{i}", "body": "ws"}
        )
        answers.append(await sock.until(lambda f, i=i: f.get("request_id") == f"r{i}"))
    assert [a["type"] for a in answers] == ["message.sent", "message.sent", "error"]
    assert answers[2]["code"] == "rate_limited" and answers[2]["status"] == 429 and answers[2]["retry_after"] > 0
    refused = await say(api, alice, chat, "rest again")
    assert refused.status == 429 and refused.code == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    other = await api.new_device(alice)  # the budget is the device's, not the user's
    assert (await say(api, other, chat, "from the other device")).status == 201
    await sock.close()


# -- point 6: liveness by progress ---------------------------------------------------------------


async def test_a_slow_but_steady_reader_is_not_dropped(server_factory):
    """A reader taking ~250 KiB/s while megabytes wait for it keeps its socket past many 3 s windows.

    Timing one send cut it: the kernel reports the socket writable only once a third of its send
    buffer (4 MiB) is free, which at 250 KiB/s is five seconds after the previous write. (The
    window is 3 s, not 1, because loopback's 64 KiB segments make the reader's acknowledgements
    arrive in bursts up to a second apart.)"""
    window = 3 * overload(most=4)  # this loop is the reader and the server: starved, both slow down
    server = await server_factory(
        SUP_WEBSOCKET_CATCH_UP_SECONDS="0.2",
        SUP_WEBSOCKET_SEND_TIMEOUT_SECONDS=str(window),
        SUP_WEBSOCKET_FRAME_BURST="100000",
    )
    api = server.api
    alice, bob, chat = await two_in_a_group(api)
    slow = await connect(server, bob)
    small_receive_buffer(slow)
    (connection,) = server.app[HUB].connections_of(bob.device_id)
    sender = await connect(server, alice)
    big = "y" * 16_000
    total = 1200  # ~19 MB for bob: more than the socket buffers hold, so the server waits on him

    async def flood() -> None:
        for i in range(total):
            await sender.send({"type": "message.send", "chat_id": chat, "client_id": f"b{i}", "body": f"{i} {big}"})

    async def read_acks() -> None:  # the sender reads what it gets, as it goes
        while True:
            await sender.recv(timeout=60)

    flooding = asyncio.gather(flood(), read_acks())
    loop = asyncio.get_running_loop()
    started = loop.time()
    seen = 0
    while loop.time() - started < 4 * window:
        frame = await slow.recv(timeout=10)
        seen += frame["type"] == "message.new"
        await asyncio.sleep(16_000 / (250 * 1024))
    assert not slow.ws.closed and not connection.closing and seen > 50
    flooding.cancel()
    with contextlib.suppress(asyncio.CancelledError, ConnectionError, TimeoutError):
        await flooding
    await slow.close()
    await sender.close()


# -- point 8: the listener -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def strict(server_factory) -> Server:
    return await server_factory(SUP_SERVER_HEADER_TIMEOUT_SECONDS="1", SUP_SERVER_KEEPALIVE_TIMEOUT_SECONDS="1")


async def _open(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _closed_by_server(reader: asyncio.StreamReader, timeout: float = 6) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_a_silent_connection_is_closed(strict: Server):
    reader, writer = await _open(strict)
    assert await _closed_by_server(reader)
    writer.close()


async def test_trickled_headers_are_timed_out(strict: Server):
    reader, writer = await _open(strict)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    async def trickle() -> None:
        for i in range(100):
            writer.write(b"X-Slow-%d: y\r\n" % i)
            await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    assert await _closed_by_server(reader)
    trickling.cancel()
    with pytest.raises((asyncio.CancelledError, ConnectionError)):
        await trickling
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed(strict: Server):
    reader, writer = await _open(strict)
    writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 200")
    assert await _closed_by_server(reader)  # nothing more is asked: closed after the 1 s keep-alive
    writer.close()


async def test_a_request_after_a_pause_on_a_kept_alive_connection_is_served(server_factory):
    server = await server_factory(SUP_SERVER_HEADER_TIMEOUT_SECONDS="1", SUP_SERVER_KEEPALIVE_TIMEOUT_SECONDS="5")
    reader, writer = await _open(server)
    for _ in range(3):  # each request's headers come at once, well within the header timeout
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(1.5)  # longer than the header timeout, shorter than the keep-alive one
        while (line := await asyncio.wait_for(reader.readline(), 5)) != b"\r\n":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
    writer.close()


def _frame(payload: bytes, *, masked: bool, opcode: int = 1) -> bytes:
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if masked else 0
    if len(payload) < 126:
        head += bytes([mask_bit | len(payload)])
    else:
        head += bytes([mask_bit | 126]) + len(payload).to_bytes(2, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 300, 65535])
def test_the_mask_check_reads_headers_split_anywhere_as_whole_ones(size: int):
    """A frame header cut by TCP at any byte is read as one that came whole (headers are read in place)."""
    from sup.ws.masking import MaskedFramesOnly

    class Parser:
        def __init__(self) -> None:
            self.fed = b""

        def feed_data(self, data: bytes) -> tuple[bool, bytes]:
            self.fed += data
            return False, b""

    class Queue:
        refused = False

        def set_exception(self, exc: BaseException) -> None:
            self.refused = True

    good = _frame(b"x" * size, masked=True) + _frame(b"y" * 7, masked=True)
    for stream, refused in ((good, False), (good + _frame(b"z", masked=False), True)):
        for cut in range(len(stream)):
            parser, queue = Parser(), Queue()
            guard = MaskedFramesOnly(parser, queue)
            guard.feed_data(stream[:cut])
            guard.feed_data(stream[cut:])
            assert queue.refused is refused
            if not refused:
                assert parser.fed == stream
            else:  # the frames before it reach the parser; of the unmasked one at most the byte before its mask bit
                assert parser.fed.startswith(good) and len(parser.fed) <= len(good) + 1


async def _raw_websocket(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await _open(server)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 101")
    while await asyncio.wait_for(reader.readline(), 5) != b"\r\n":
        pass
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int:
    """Read server frames until the close frame; its code."""
    while True:
        head = await asyncio.wait_for(reader.readexactly(2), 5)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8), "big")
        payload = await reader.readexactly(length)
        if head[0] & 0x0F == 0x8:
            return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("first", ["unmasked", "masked-then-unmasked"])
async def test_an_unmasked_client_frame_closes_with_1002(quiet: Server, first: str):
    bob = await quiet.api.register()
    reader, writer = await _raw_websocket(quiet)
    auth = b'{"type":"authenticate","token":"%s"}' % bob.access_token.encode()
    if first == "unmasked":
        writer.write(_frame(auth, masked=False))
    else:
        writer.write(_frame(auth, masked=True) + _frame(b'{"type":"ping"}', masked=False))
    assert await _close_code(reader) == 1002
    writer.close()


async def test_masked_frames_split_anywhere_are_accepted(quiet: Server):
    """The mask check reads headers across reads: a frame cut into single bytes still works."""
    bob = await quiet.api.register()
    reader, writer = await _raw_websocket(quiet)
    data = _frame(b'{"type":"authenticate","token":"%s"}' % bob.access_token.encode(), masked=True)
    data += _frame(b'{"type":"ping","request_id":"' + b"z" * 60 + b'"}', masked=True)
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        if i % 50 == 0:
            await writer.drain()
    seen = b""
    async with asyncio.timeout(5):
        while b'"pong"' not in seen:
            seen += await reader.read(65536)
    writer.close()


async def test_the_listen_backlog_is_the_configured_one(tmp_path):
    running = await Running.start(sup_env(tmp_path / "data", SUP_SERVER_LISTEN_BACKLOG="777"))
    try:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{running.port}"], capture_output=True, text=True, check=True
        ).stdout
        backlogs = {line.split()[2] for line in out.splitlines() if line.strip()}
        assert backlogs == {"777"}, out
    finally:
        await running.stop()


# -- issue 11: no per-connection compression state ----------------------------------------------


async def test_permessage_deflate_is_not_negotiated(quiet: Server):
    bob = await quiet.api.register()
    ws = await quiet.api.session.ws_connect(quiet.url + "/api/v1/ws", compress=15)  # as a browser offers it
    assert ws.compress == 0
    await ws.send_json({"type": "authenticate", "token": bob.access_token})
    assert (await ws.receive_json(timeout=5))["type"] == "ready"
    await ws.close()
