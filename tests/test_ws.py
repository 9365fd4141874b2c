"""The WebSocket gateway: authenticate, resume from a cursor, live events, acks, sends,
typing and presence, msgpack, slow consumers, revoked devices and lost hints."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid

import aiohttp
import pytest

from sup.ws.hub import HUB
from tests.conftest import Api, Server, Socket, connect, plain_group, require_redis, say, two_in_a_group


@pytest.fixture(scope="module", params=["memory", "redis"])
async def rt(request, server_factory) -> Server:
    """A server that checks sockets against the database often, and lets slow consumers fall behind little;
    on the in-process bus, and on Redis (the machine's server, or TEST_REDIS_URL)."""
    bus = "memory://" if request.param == "memory" else await require_redis()
    return await server_factory(
        SUP_BUS_URL=bus,
        SUP_WEBSOCKET_CATCH_UP_SECONDS="0.2",
        SUP_WEBSOCKET_QUEUE_LIMIT="16",
        SUP_WEBSOCKET_SEND_TIMEOUT_SECONDS="1",
        SUP_WEBSOCKET_FRAME_BURST="100000",  # the slow-consumer test pipelines 1,500 sends
    )


async def test_authenticate_first(rt: Server):
    session = rt.api.session
    ws = await session.ws_connect(rt.url + "/api/v1/ws")
    await ws.send_str('{"type": "ack", "cursor": 1}')
    error = await ws.receive_json(timeout=5)
    assert error["type"] == "error" and error["code"] == "unauthenticated"
    assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.CLOSE and ws.close_code == 4001

    ws = await session.ws_connect(rt.url + "/api/v1/ws")
    await ws.send_str('{"type": "authenticate", "token": "sup1.forged.token"}')
    error = await ws.receive_json(timeout=5)
    assert error["code"] == "invalid_token" and error["status"] == 401
    await ws.receive(timeout=5)
    assert ws.close_code == 4001

    ws = await session.ws_connect(rt.url + "/api/v1/ws")
    await ws.send_str("{not json")
    assert (await ws.receive_json(timeout=5))["code"] == "validation_failed"
    await ws.receive(timeout=5)
    assert ws.close_code == 4400


async def test_live_events_in_seq_order(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    created = await sock.events(1, "chat.created")
    assert created[0]["chat"]["id"] == chat
    await asyncio.gather(*[say(api, alice, chat, f"m{i}") for i in range(20)])
    events = await sock.events(20, "message.new")
    assert [e["message"]["seq"] for e in events] == list(range(1, 21))
    cursors = [e["cursor"] for e in events]
    assert cursors == sorted(cursors) and len(set(cursors)) == 20
    await sock.close()


async def test_resume_from_cursor_gets_everything_missed_in_order(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    first = (await sock.events(1, "chat.created"))[0]
    await sock.close()
    for i in range(30):
        await say(api, alice, chat, f"while away {i}")
    back = await connect(rt, bob, cursor=first["cursor"])
    assert back.ready["resume_from"] == first["cursor"] and back.ready["resync"] is False
    missed = await back.events(30, "message.new")
    assert [e["message"]["body"] for e in missed] == [f"while away {i}" for i in range(30)]
    await say(api, alice, chat, "live again")
    live = await back.events(1, "message.new")
    assert live[0]["message"]["body"] == "live again"
    await back.close()


async def test_without_a_cursor_the_stream_starts_after_the_last_ack(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    await say(api, alice, chat, "one")
    events = await sock.events(2)
    await sock.ack(events[-1]["cursor"])
    await sock.send({"type": "ping", "request_id": "p"})
    await sock.until(lambda f: f["type"] == "pong")
    await sock.close()  # the server stores the last ack as the socket closes
    await say(api, alice, chat, "two")
    for _ in range(50):  # the close is processed on the server's side of the socket, soon
        again = await connect(rt, bob)
        if again.ready["resume_from"] == events[-1]["cursor"]:
            break
        await again.close()
        await asyncio.sleep(0.05)
    assert again.ready["resume_from"] == events[-1]["cursor"]
    (event,) = await again.events(1)
    assert event["message"]["body"] == "two"
    await again.close()


async def test_a_new_device_starts_at_its_creation(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    await say(api, alice, chat, "before the phone")
    phone = (await api.login(bob, device_name="phone")).body
    await say(api, alice, chat, "after the phone")
    sock = await connect(rt, phone)
    (event,) = await sock.events(1)
    assert event["type"] == "message.new" and event["message"]["body"] == "after the phone"
    assert event["cursor"] == 1
    await sock.close()


async def test_every_connection_of_a_device_gets_every_event(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    tabs = [await connect(rt, bob) for _ in range(3)]
    await say(api, alice, chat, "to all tabs")
    for tab in tabs:
        events = await tab.events(2)
        assert events[-1]["message"]["body"] == "to all tabs"
        await tab.close()


async def test_send_over_websocket_is_acknowledged_with_id_and_seq(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sender, receiver = await connect(rt, alice), await connect(rt, bob)
    for i in range(10):
        await sender.send(
            {"type": "message.send", "request_id": f"r{i}", "chat_id": chat, "client_id": f"c{i}", "body": f"ws {i}"}
        )
    acks = {}
    while len(acks) < 10:
        frame = await sender.until(lambda f: f["type"] == "message.sent")
        acks[frame["request_id"]] = frame["message"]
    assert [acks[f"r{i}"]["seq"] for i in range(10)] == list(range(1, 11))  # pipelined sends keep their order
    received = await receiver.events(10, "message.new")
    assert [e["message"]["id"] for e in received] == [acks[f"r{i}"]["id"] for i in range(10)]

    await sender.send(
        {"type": "message.send", "request_id": "again", "chat_id": chat, "client_id": "c0", "body": "ws 0"}
    )
    again = await sender.until(lambda f: f.get("request_id") == "again")
    assert again["type"] == "message.sent" and again["created"] is False and again["message"]["id"] == acks["r0"]["id"]

    await sender.send(
        {"type": "message.send", "request_id": "bad", "chat_id": str(uuid.uuid4()), "client_id": "z", "body": "nowhere"}
    )
    error = await sender.until(lambda f: f.get("request_id") == "bad")
    assert error["type"] == "error" and error["status"] == 404 and error["code"] == "not_found"
    await sender.send({"type": "message.send", "chat_id": chat})  # missing client_id
    assert (await sender.until(lambda f: f["type"] == "error"))["code"] == "validation_failed"
    await sender.close()
    await receiver.close()


async def test_msgpack_subprotocol_carries_the_same_events(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob, use_msgpack=True)
    assert sock.ws.protocol == "sup.msgpack"
    await say(api, alice, chat, "packed")
    events = await sock.events(2)
    assert events[-1]["message"]["body"] == "packed"
    await sock.send({"type": "message.send", "request_id": "m", "chat_id": chat, "client_id": "mp", "body": "back"})
    sent = await sock.until(lambda f: f["type"] == "message.sent")
    assert sent["message"]["seq"] == 2
    await sock.close()


async def test_typing_and_presence_are_ephemeral(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    bob_sock = await connect(rt, bob)
    alice_sock = await connect(rt, alice)
    online = await bob_sock.until(lambda f: f["type"] == "presence")
    assert online == {
        "type": "presence",
        "cursor": None,
        "user_id": alice.user_id,
        "online": True,
        "last_seen_at": None,
    }
    await alice_sock.send({"type": "typing", "chat_id": chat})
    typing = await bob_sock.until(lambda f: f["type"] == "typing")
    assert typing["cursor"] is None and typing["user_id"] == alice.user_id and typing["expires_in"] > 0
    status = await api.get(f"/api/v1/users/{alice.user_id}/presence", token=bob.access_token)
    assert status.body["online"] is True
    await alice_sock.close()
    offline = await bob_sock.until(lambda f: f["type"] == "presence")
    assert offline["online"] is False and offline["last_seen_at"]

    hidden = await api.request(
        "PUT", "/api/v1/users/me/presence", json={"visibility": "nobody"}, token=alice.access_token
    )
    assert hidden.status == 204
    alice_sock = await connect(rt, alice)
    status = await api.get(f"/api/v1/users/{alice.user_id}/presence", token=bob.access_token)
    assert status.body == {"user_id": alice.user_id, "online": False, "last_seen_at": None}
    await alice_sock.close()
    await bob_sock.close()


async def test_a_slow_consumer_is_closed_to_resume_and_loses_nothing(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    slow = await connect(rt, bob)  # reads nothing for now
    small_receive_buffer(slow)
    (connection,) = rt.app[HUB].connections_of(bob.device_id)
    big = "x" * 16_000
    total = 1500  # ~24 MB: more than loopback socket buffers can absorb, so the server must stall
    sender = await connect(rt, alice)

    async def read_acks() -> None:  # the sender reads as it goes (its own copies arrive too)
        acked = 0
        while acked < total:
            if (await sender.recv(timeout=30))["type"] == "message.sent":
                acked += 1

    async def flood() -> None:
        for i in range(total):
            await sender.send({"type": "message.send", "chat_id": chat, "client_id": f"s{i}", "body": f"{i} {big}"})
        await reading

    reading = asyncio.create_task(read_acks())
    flooding = asyncio.create_task(flood())
    # Not reading: once the socket takes in nothing for the 1 s window (checked every 0.2 s), the server
    # drops it; the close frame waits behind what is buffered, and a client that reads again soon gets it.
    for _ in range(600):
        if connection.closing:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the stalled socket was never dropped")
    seen = []
    try:
        while True:
            frame = await slow.recv(timeout=10)
            if frame["type"] == "message.new":
                seen.append(frame)
    except ConnectionError:
        pass
    await flooding
    assert slow.ws.close_code == 4008
    resumed = await connect(rt, bob, cursor=seen[-1]["cursor"])
    rest = await resumed.events(total - len(seen), "message.new", timeout=30)
    bodies = [int(e["message"]["body"].split()[0]) for e in seen + rest]
    assert bodies == list(range(total))
    await resumed.close()
    await sender.close()


def small_receive_buffer(sock: Socket, size: int = 512 * 1024) -> None:
    """A client socket that holds little: loopback's receive buffers grow to tens of megabytes (tcp_rmem),
    which would take in everything a test sends without the server ever waiting for the client."""
    sock.ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


async def test_revoked_device_socket_is_closed(rt: Server):
    api = rt.api
    bob = await api.register()
    phone = (await api.login(bob, device_name="phone")).body
    sock = await connect(rt, phone)
    await api.delete(f"/api/v1/devices/{phone['device_id']}", token=bob.access_token)
    with pytest.raises(ConnectionError):
        await sock.recv(timeout=10)
    assert sock.ws.close_code == 4003


async def test_a_lost_hint_is_covered_by_the_database_catch_up(rt: Server):
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    await sock.events(1)
    hub = rt.app[HUB]
    original = hub.on_deliveries
    hub.on_deliveries = lambda deliveries: None  # the bus loses every hint
    try:
        await say(api, alice, chat, "hint lost")
        (event,) = await sock.events(1, "message.new", timeout=5)
        assert event["message"]["body"] == "hint lost"
    finally:
        hub.on_deliveries = original
    await sock.close()


async def test_hints_that_cross_are_sent_in_order_and_a_missing_one_is_read_after_a_wait(rt: Server):
    """With several processes another process's hint often lands after this one's own (issue 15): a
    hint that skips a seq waits briefly for the missing one instead of reading the stream at once."""
    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    await sock.events(1)
    hub = rt.app[HUB]
    hub._checker.cancel()  # no periodic catch-up meanwhile: only the hints (and the wait) move the stream
    original, stream = hub.on_deliveries, hub._stream
    held, reads, read = [], [], stream.read

    async def counted_read(*args):
        reads.append(args)
        return await read(*args)

    hub.on_deliveries, stream.read = held.extend, counted_read
    try:
        for body in ("one", "two", "three", "four"):
            await say(api, alice, chat, body)
        one, two, _lost, four = [d for d in held if d.device_id == bob.device_id]
        original([two])
        original([one])
        assert [e["message"]["body"] for e in await sock.events(2, "message.new", timeout=5)] == ["one", "two"]
        assert reads == []
        original([four])  # three never comes: read from the database after the wait
        assert [e["message"]["body"] for e in await sock.events(2, "message.new", timeout=5)] == ["three", "four"]
        assert len(reads) == 1
    finally:
        hub.on_deliveries, stream.read = original, read
        await hub.start()
    await sock.close()


async def test_cursor_beyond_the_stream_is_refused(rt: Server):
    bob = await rt.api.register()
    ws = await rt.api.session.ws_connect(rt.url + "/api/v1/ws")
    await ws.send_json({"type": "authenticate", "token": bob.access_token, "cursor": 999})
    assert (await ws.receive_json(timeout=5))["code"] == "validation_failed"
    await ws.receive(timeout=5)
    assert ws.close_code == 4400


async def test_removed_member_hears_the_removal_then_nothing(rt: Server):
    api: Api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    sock = await connect(rt, bob)
    await sock.events(1, "chat.created")
    assert (await api.delete(f"/api/v1/chats/{chat}/members/{bob.user_id}", token=alice.access_token)).status == 204
    removed = await sock.until(lambda f: f["type"] == "chat.member.removed")
    assert removed["user_id"] == bob.user_id
    await say(api, alice, chat, "after bob left")
    await sock.send({"type": "ping"})
    pong = await sock.until(lambda f: f["type"] in ("pong", "message.new"))
    assert pong["type"] == "pong"
    await sock.close()


async def test_two_users_with_two_devices_each_in_an_encrypted_direct_chat(rt: Server):
    """Every device of both users gets its own ciphertext; the sending device gets the metadata."""
    api = rt.api
    alice, bob = await api.register(), await api.register()
    alice_phone = (await api.login(alice, device_name="phone")).body
    bob_phone = (await api.login(bob, device_name="phone")).body
    await api.publish_keys(bob, alice_phone["access_token"], bob_phone["access_token"])
    chat = (
        await api.post("/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token)
    ).body["id"]
    sockets = {
        alice.device_id: await connect(rt, alice),
        alice_phone["device_id"]: await connect(rt, alice_phone),
        bob.device_id: await connect(rt, bob),
        bob_phone["device_id"]: await connect(rt, bob_phone),
    }
    others = [d for d in sockets if d != alice.device_id]
    blobs = {d: os.urandom(32) for d in others}
    await sockets[alice.device_id].send(
        {
            "type": "message.send",
            "request_id": "e2e",
            "chat_id": chat,
            "client_id": "dm-1",
            "recipients": [{"device_id": d, "ciphertext": base64.b64encode(b).decode()} for d, b in blobs.items()],
        }
    )
    # The sender's socket gets the answer and its own device's copy, in either order.
    frames = [
        await sockets[alice.device_id].until(lambda f: f["type"] in ("message.sent", "message.new")) for _ in range(2)
    ]
    sent = next(f for f in frames if f["type"] == "message.sent")
    own = next(f for f in frames if f["type"] == "message.new")
    assert sent["request_id"] == "e2e" and sent["message"]["seq"] == 1
    assert own["message"]["id"] == sent["message"]["id"] and own["message"]["ciphertext"] is None
    for device in others:
        event = await sockets[device].until(lambda f: f["type"] == "message.new")
        assert event["message"]["id"] == sent["message"]["id"]
        assert base64.b64decode(event["message"]["ciphertext"]) == blobs[device]
    # a reply from bob's phone must name alice's two devices and bob's laptop
    await sockets[bob_phone["device_id"]].send(
        {
            "type": "message.send",
            "request_id": "short",
            "chat_id": chat,
            "client_id": "dm-2",
            "recipients": [{"device_id": alice.device_id, "ciphertext": "AAAA"}],
        }
    )
    refused = await sockets[bob_phone["device_id"]].until(lambda f: f.get("request_id") == "short")
    assert refused["type"] == "error" and refused["status"] == 409
    assert sorted(refused["missing_devices"]) == sorted([alice_phone["device_id"], bob.device_id])
    for sock in sockets.values():
        await sock.close()


async def test_key_change_events_reach_everyone_who_shares_a_chat(rt: Server):
    api = rt.api
    alice, bob, stranger = await api.register(), await api.register(), await api.register()
    await plain_group(api, alice, bob)
    bob_sock = await connect(rt, bob)
    alice_sock = await connect(rt, alice)
    stranger_sock = await connect(rt, stranger)
    tablet = (await api.login(alice, device_name="tablet")).body
    for sock in (bob_sock, alice_sock):  # the peer, and alice's own other device
        added = await sock.until(lambda f: f["type"] == "keys.changed")
        assert added == {
            "type": "keys.changed",
            "cursor": added["cursor"],
            "user_id": alice.user_id,
            "device_ids": [tablet["device_id"]],
            "change": "added",
        }
    await api.delete(f"/api/v1/devices/{tablet['device_id']}", token=alice.access_token)
    removed = await bob_sock.until(lambda f: f["type"] == "keys.changed")
    assert removed["change"] == "removed" and removed["device_ids"] == [tablet["device_id"]]
    await stranger_sock.send({"type": "ping", "request_id": "s"})
    assert (await stranger_sock.until(lambda f: f["type"] in ("pong", "keys.changed")))["type"] == "pong"
    for sock in (bob_sock, alice_sock, stranger_sock):
        await sock.close()


async def test_the_acks_of_several_devices_are_stored_in_one_write(rt: Server):
    """The ack writer stores every device's last ack together, never backwards nor beyond a stream's end."""
    from sup.db.events import EventStore

    api = rt.api
    alice, bob = await api.register(), await api.register()
    chat = await plain_group(api, alice, bob)
    await say(api, alice, chat, "one")
    ends = {}
    for account in (alice, bob):
        sock = await connect(rt, account)
        end = ends[account.device_id] = sock.ready["stream_end"]
        await sock.until(lambda f, end=end: f.get("cursor") == end)
        await sock.ack(end)
        await sock.send({"type": "ping", "request_id": "p"})
        await sock.until(lambda f: f["type"] == "pong")
    await rt.app[HUB].acks.flush()
    store = EventStore(rt.db.dialect)
    assert {d: (await store.positions(rt.db, d))[1] for d in ends} == ends
    async with rt.db.transaction() as tx:
        await store.ack_many(tx, {alice.device_id: 1, bob.device_id: ends[bob.device_id] + 5})
    assert {d: (await store.positions(rt.db, d))[1] for d in ends} == ends


async def test_pruned_events_make_an_old_cursor_resync(rt: Server):
    """Acknowledged events are pruned after the retention period; unacknowledged ones stay."""
    from sup.db.events import EventStore

    api = rt.api
    alice, bob, chat = await two_in_a_group(api)
    for i in range(3):
        await say(api, alice, chat, f"m{i}")
    store = EventStore()
    async with rt.db.transaction() as tx:
        await store.ack(tx, bob.device_id, 2)  # chat.created and m0
    async with rt.db.transaction() as tx:
        removed = await store.prune(tx, rt.clock.now_ms() + 1)
    assert removed >= 2
    remaining = await store.read(rt.db, bob.device_id, 0, 100)
    assert [seq for seq, _ in remaining] == [3, 4]  # the unacknowledged ones stay
    old = await connect(rt, bob, cursor=0)
    assert old.ready["resync"] is True and old.ready["resume_from"] == 2
    events = await old.events(2, "message.new")
    assert [e["message"]["body"] for e in events] == ["m1", "m2"]
    await old.close()
