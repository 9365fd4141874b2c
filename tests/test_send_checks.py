"""One set of checks for a message send, whatever the transport: text without NUL, at most
5,000 recipients, and a sending device that is still active, checked in the send's own
transaction (so a device revoked a moment ago stores nothing, even with its socket open)."""

from __future__ import annotations

import asyncio
import base64
import uuid

import pytest

from sup.db.accounts import DeviceStore
from sup.db.batching import Guard, WriteBatcher
from sup.domain.outgoing import MAX_RECIPIENTS, Outgoing
from sup.errors import Code, DomainError
from sup.transport.services import SERVICES
from tests.conftest import Api, Server, Socket, two_in_a_group


async def _history(api: Api, token: str, chat_id: str) -> list[dict]:
    reply = await api.get(f"/api/v1/messages/chat/{chat_id}", token=token)
    assert reply.status == 200, reply.body
    return reply.body["items"]


@pytest.mark.parametrize("use_msgpack", [False, True], ids=["json", "msgpack"])
async def test_nul_in_a_send_is_refused_over_rest_and_websocket(server: Server, use_msgpack: bool):
    api = server.api
    alice, _, chat = await two_in_a_group(api)
    bad_sends = [
        {"chat_id": chat, "client_id": str(uuid.uuid4()), "body": "before\x00after"},
        {"chat_id": chat, "client_id": "c\x00" + uuid.uuid4().hex[:8], "body": "hello"},
    ]
    for send in bad_sends:
        reply = await api.post("/api/v1/messages", json=send, token=alice.access_token)
        assert reply.status == 422 and reply.code == "validation_failed", reply.body

    sock = await Socket.connect(server.url, api.session, alice.access_token, use_msgpack=use_msgpack)
    for i, send in enumerate(bad_sends):
        await sock.send({"type": "message.send", "request_id": f"nul{i}", **send})
        error = await sock.until(lambda f, i=i: f.get("request_id") == f"nul{i}")
        assert error["type"] == "error" and error["status"] == 422 and error["code"] == "validation_failed", error
        assert "NUL" in error["detail"]
    # The request id is text like the rest, and is not echoed back with a NUL in it.
    await sock.send({"type": "message.send", "request_id": "r\x00", "chat_id": chat, "client_id": "x", "body": "x"})
    error = await sock.until(lambda f: f["type"] in ("error", "message.sent"))
    assert error["type"] == "error" and error["code"] == "validation_failed", error
    # The socket still works, and nothing of the refused sends was stored.
    await sock.send({"type": "message.send", "request_id": "ok", "chat_id": chat, "client_id": "ok", "body": "fine"})
    sent = await sock.until(lambda f: f.get("request_id") == "ok")
    assert sent["type"] == "message.sent", sent
    await sock.close()
    assert [m["body"] for m in await _history(api, alice.access_token, chat)] == ["fine"]


async def test_the_recipient_cap_holds_over_rest_and_websocket(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    await api.publish_keys(alice, bob)
    direct = await api.post(
        "/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token
    )
    chat = direct.body["id"]
    ciphertext = base64.b64encode(b"x").decode()
    too_many = [{"device_id": str(uuid.uuid4()), "ciphertext": ciphertext} for _ in range(MAX_RECIPIENTS + 1)]
    send = {"chat_id": chat, "client_id": str(uuid.uuid4()), "recipients": too_many}
    reply = await api.post("/api/v1/messages", json=send, token=alice.access_token)
    assert reply.status == 422 and reply.code == "validation_failed", reply.body

    sock = await Socket.connect(server.url, api.session, alice.access_token)
    await sock.send({"type": "message.send", "request_id": "many", **send})
    error = await sock.until(lambda f: f["type"] in ("error", "message.sent"))
    assert error["type"] == "error" and error["status"] == 422 and error["code"] == "validation_failed", error
    assert error["request_id"] == "many"  # the sender waits for an answer under its id
    await sock.close()
    assert await _history(api, alice.access_token, chat) == []


async def test_the_domain_refuses_more_recipients_than_the_cap(server: Server):
    """Whatever decodes a send (a transport, a forward, a plugin), the domain holds the cap too."""
    services = server.app[SERVICES]
    out = Outgoing(
        chat_id=str(uuid.uuid4()),
        client_id="c",
        recipients=[(str(uuid.uuid4()), b"x") for _ in range(MAX_RECIPIENTS + 1)],
    )
    with pytest.raises(DomainError) as refused:
        services.messages.queue_send(str(uuid.uuid4()), str(uuid.uuid4()), out)
    assert refused.value.code is Code.VALIDATION_FAILED


async def _revoke_quietly(server: Server, device_id: str) -> None:
    """Revoke a device in the database only: as if the revocation had committed a moment ago and
    nothing had closed the device's socket yet (or its request had been authenticated already)."""
    async with server.db.transaction() as tx:
        await tx.execute("UPDATE user_devices SET revoked_at = $2 WHERE id = $1", device_id, server.clock.now_ms())


async def test_a_device_revoked_a_moment_ago_stores_nothing_over_the_socket(server: Server):
    api = server.api
    alice, _, chat = await two_in_a_group(api)
    phone = await api.new_device(alice)
    sock = await Socket.connect(server.url, api.session, phone.access_token)
    await sock.send({"type": "message.send", "request_id": "before", "chat_id": chat, "client_id": "b", "body": "1"})
    assert (await sock.until(lambda f: f.get("request_id") == "before"))["type"] == "message.sent"

    await _revoke_quietly(server, phone.device_id)
    for i in range(5):
        await sock.send(
            {"type": "message.send", "request_id": f"after{i}", "chat_id": chat, "client_id": f"a{i}", "body": "2"}
        )
    for i in range(5):
        error = await sock.until(lambda f, i=i: f.get("request_id") == f"after{i}")
        assert error["type"] == "error" and error["status"] == 401 and error["code"] == "invalid_token", error
    await sock.close()
    assert [m["body"] for m in await _history(api, alice.access_token, chat)] == ["1"]


async def test_a_device_revoked_after_authentication_stores_nothing_and_others_in_its_batch_do(server: Server):
    """The REST path authenticates, then sends: a revocation in between is caught in the send's
    transaction. Sends queued together share one batch; only the revoked device's are refused."""
    api = server.api
    alice, bob, chat = await two_in_a_group(api)
    phone = await api.new_device(alice)
    messages = server.app[SERVICES].messages
    await _revoke_quietly(server, phone.device_id)

    def out(client_id: str) -> Outgoing:
        return Outgoing(chat_id=chat, client_id=client_id, body=client_id)

    # Queued in one go, so that one batch holds them all.
    futures = [
        messages.queue_send(alice.user_id, alice.device_id, out("laptop-1")),
        messages.queue_send(alice.user_id, phone.device_id, out("phone-1")),
        messages.queue_send(bob.user_id, bob.device_id, out("bob-1")),
        messages.queue_send(alice.user_id, phone.device_id, out("phone-2")),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert not isinstance(results[0], Exception) and not isinstance(results[2], Exception), results
    for refused in (results[1], results[3]):
        assert isinstance(refused, DomainError) and refused.code is Code.INVALID_TOKEN, refused
    with pytest.raises(DomainError) as again:
        await messages.send(alice.user_id, phone.device_id, out("phone-3"))
    assert again.value.code is Code.INVALID_TOKEN
    stored = await _history(api, alice.access_token, chat)
    assert [m["body"] for m in stored] == ["laptop-1", "bob-1"]
    assert [m["seq"] for m in stored] == [1, 2]  # no gap where the refused sends were

    # The revoked device's token no longer opens a REST request either.
    reply = await api.post(
        "/api/v1/messages", json={"chat_id": chat, "client_id": "x", "body": "x"}, token=phone.access_token
    )
    assert reply.status == 401


async def test_a_batch_checks_its_guard_once_for_all_its_operations(server: Server):
    """However many sends a batch holds, the device check is one statement, read first in the
    batch's transaction; the operations whose device is gone do not run at all."""
    api = server.api
    alice = await api.register()
    phone = await api.new_device(alice)
    await _revoke_quietly(server, phone.device_id)
    devices = DeviceStore()
    asked: list[list[str]] = []

    async def holding(tx, keys: list[str]) -> set[str]:
        asked.append(keys)
        return await devices.active_among(tx, keys)

    guard = Guard(holding=holding, refusal=lambda key: LookupError(key))
    ran: list[str] = []

    def operation(name: str):
        async def run(tx) -> str:
            ran.append(name)
            return await tx.fetchval("SELECT $1", name)

        return run

    batcher = WriteBatcher(server.db)
    await batcher.start()  # its worker runs only once this test awaits: what is queued until then is one batch
    futures = [
        batcher.enqueue(operation(f"op{i}"), guard=guard, key=phone.device_id if i % 3 == 0 else alice.device_id)
        for i in range(12)
    ]
    futures.append(batcher.enqueue(operation("unguarded")))
    results = await asyncio.gather(*futures, return_exceptions=True)
    await batcher.close()
    assert asked == [sorted({alice.device_id, phone.device_id})]
    assert ran == [f"op{i}" for i in range(12) if i % 3] + ["unguarded"]
    for i, result in enumerate(results[:12]):
        if i % 3 == 0:
            assert isinstance(result, LookupError) and result.args == (phone.device_id,)
        else:
            assert result == f"op{i}"
    assert results[12] == "unguarded"
