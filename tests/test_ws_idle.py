"""Idle sockets are cheap (issue 15): one heartbeat loop for all of them, no queue, task or timer per
idle connection, and still every dead peer is found and every live one kept."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from sup.ws.hub import HUB
from tests.conftest import Server, Socket, plain_group, say
from tests.test_ws_abuse import closed_with, connect

HEARTBEAT = 0.4


@pytest.fixture(scope="module")
async def beating(server_factory) -> Server:
    return await server_factory(SUP_WEBSOCKET_HEARTBEAT_SECONDS=str(HEARTBEAT))


async def test_an_idle_connection_holds_no_queue_and_no_timer_of_its_own(beating: Server):
    alice, bob = await beating.api.register(), await beating.api.register()
    chat = await plain_group(beating.api, alice, bob)
    sock = await connect(beating, bob)
    await sock.send({"type": "ping", "request_id": "p"})
    assert (await sock.until(lambda f: f["type"] == "pong"))["request_id"] == "p"
    await say(beating.api, alice, chat, "hello")
    assert (await sock.until(lambda f: f["type"] == "message.new"))["type"] == "message.new"
    await asyncio.sleep(0.1)  # the pump has written everything and waits
    (connection,) = beating.app[HUB].connections_of(bob.device_id)
    assert (connection._pending, connection._control, connection._ephemeral) == (None, None, None)
    assert connection.pump_task is None  # no task either: the writer runs only while there is something to write
    assert not hasattr(connection, "__dict__")
    assert connection.ws._heartbeat_cb is None  # aiohttp's per-socket heartbeat timer is not used
    await say(beating.api, alice, chat, "again")  # and the queues come back when needed
    assert (await sock.until(lambda f: f["type"] == "message.new"))["message"]["chat_id"] == chat


async def test_the_stall_check_asks_the_kernel_nothing_about_an_idle_socket(beating: Server, monkeypatch):
    # The hub checks every socket each round; among thousands, a system call each held deliveries.
    alice, bob = await beating.api.register(), await beating.api.register()
    chat = await plain_group(beating.api, alice, bob)
    sock = await connect(beating, bob)
    await say(beating.api, alice, chat, "hello")
    assert (await sock.until(lambda f: f["type"] == "message.new"))["type"] == "message.new"
    await asyncio.sleep(0.2)  # written and acknowledged
    (connection,) = beating.app[HUB].connections_of(bob.device_id)
    asked: list[object] = []
    real = type(connection)._unacknowledged
    monkeypatch.setattr(type(connection), "_unacknowledged", lambda self: asked.append(self) or real(self))
    now = asyncio.get_running_loop().time()
    assert not connection.stalled(now, 0.0, 1)  # finds all acknowledged (asking, unless the hub's round just did)
    first = len(asked)
    assert first <= 1
    assert not connection.stalled(now + 1, 0.0, 1)  # nothing new was written since: no question asked
    assert not connection.stalled(now + 2, 0.0, 1)
    assert len(asked) == first
    await say(beating.api, alice, chat, "again")  # something written since: asked again
    assert (await sock.until(lambda f: f["type"] == "message.new"))["message"]["body"] == "again"
    await asyncio.sleep(0.2)
    assert not connection.stalled(now + 3, 0.0, 1)
    assert len(asked) >= first + 1  # (the hub's own round may have asked too)
    await sock.close()


async def test_a_client_that_answers_pings_stays_connected_while_idle(beating: Server):
    account = await beating.api.register()
    sock = await connect(beating, account)
    reading = asyncio.create_task(sock.recv())  # while it reads, aiohttp answers the server's pings (autoping)
    await asyncio.sleep(HEARTBEAT * 6)
    assert not sock.ws.closed and not reading.done()
    await sock.send({"type": "ping", "request_id": "still"})
    assert (await reading)["request_id"] == "still"


async def test_a_client_that_does_not_answer_pings_is_closed(beating: Server):
    account = await beating.api.register()
    ws = await beating.api.session.ws_connect(beating.url + "/api/v1/ws", autoping=False, heartbeat=None)
    sock = Socket(ws, False)
    await sock.send({"type": "authenticate", "token": account.access_token})
    assert (await sock.recv())["type"] == "ready"
    pinged = await ws.receive(timeout=HEARTBEAT * 4)  # the server pings a silent socket...
    assert pinged.type == aiohttp.WSMsgType.PING
    # ...and, unanswered, closes it (without a close frame: the peer is presumed dead)
    await closed_with(sock, timeout=HEARTBEAT * 6)
    assert ws.closed
    await asyncio.sleep(0.1)
    assert beating.app[HUB].connections_of(account.device_id) == []
