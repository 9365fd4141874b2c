"""1:1 call signalling over real sockets (SQLite and Postgres): the state machine, what it leaves in the
chat's history, and the bad input it refuses. The real WebRTC call is in test_call_media.py."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import msgspec
import pytest

from sup.client.client import Client, ClientError
from sup.client.http import ApiError
from tests.conftest import Account, Api, Server, Socket, new_username, plain_group, require_redis


@pytest.fixture(scope="module")
async def calls_server(server_factory) -> Server:
    return await server_factory(SUP_SECRET_KEY="k" * 40, SUP_CALLS_RING_TIMEOUT_SECONDS="1.5")


async def direct_chat(api: Api, me: Account, other: Account) -> str:
    reply = await api.post(
        "/api/v1/chats", json={"type": "direct", "member_ids": [other.user_id]}, token=me.access_token
    )
    assert reply.status in (200, 201), reply.body
    return reply.body["id"]


class Phone:
    """One device's socket, keeping the call frames it gets."""

    def __init__(self, account: Account, sock: Socket) -> None:
        self.account = account
        self.sock = sock

    @classmethod
    async def open(cls, server: Server, account: Account, *, use_msgpack: bool = False) -> Phone:
        return cls(
            account, await Socket.connect(server.url, server.api.session, account.access_token, use_msgpack=use_msgpack)
        )

    async def send(self, frame_type: str, **fields: Any) -> None:
        await self.sock.send({"type": frame_type, **fields})

    async def expect(self, frame_type: str, timeout: float = 10, **match: Any) -> dict[str, Any]:
        def wanted(frame: dict[str, Any]) -> bool:
            return frame["type"] == frame_type and all(frame.get(k) == v for k, v in match.items())

        return await self.sock.until(wanted, timeout)

    async def error(self, request_id: str, timeout: float = 10) -> dict[str, Any]:
        return await self.expect("error", timeout, request_id=request_id)

    async def nothing(self, frame_type: str, within: float = 0.5) -> None:
        with pytest.raises(TimeoutError):
            await self.sock.until(lambda f: f["type"] == frame_type, within)

    async def close(self) -> None:
        await self.sock.close()


async def place(caller: Phone, chat_id: str, **extra: Any) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    await caller.send("call.invite", chat_id=chat_id, request_id=request_id, **extra)
    invited = await caller.expect("call.invited", request_id=request_id)
    return invited["call"]


async def history_calls(api: Api, who: Account, chat_id: str, count: int) -> list[dict[str, Any]]:
    """The chat's call lines (system messages), waiting for `count` of them."""
    for _ in range(100):
        reply = await api.get(f"/api/v1/messages/chat/{chat_id}", token=who.access_token, params={"limit": "100"})
        assert reply.status == 200, reply.body
        found = [msgspec.json.decode(m["body"]) for m in reply.body["items"] if m["kind"] == "system"]
        found = [f for f in found if f.get("action") == "call"]
        if len(found) >= count:
            return sorted(found, key=lambda f: f["call_id"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} call lines, found {found}")


@pytest.fixture
async def pair(calls_server: Server):
    """Alice (one device) and Bob (two devices) in a direct chat, with their sockets."""
    api = calls_server.api
    alice, bob = await api.register(), await api.register()
    bob2 = await api.new_device(bob)
    chat_id = await direct_chat(api, alice, bob)
    phones = [await Phone.open(calls_server, who) for who in (alice, bob, bob2)]
    yield chat_id, *phones
    for phone in phones:
        await phone.close()


async def test_invite_rings_every_device_and_accept_stops_the_others(calls_server: Server, pair):
    chat_id, alice, bob, bob2 = pair
    call = await place(alice, chat_id, video=True)
    assert call["caller_id"] == alice.account.user_id and call["callee_id"] == bob.account.user_id
    assert call["video"] is True and call["encrypted"] is True
    for phone in (bob, bob2):
        incoming = await phone.expect("call.incoming")
        assert incoming["call"]["id"] == call["id"] and incoming["cursor"] is None
    await bob.send("call.ringing", call_id=call["id"])
    await bob2.send("call.ringing", call_id=call["id"])
    ringing = {(await alice.expect("call.ringing"))["device_id"] for _ in range(2)}
    assert ringing == {bob.account.device_id, bob2.account.device_id}

    await bob2.send("call.accept", call_id=call["id"], request_id="acc")
    assert (await bob2.expect("call.accepted", request_id="acc"))["device_id"] == bob2.account.device_id
    assert (await alice.expect("call.accepted"))["device_id"] == bob2.account.device_id
    stopped = await bob.expect("call.ended")
    assert stopped["reason"] == "answered_elsewhere"

    # The first device cannot answer any more: it is not ringing.
    await bob.send("call.accept", call_id=call["id"], request_id="late")
    late = await bob.error("late")
    assert (late["status"], late["code"]) == (409, "not_ringing")

    # SDP and ICE go to the one answering device, and back to the calling device.
    offer = base64.b64encode(b"\x01opaque offer").decode()
    await alice.send("call.signal", call_id=call["id"], kind="offer", ciphertext=offer)
    got = await bob2.expect("call.signal")
    assert (got["kind"], got["ciphertext"], got["from_device_id"]) == ("offer", offer, alice.account.device_id)
    await bob.nothing("call.signal")
    answer = base64.b64encode(b"\x02opaque answer").decode()
    await bob2.send("call.signal", call_id=call["id"], kind="answer", ciphertext=answer)
    assert (await alice.expect("call.signal"))["ciphertext"] == answer
    await bob2.send("call.signal", call_id=call["id"], kind="candidate", ciphertext=base64.b64encode(b"c").decode())
    assert (await alice.expect("call.signal"))["kind"] == "candidate"

    await asyncio.sleep(0.05)
    await alice.send("call.hangup", call_id=call["id"])
    for phone in (alice, bob2):
        ended = await phone.expect("call.ended")
        assert ended["reason"] == "hangup" and ended["by"] == alice.account.user_id and ended["duration_ms"] >= 50

    # An answer after hang-up is refused, with why.
    await bob2.send("call.signal", call_id=call["id"], kind="answer", ciphertext=answer, request_id="after")
    after = await bob2.error("after")
    assert (after["status"], after["code"], after["reason"]) == (409, "call_ended", "hangup")

    [line] = await history_calls(calls_server.api, bob.account, chat_id, 1)
    assert line["outcome"] == "ended" and line["duration_ms"] >= 50 and line["video"] is True
    assert line["caller_id"] == alice.account.user_id


async def test_reject_cancel_timeout_and_busy(calls_server: Server, pair):
    chat_id, alice, bob, bob2 = pair
    api = calls_server.api

    declined = await place(alice, chat_id)
    await bob.expect("call.incoming")
    await bob2.expect("call.incoming")
    await bob.send("call.reject", call_id=declined["id"])
    for phone in (alice, bob, bob2):  # every device of the callee stops ringing
        assert (await phone.expect("call.ended", call_id=declined["id"]))["reason"] == "declined"

    cancelled = await place(alice, chat_id)
    await bob.expect("call.incoming", timeout=5)
    await alice.send("call.cancel", call_id=cancelled["id"])
    for phone in (alice, bob, bob2):
        assert (await phone.expect("call.ended", call_id=cancelled["id"]))["reason"] == "cancelled"

    timed_out = await place(alice, chat_id)
    for phone in (alice, bob, bob2):  # the ring timeout of this server is 1.5 s
        assert (await phone.expect("call.ended", call_id=timed_out["id"], timeout=10))["reason"] == "timeout"

    # Bob is in a call with Carol: Alice's call to him is busy.
    carol = await api.register()
    carol_chat = await direct_chat(api, carol, bob.account)
    carol_phone = await Phone.open(calls_server, carol)
    try:
        with_carol = await place(carol_phone, carol_chat)
        await bob.send("call.accept", call_id=with_carol["id"])
        await carol_phone.expect("call.accepted")
        busy = await place(alice, chat_id)
        assert (await alice.expect("call.ended", call_id=busy["id"]))["reason"] == "busy"
        # And Bob, in a call, cannot place another one.
        await bob.send("call.invite", chat_id=chat_id, request_id="second")
        assert (await bob.error("second"))["code"] == "conflict"
        await carol_phone.send("call.hangup", call_id=with_carol["id"])
        await bob.expect("call.ended", call_id=with_carol["id"])
    finally:
        await carol_phone.close()

    lines = await history_calls(api, alice.account, chat_id, 4)
    outcome = {line["call_id"]: (line["outcome"], line["reason"]) for line in lines}
    assert outcome == {
        declined["id"]: ("declined", "declined"),
        cancelled["id"]: ("missed", "cancelled"),
        timed_out["id"]: ("missed", "timeout"),
        busy["id"]: ("missed", "busy"),
    }
    assert all("duration_ms" not in line for line in lines)


async def test_a_caller_that_goes_away_cancels_and_a_dropped_call_ends(calls_server: Server, pair):
    chat_id, alice, bob, _ = pair
    call = await place(alice, chat_id)
    await bob.expect("call.incoming")
    await alice.close()
    assert (await bob.expect("call.ended", call_id=call["id"]))["reason"] == "cancelled"

    again = await Phone.open(calls_server, alice.account)
    try:
        call = await place(again, chat_id)
        await bob.send("call.accept", call_id=call["id"])
        await again.expect("call.accepted")
        await bob.close()
        ended = await again.expect("call.ended", call_id=call["id"])
        assert ended["reason"] == "connection_lost" and "duration_ms" in ended
    finally:
        await again.close()


async def test_bad_call_frames_get_clear_errors(calls_server: Server, pair):
    chat_id, alice, bob, bob2 = pair
    api = calls_server.api
    mallory = await api.register()
    mallory_phone = await Phone.open(calls_server, mallory)
    try:
        # A chat I am not in, and one that does not exist: 404, as for every chat.
        for where in (chat_id, str(uuid.uuid4())):
            await mallory_phone.send("call.invite", chat_id=where, request_id="x")
            error = await mallory_phone.error("x")
            assert (error["status"], error["code"]) == (404, "not_found")
        # A group is not a 1:1 call.
        group = await plain_group(api, alice.account, bob.account)
        await alice.send("call.invite", chat_id=group, request_id="g")
        assert (await alice.error("g"))["code"] == "validation_failed"

        call = await place(alice, chat_id)
        await bob.expect("call.incoming")
        # Someone else's call: as if there were none.
        for frame_type in ("call.accept", "call.hangup", "call.ringing"):
            await mallory_phone.send(frame_type, call_id=call["id"], request_id="m")
            assert (await mallory_phone.error("m"))["code"] == "not_found"
        # The caller's own device is not ringing for its call; nor is a device logged in after the invite.
        await alice.send("call.accept", call_id=call["id"], request_id="self")
        assert (await alice.error("self"))["code"] == "not_ringing"
        bob3 = await Phone.open(calls_server, await api.new_device(bob.account))
        try:
            await bob3.send("call.accept", call_id=call["id"], request_id="new")
            assert (await bob3.error("new"))["code"] == "not_ringing"
        finally:
            await bob3.close()
        # SDP before the answer, from a device not in the call, or in plaintext in an encrypted chat.
        await alice.send("call.signal", call_id=call["id"], kind="offer", ciphertext="AAAA", request_id="early")
        assert (await alice.error("early"))["code"] == "conflict"
        await bob.send("call.accept", call_id=call["id"])
        await alice.expect("call.accepted")
        await bob2.send("call.signal", call_id=call["id"], kind="answer", ciphertext="AAAA", request_id="other")
        assert (await bob2.error("other"))["code"] == "not_ringing"
        await alice.send("call.signal", call_id=call["id"], kind="offer", payload="v=0", request_id="plain")
        assert (await alice.error("plain"))["code"] == "encryption_required"
        # An SDP of 1 MB: refused with a clear error, and the socket stays open.
        huge = base64.b64encode(b"\0" * 700_000).decode()  # ~0.93 MB of base64, under the frame limit
        await alice.send("call.signal", call_id=call["id"], kind="offer", ciphertext=huge, request_id="huge")
        error = await alice.error("huge")
        assert (error["status"], error["code"], error["limit"]) == (413, "body_too_large", 65536)
        assert "at most 65536 bytes" in error["detail"]
        sdp = "v=0\r\na=" + "x" * (1_000_000 - 7)  # an SDP of 1 MB in plaintext (the frame is under 1 MiB)
        assert len(sdp.encode()) == 1_000_000
        await alice.send("call.signal", call_id=call["id"], kind="offer", payload=sdp, request_id="huge2")
        assert (await alice.error("huge2"))["code"] == "body_too_large"
        await bob.nothing("call.signal")
        # Malformed frames: a validation error, not a closed socket.
        await alice.send("call.signal", call_id=call["id"], kind="video", ciphertext="AAAA")
        assert (await alice.expect("error"))["code"] == "validation_failed"
        await alice.send("call.accept", call_id="not-an-id", request_id="bad")
        assert (await alice.expect("error"))["code"] == "validation_failed"
        await alice.send("call.hangup", call_id=call["id"])
        await bob.expect("call.ended")
        await alice.send("call.hangup", call_id=call["id"], request_id="twice")
        assert (await alice.error("twice"))["code"] == "call_ended"
        # An unknown call id.
        await alice.send("call.hangup", call_id=str(uuid.uuid4()), request_id="nocall")
        assert (await alice.error("nocall"))["code"] == "not_found"
    finally:
        await mallory_phone.close()


async def test_call_frames_over_msgpack_carry_raw_ciphertext(calls_server: Server):
    api = calls_server.api
    alice, bob = await api.register(), await api.register()
    chat_id = await direct_chat(api, alice, bob)
    a = await Phone.open(calls_server, alice, use_msgpack=True)
    b = await Phone.open(calls_server, bob)
    try:
        call = await place(a, chat_id)
        await b.expect("call.incoming")
        await b.send("call.accept", call_id=call["id"])
        await a.expect("call.accepted")
        await a.send("call.signal", call_id=call["id"], kind="offer", ciphertext=b"\x00\x01raw")
        assert base64.b64decode((await b.expect("call.signal"))["ciphertext"]) == b"\x00\x01raw"
        await b.send("call.hangup", call_id=call["id"])
        await a.expect("call.ended")
    finally:
        await a.close()
        await b.close()


async def test_calls_work_across_processes_on_redis(server_factory):
    """Two processes on one database and Redis: the caller on one, the callee's devices on both. Both devices
    accept at once: every process decides for the same one, and the loser is told it is not ringing."""
    redis_url = await require_redis()
    one = await server_factory(SUP_SECRET_KEY="k" * 40, SUP_BUS_URL=redis_url, SUP_CALLS_RING_TIMEOUT_SECONDS="1.5")
    two = await server_factory(SUP_SECRET_KEY="k" * 40, SUP_BUS_URL=redis_url, SUP_CALLS_RING_TIMEOUT_SECONDS="1.5")
    alice, bob = await one.api.register(), await one.api.register()
    bob2 = await one.api.new_device(bob)
    chat_id = await direct_chat(one.api, alice, bob)
    a, b1, b2 = await Phone.open(one, alice), await Phone.open(two, bob), await Phone.open(one, bob2)
    try:
        for _ in range(3):
            call = await place(a, chat_id)
            await b1.expect("call.incoming")
            await b2.expect("call.incoming")
            await asyncio.gather(
                b1.send("call.accept", call_id=call["id"], request_id="race"),
                b2.send("call.accept", call_id=call["id"], request_id="race"),
            )
            winner = (await a.expect("call.accepted", call_id=call["id"]))["device_id"]
            won, lost = (b1, b2) if winner == bob.device_id else (b2, b1)
            assert (await won.expect("call.accepted", request_id="race"))["device_id"] == winner
            assert (await lost.expect("call.ended", call_id=call["id"]))["reason"] == "answered_elsewhere"
            assert (await lost.error("race"))["code"] == "not_ringing"
            await won.send("call.signal", call_id=call["id"], kind="answer", ciphertext="AAEC")
            assert (await a.expect("call.signal"))["ciphertext"] == "AAEC"
            await won.send("call.hangup", call_id=call["id"])
            await a.expect("call.ended", call_id=call["id"])
        # The ring timer runs on the inviting process; the callee on the other process stops ringing too.
        call = await place(b1, chat_id)
        assert (await a.expect("call.ended", call_id=call["id"], timeout=10))["reason"] == "timeout"
        lines = await history_calls(one.api, alice, chat_id, 4)
        assert [line["outcome"] for line in lines] == ["ended", "ended", "ended", "missed"]
        assert len({line["call_id"] for line in lines}) == 4  # each written once, by the inviting process
    finally:
        for phone in (a, b1, b2):
            await phone.close()


# -- the SDK ----------------------------------------------------------------------------------------


async def sdk_pair(server: Server, tmp_path) -> tuple[Client, Client, str]:
    """Two SDK clients (Alice, Bob) with a direct chat, their sockets started."""
    alice = await Client.register(server.url, str(tmp_path / "alice.db"), new_username(), "correct horse battery")
    bob = await Client.register(server.url, str(tmp_path / "bob.db"), new_username(), "correct horse battery")
    chat = await alice.direct_chat(bob.user_id)
    await alice.start()
    await bob.start()
    # A call rings the sockets that are connected when it is placed: wait until both are.
    for client in (alice, bob):
        for _ in range(1000):
            if client._socket.connections:
                break
            await asyncio.sleep(0.01)
    return alice, bob, chat["id"]


async def test_the_sdk_calls_with_sdp_and_ice_encrypted_end_to_end(calls_server: Server, tmp_path):
    alice, bob, chat_id = await sdk_pair(calls_server, tmp_path)
    relayed: list[dict] = []
    bob.on_event(lambda frame: relayed.append(frame) if frame.get("type") == "call.signal" else None)
    try:
        call = await alice.calls.place(chat_id, video=True)
        incoming = await bob.calls.next_event(10, kind="incoming")
        assert incoming.call["id"] == call["id"] and incoming.call["video"] is True
        ringing = await alice.calls.next_event(10, kind="ringing")  # Bob's SDK said it rings, by itself
        assert ringing.device_id == bob.device_id
        await bob.calls.accept(call["id"])
        assert (await alice.calls.next_event(10, kind="accepted")).device_id == bob.device_id

        sdp = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        await alice.calls.send_signal(call["id"], "offer", {"type": "offer", "sdp": sdp})
        offer = await bob.calls.next_event(10, kind="signal")
        assert (offer.signal, offer.data) == ("offer", {"type": "offer", "sdp": sdp})
        await bob.calls.send_signal(call["id"], "answer", {"type": "answer", "sdp": sdp.replace("4611", "1164")})
        assert (await alice.calls.next_event(10, kind="signal")).data["sdp"].startswith("v=0")
        candidate = {"candidate": "candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host", "sdpMid": "0"}
        await alice.calls.send_signal(call["id"], "candidate", candidate)
        assert (await bob.calls.next_event(10, kind="signal")).data == candidate

        # What the server relayed was ciphertext: neither the SDP nor the address was in it.
        for _ in range(100):  # listeners hear a frame once its batch is handled
            if len(relayed) == 2:
                break
            await asyncio.sleep(0.02)
        assert [f["kind"] for f in relayed] == ["offer", "candidate"]
        for frame in relayed:
            raw = base64.b64decode(frame["ciphertext"])
            assert b"v=0" not in raw and b"127.0.0.1" not in raw and "payload" not in frame

        await bob.calls.hang_up(call["id"])
        ended = await alice.calls.next_event(10, kind="ended")
        assert ended.reason == "hangup" and ended.duration_ms is not None
        assert (await bob.calls.next_event(10, kind="ended")).reason == "hangup"
        with pytest.raises(ClientError):  # the call is over: no device to encrypt to
            await alice.calls.send_signal(call["id"], "offer", {"type": "offer", "sdp": sdp})
        await bob.calls.hang_up(call["id"])  # again: the server says the call has ended
        refused = await bob.calls.next_event(10, kind="error", call_id=call["id"])
        assert (refused.reason, refused.call.get("id")) == ("call_ended", None) and "ended" in refused.data
    finally:
        await alice.close()
        await bob.close()


async def test_the_sdk_declines_and_sees_a_missed_call(calls_server: Server, tmp_path):
    alice, bob, chat_id = await sdk_pair(calls_server, tmp_path)
    try:
        call = await alice.calls.place(chat_id)
        await bob.calls.next_event(10, kind="incoming")
        await bob.calls.reject(call["id"])
        assert (await alice.calls.next_event(10, kind="ended")).reason == "declined"
        call = await alice.calls.place(chat_id)
        assert (await bob.calls.next_event(10, kind="ended", call_id=call["id"])).reason == "timeout"
        with pytest.raises(ApiError) as refused:
            await bob.calls.accept(call["id"])
        assert refused.value.code == "call_ended"
    finally:
        await alice.close()
        await bob.close()


async def test_a_blocked_caller_cannot_ring_and_a_burst_of_candidates_is_all_relayed(calls_server: Server, pair):
    chat_id, alice, bob, _ = pair
    api = calls_server.api
    reply = await api.post(
        "/api/v1/users/me/block", json={"user_id": alice.account.user_id}, token=bob.account.access_token
    )
    assert reply.status == 201, reply.body
    await alice.send("call.invite", chat_id=chat_id, request_id="blocked")
    error = await alice.error("blocked")
    assert (error["status"], error["code"]) == (403, "blocked")
    await bob.nothing("call.incoming")
    reply = await api.delete(f"/api/v1/users/me/block/{alice.account.user_id}", token=bob.account.access_token)
    assert reply.status == 204, reply.body

    call = await place(alice, chat_id)
    await bob.send("call.accept", call_id=call["id"])
    await alice.expect("call.accepted")
    # 200 candidates at once: past 32 in flight the server stops reading the socket for a moment (backpressure),
    # so every one reaches Bob, in order, and none is refused or lost.
    for n in range(200):
        data = base64.b64encode(n.to_bytes(2, "big")).decode()
        await alice.send("call.signal", call_id=call["id"], kind="candidate", ciphertext=data, request_id=f"c{n}")
    relayed = []
    for _ in range(200):
        frame = await bob.expect("call.signal", timeout=20)
        relayed.append(int.from_bytes(base64.b64decode(frame["ciphertext"]), "big"))
    assert relayed == list(range(200))
    await alice.nothing("error", within=0.2)
    await alice.send("call.hangup", call_id=call["id"])
    await bob.expect("call.ended", call_id=call["id"])


async def test_placing_calls_again_and_again_is_rate_limited(server_factory):
    server = await server_factory(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_CALL_INVITES_PER_USER="2")
    alice, bob = await server.api.register(), await server.api.register()
    chat_id = await direct_chat(server.api, alice, bob)
    a, b = await Phone.open(server, alice), await Phone.open(server, bob)
    try:
        for _ in range(2):
            call = await place(a, chat_id)
            await b.expect("call.incoming", timeout=5)
            await a.send("call.cancel", call_id=call["id"])
            await a.expect("call.ended", call_id=call["id"])
        await a.send("call.invite", chat_id=chat_id, request_id="third")
        error = await a.error("third")
        assert (error["status"], error["code"]) == (429, "rate_limited") and 0 < error["retry_after"] <= 60
        await b.nothing("call.incoming")
    finally:
        await a.close()
        await b.close()
