"""The client SDK (sup.client) against a real server: REST wrapper, resumable socket, local store."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import stat
import uuid
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pyotp
import pytest

from sup.client.client import Client, ClientError, ReceivedMessage
from sup.client.crypto import DeviceCrypto
from sup.client.http import ApiError, SessionEnded, SupHttp, Tokens
from sup.client.socket import DeviceRevoked, SupSocket
from sup.client.store import ClientStore, StoreError
from sup.client.terminal import add_arguments, run_chat
from sup.ws.hub import HUB
from tests.conftest import Server, new_username

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
async def rt(server_factory) -> Server:
    """A server that notices revoked devices quickly."""
    return await server_factory(SUP_WEBSOCKET_CATCH_UP_SECONDS="0.2")


@asynccontextmanager
async def http_for(server: Server, **kw: Any):
    http = SupHttp(server.url, **kw)
    try:
        yield http
    finally:
        await http.close()


async def registered(server: Server, **kw: Any) -> SupHttp:
    http = SupHttp(server.url, **kw)
    await http.register(new_username(), PASSWORD)
    return http


def server_connections(server: Server, device_id: str) -> list:
    return list(server.app[HUB]._by_device.get(device_id, ()))


async def until(predicate, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


# -- REST ------------------------------------------------------------------------------------


async def test_register_login_and_refresh_on_expiry(rt: Server):
    saved: list[Tokens] = []

    async def keep(tokens: Tokens) -> None:
        saved.append(tokens)

    username = new_username()
    async with http_for(rt, on_tokens=keep) as http:
        session = await http.register(username, PASSWORD, device_name="laptop")
        assert session.user["username"] == username and saved[-1] == http.tokens
        assert (await http.me())["id"] == session.user_id

        # the server's clock passes the access token's expiry: the next call refreshes once, by itself
        first = http.tokens
        rt.clock.advance(901)
        assert (await http.me())["id"] == session.user_id
        assert http.tokens.refresh_token != first.refresh_token and saved[-1] == http.tokens
        assert len(saved) == 2

        # concurrent calls meeting an expired token refresh only once (a second refresh would end the session)
        rt.clock.advance(901)
        results = await asyncio.gather(*[http.me() for _ in range(5)])
        assert {r["id"] for r in results} == {session.user_id} and len(saved) == 3

    async with http_for(rt) as other:
        with pytest.raises(ApiError) as wrong:
            await other.login(username, "wrong password!")
        assert wrong.value.status == 401 and wrong.value.code == "invalid_credentials"
        phone = await other.login(username, PASSWORD, device_name="phone")
        devices = await other.devices()
        assert [d["name"] for d in devices] == ["laptop", "phone"]
        assert [d["current"] for d in devices] == [False, True]
        renamed = await other.rename_device(phone.device_id, "old phone")
        assert renamed["name"] == "old phone"
        await other.logout()
        with pytest.raises(SessionEnded):
            await other.me()


async def test_login_with_a_second_factor(rt: Server):
    async with http_for(rt) as laptop, http_for(rt) as phone:
        username = new_username()
        await laptop.register(username, PASSWORD)
        setup = await laptop.enable_two_factor(PASSWORD)
        codes = await laptop.verify_two_factor(pyotp.TOTP(setup["secret"]).at(rt.clock.now()))  # the server clock moved
        assert len(codes) == 10 and (await laptop.two_factor_status())["enabled"] is True
        with pytest.raises(ApiError) as needed:
            await phone.login(username, PASSWORD)
        assert needed.value.code == "totp_required"
        session = await phone.login(username, PASSWORD, recovery_code=codes[0])
        assert session.user["username"] == username


async def test_revoked_device_gets_session_ended(rt: Server):
    async with http_for(rt) as laptop, http_for(rt) as phone:
        username = new_username()
        await laptop.register(username, PASSWORD)
        session = await phone.login(username, PASSWORD)
        await laptop.revoke_device(session.device_id)
        with pytest.raises(SessionEnded) as ended:
            await phone.me()
        assert ended.value.code == "invalid_token"


async def test_chats_and_messages(rt: Server):
    alice, bob = await registered(rt), await registered(rt)
    try:
        bob_id = (await bob.me())["id"]
        assert (await alice.user_by_username((await bob.me())["username"].upper()))["id"] == bob_id
        group = await alice.create_group("plain", [bob_id], encrypted=False)
        assert group["encrypted"] is False
        assert {m["user_id"] for m in await alice.members(group["id"])} == {bob_id, (await alice.me())["id"]}

        sent = await alice.send_message(group["id"], "c1", body="hello")
        again = await alice.send_message(group["id"], "c1", body="hello")
        assert again["id"] == sent["id"]
        with pytest.raises(ApiError) as reused:
            await alice.send_message(group["id"], "c1", body="something else")
        assert reused.value.code == "client_id_reused" and reused.value.status == 409

        await alice.edit_message(sent["id"], body="hello!")
        reactions = await bob.react(sent["id"], "👍")
        assert reactions[0]["count"] == 1
        assert (await bob.mark_read(group["id"], sent["seq"]))["last_read_seq"] == sent["seq"]
        page = await bob.history(group["id"])
        assert [m["body"] for m in page["items"]] == ["hello!"]
        assert [c["id"] async for c in bob.chats()] == [group["id"]]

        encrypted = await alice.create_direct(bob_id)
        assert encrypted["encrypted"] is True
        with pytest.raises(ApiError) as refused:
            await alice.send_message(encrypted["id"], "c2", body="plaintext")
        assert refused.value.code == "encryption_required" and refused.value.body["status"] == 422

        uploaded = await alice.upload_media(b"not a picture", filename="note.txt")
        assert (uploaded["kind"], uploaded["mime"], uploaded["filename"]) == ("file", "text/plain", "note.txt")
        assert await alice.download_media(uploaded["id"]) == b"not a picture"
    finally:
        await alice.close()
        await bob.close()


class LosingSession:
    """A ClientSession whose answers to the first `lose` sends are lost after the server handled them."""

    def __init__(self, session: aiohttp.ClientSession, lose: int) -> None:
        self._session = session
        self.lose = lose
        self.posts = 0

    def request(self, method: str, url: str, **kw: Any):
        session = self

        @asynccontextmanager
        async def answer():
            async with session._session.request(method, url, **kw) as response:
                await response.read()
                if method == "POST" and url.endswith("/messages"):
                    session.posts += 1
                    if session.lose > 0:
                        session.lose -= 1
                        raise aiohttp.ServerDisconnectedError()
                yield response

        return answer()

    def ws_connect(self, *args: Any, **kw: Any):
        return self._session.ws_connect(*args, **kw)

    async def close(self) -> None:
        await self._session.close()


async def test_a_lost_answer_is_retried_with_the_same_client_id(rt: Server):
    async with aiohttp.ClientSession() as real:
        losing = LosingSession(real, lose=2)
        alice = SupHttp(rt.url, session=losing)  # type: ignore[arg-type]
        await alice.register(new_username(), PASSWORD)
        group = await alice.create_group("g", encrypted=False)
        sent = await alice.send_message(group["id"], "only-once", body="hi")
        assert losing.posts == 3
        page = await alice.history(group["id"])
        assert [m["id"] for m in page["items"]] == [sent["id"]]


# -- the socket --------------------------------------------------------------------------------


async def collect(socket: SupSocket, count: int, kind: str = "message.new", within: float = 10) -> list[dict]:
    found = []
    while len(found) < count:
        frame = await socket.next(within)
        if frame["type"] == kind:
            found.append(frame)
    return found


async def test_socket_delivers_in_order_and_resumes_without_loss_or_duplicates(rt: Server):
    alice, bob = await registered(rt), await registered(rt)
    bob_device = (await bob.me())["id"]
    group = await alice.create_group("g", [bob_device], encrypted=False)
    socket = SupSocket(bob)
    await socket.start()
    try:
        await socket.connected.wait()
        bob_session_device = socket.ready["device_id"]
        cursors: list[int] = []
        texts: list[str] = []

        async def take(count: int) -> None:
            for frame in await collect(socket, count):
                cursors.append(frame["cursor"])
                texts.append(frame["message"]["body"])
                socket.ack(frame["cursor"])

        for i in range(5):
            await alice.send_message(group["id"], f"a{i}", body=f"m{i}")
        await take(5)

        # the server closes: going away, then "you fell behind"; messages sent meanwhile arrive once each
        for code in (1001, 4008):
            connections = server_connections(rt, bob_session_device)
            assert connections
            before = socket.connections
            await connections[0].abort(code)
            for i in range(3):
                await alice.send_message(group["id"], f"{code}-{i}", body=f"{code}-{i}")
            await take(3)
            await until(lambda before=before: socket.connections > before)

        # the network drops (no close frame at all)
        before = socket.connections
        socket._ws._response.connection.transport.abort()  # type: ignore[union-attr]
        for i in range(3):
            await alice.send_message(group["id"], f"net-{i}", body=f"net-{i}")
        await take(3)
        assert socket.connections > before

        assert texts == [f"m{i}" for i in range(5)] + [f"{c}-{i}" for c in (1001, 4008, "net") for i in range(3)]
        assert cursors == list(range(cursors[0], cursors[0] + len(cursors)))
        with pytest.raises(TimeoutError):
            await collect(socket, 1, within=0.5)  # and nothing more: no duplicates
    finally:
        await socket.close()
        await alice.close()
        await bob.close()


async def test_socket_sends_and_refreshes_an_expired_token(rt: Server):
    alice = await registered(rt)
    group = await alice.create_group("g", encrypted=False)
    socket = SupSocket(alice)
    await socket.start()
    try:
        await socket.connected.wait()
        sent = await socket.send_message(group["id"], "ws-1", body="over the socket")
        assert sent["body"] == "over the socket" and sent["seq"] == 1
        with pytest.raises(ApiError) as refused:
            await socket.send_message(str(uuid.uuid4()), "ws-2", body="nowhere")
        assert refused.value.code in ("not_found", "forbidden")

        # the access token expires while the socket is down: the reconnect refreshes it first
        tokens = alice.tokens
        rt.clock.advance(901)
        before = socket.connections
        await server_connections(rt, socket.ready["device_id"])[0].abort(1001)
        await until(lambda: socket.connections > before)
        assert alice.tokens != tokens
        await socket.ping()
    finally:
        await socket.close()
        await alice.close()


async def test_socket_stops_when_the_device_is_revoked(rt: Server):
    username = new_username()
    laptop = SupHttp(rt.url)
    phone = SupHttp(rt.url)
    try:
        await laptop.register(username, PASSWORD)
        session = await phone.login(username, PASSWORD)
        socket = SupSocket(phone)
        await socket.start()
        await socket.connected.wait()
        await laptop.revoke_device(session.device_id)
        with pytest.raises(DeviceRevoked):
            while True:
                await socket.next(10)
        await socket.close()
    finally:
        await laptop.close()
        await phone.close()


# -- the store ---------------------------------------------------------------------------------


async def test_store_survives_reopening_and_is_private(tmp_path):
    path = tmp_path / "device" / "state.db"
    store = await ClientStore.open(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    async with store.batch() as batch:
        batch.set(server_url="http://x", user_id="u1", device_id="d1", cursor=41, crypto=b"\x00\x01secret")
        batch.set_tokens(Tokens("access", "refresh", 123.5))
        batch.put_chat({"id": "c1", "type": "direct", "encrypted": True})
        batch.put_message(
            message_id="m1",
            chat_id="c1",
            seq=1,
            sender_user_id="u2",
            sender_device_id="d2",
            status="ok",
            content={"text": "hi"},
        )
        batch.add_pending(
            {
                "type": "message.new",
                "message": {"id": "m2", "chat_id": "c1", "sender_id": "u2", "sender_device_id": "d2"},
            }
        )
        batch.shared_sender_key("c1", "dist", ["d2", "d3"])
    await store.close()

    store = await ClientStore.open(path)
    try:
        assert (store.server_url, store.user_id, store.device_id, store.cursor) == ("http://x", "u1", "d1", 41)
        assert store.crypto == b"\x00\x01secret"
        assert store.tokens == Tokens("access", "refresh", 123.5)
        assert (await store.chat("c1"))["type"] == "direct"
        assert [m["content"]["text"] for m in await store.messages("c1")] == ["hi"]
        assert [p["message"]["id"] for p in await store.pending("c1", "u2", "d2")] == ["m2"]
        assert await store.sender_key_shares("c1") == {"d2": "dist", "d3": "dist"}
        assert await store.chats_shared_with(["d3"]) == ["c1"]

        # a batch that fails half-way leaves nothing behind
        with pytest.raises(Exception, match="no such table"):
            async with store.batch() as batch:
                batch.set(cursor=99)
                batch.statements.append(("INSERT INTO nowhere VALUES (1)", ()))
        assert store.cursor == 41
        await store.close()
        store = await ClientStore.open(path)
        assert store.cursor == 41
    finally:
        await store.close()

    not_a_store = tmp_path / "junk.db"
    not_a_store.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        await ClientStore.open(not_a_store)


# -- the high-level client on plaintext chats ---------------------------------------------------


async def test_client_resumes_from_its_store_without_loss_or_duplicates(rt: Server, tmp_path):
    alice = await Client.register(rt.url, str(tmp_path / "alice.db"), new_username(), PASSWORD)
    bob = await Client.register(rt.url, str(tmp_path / "bob.db"), new_username(), PASSWORD)
    try:
        with pytest.raises(ClientError):
            await Client.register(rt.url, str(tmp_path / "bob.db"), new_username(), PASSWORD)
        group = await alice.create_group("plain", [bob.user_id], encrypted=False)
        await alice.send_text(group["id"], "one")
        got = await bob.next_message(10)
        assert isinstance(got, ReceivedMessage) and got.text == "one" and got.encrypted is False
        assert got.sender_user_id == alice.user_id
        await bob.close()

        for text in ("two", "three"):
            await alice.send_text(group["id"], text)
        bob = await Client.open(str(tmp_path / "bob.db"))
        texts = [(await bob.next_message(10)).text for _ in range(2)]
        assert texts == ["two", "three"]
        with pytest.raises(TimeoutError):
            await bob.next_message(0.5)
        assert [m["content"]["text"] for m in await bob.local_history(group["id"])] == ["one", "two", "three"]
        assert [m["status"] for m in await alice.local_history(group["id"])] == ["sent"] * 3
    finally:
        await alice.close()
        await bob.close()


# -- the terminal chat ---------------------------------------------------------------------------


async def _reinstall(client: Client) -> Client:
    """The same device back with a new identity key (reinstalled, or a key the server swapped)."""
    path = str(client.store.path)
    await client.close()
    store = await ClientStore.open(path)
    await store.set(crypto=DeviceCrypto.create().to_bytes(), keys_published=0)
    await store.close()
    again = await Client.open(path)
    await again.start()
    return again


async def test_terminal_chat(rt: Server, tmp_path):
    bob_name, alice_name = new_username(), new_username()
    bob = await Client.register(rt.url, str(tmp_path / "bob.db"), bob_name, PASSWORD)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    store = str(tmp_path / "alice.db")
    args = parser.parse_args(
        [
            "register",
            *("--server", rt.url, "--store", store, "--username", alice_name),
            *("--password-stdin", "--with", bob_name, "--hold-key-changes"),
        ]
    )
    reader = asyncio.StreamReader()
    out = io.StringIO()
    reader.feed_data(f"{PASSWORD}\nhello from the terminal\n/chats\n/nonsense\n".encode())
    terminal = asyncio.create_task(run_chat(args, reader=reader, out=out))
    try:
        got = await bob.next_message(10)
        assert isinstance(got, ReceivedMessage) and got.text == "hello from the terminal" and got.encrypted
        await bob.send_text(got.chat_id, "hi, terminal")
        await until(lambda: f"[@{bob_name}] hi, terminal" in out.getvalue())
        reader.feed_data(f"/safety {bob_name}\n/history\n/help\n/trust {bob_name}\n".encode())
        await until(lambda: f"no changed key of {bob_name} is waiting" in out.getvalue())

        # bob's device comes back with a new identity key: held until /trust, then refused with /reject
        for verb, text in (("trust", "new key, trusted"), ("reject", "new key, rejected")):
            bob = await _reinstall(bob)
            await bob.send_text(got.chat_id, text)
            await until(lambda verb=verb: f"/{verb} {bob_name}" in out.getvalue().rsplit("-- ", 1)[-1])
            assert text not in out.getvalue()
            reader.feed_data(f"/{verb} {bob_name}\n".encode())
            await until(lambda verb=verb: f"-- {verb}ed the new key of {bob_name}'s device" in out.getvalue())
        await until(lambda: f"[@{bob_name}] new key, trusted" in out.getvalue())
        await until(
            lambda: "could not decrypt this message (its sender's new identity key was not trusted)" in out.getvalue()
        )
        assert "new key, rejected" not in out.getvalue()
        reader.feed_data(b"/quit\n")
        assert await asyncio.wait_for(terminal, 10) == 0
    finally:
        await bob.close()
    shown = out.getvalue()
    assert "/trust USERNAME" in shown and "/reject USERNAME" in shown
    assert f"now in @{bob_name} (direct, encrypted)" in shown
    assert f"1. @{bob_name} [direct]" in shown and "unknown command /nonsense" in shown
    assert "compare with" in shown and "hello from the terminal" in shown.split("compare with")[1]

    # and again, from the saved device
    reopened = parser.parse_args(["--store", store])
    reader = asyncio.StreamReader()
    reader.feed_data(b"/whoami\n")
    reader.feed_eof()
    out = io.StringIO()
    assert await run_chat(reopened, reader=reader, out=out) == 0
    assert alice_name in out.getvalue()
