"""The E2E key directory: keys verified on upload, one-time prekeys handed out once, sender keys relayed.

Keys here are made with `cryptography` directly (not the client SDK), so these tests pin the
server's contract: Ed25519 identity keys signing `0x05 || X25519 public key`.
"""

from __future__ import annotations

import asyncio
import base64
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import Account, Api, Server, ServerFactory, Socket, plain_group, require_postgres
from tests.keys import DeviceKeys, b64, raw
from tests.processes import two_processes


async def publish(api: Api, who: Account, keys: DeviceKeys | None = None, one_time: int = 5) -> DeviceKeys:
    keys = keys or DeviceKeys()
    reply = await api.post("/api/v1/crypto/keys", json=keys.publish_body(one_time), token=who.access_token)
    assert reply.status == 200, reply.body
    return keys


async def test_publish_fetch_and_each_one_time_prekey_goes_out_once(api: Api):
    alice, bob = await api.register(), await api.register()
    keys = await publish(api, alice, one_time=3)
    assert (await api.get("/api/v1/crypto/prekeys", token=alice.access_token)).body["one_time_prekeys"] == 3
    path = f"/api/v1/crypto/prekeys/{alice.user_id}/{alice.device_id}"

    public = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{alice.device_id}", token=bob.access_token)
    assert public.status == 200
    assert base64.b64decode(public.body["identity_key"]) == keys.identity_key
    assert public.body["signed_prekey"]["key_id"] == 1
    assert "one_time_prekey" not in public.body  # looking at keys consumes nothing

    handed = []
    for _ in range(3):
        bundle = await api.get(path, token=bob.access_token)
        assert bundle.status == 200
        assert bundle.body["identity_key"] == public.body["identity_key"]
        assert bundle.body["signed_prekey"] == public.body["signed_prekey"]
        handed.append(bundle.body["one_time_prekey"]["key_id"])
    assert sorted(handed) == [1, 2, 3]
    empty = await api.get(path, token=bob.access_token)
    assert empty.status == 200 and empty.body["one_time_prekey"] is None  # as Signal: a bundle without one
    status = await api.get("/api/v1/crypto/prekeys", token=alice.access_token)
    assert status.body["one_time_prekeys"] == 0 and status.body["signed_prekey_id"] == 1


async def test_every_device_of_a_user_and_revoked_devices_drop_out(api: Api):
    alice, bob = await api.register(), await api.register()
    phone = await api.login(alice)
    phone_account = Account(alice.username, alice.password, alice.user_id, phone.body["device_id"],
                            phone.body["access_token"], phone.body["refresh_token"])  # fmt: skip
    await publish(api, alice)
    await publish(api, phone_account)
    every = await api.get(f"/api/v1/crypto/prekeys/{alice.user_id}/all", token=bob.access_token)
    assert sorted(d["device_id"] for d in every.body["devices"]) == sorted([alice.device_id, phone_account.device_id])
    assert all(d["one_time_prekey"] is not None for d in every.body["devices"])

    await api.delete(f"/api/v1/devices/{phone_account.device_id}", token=alice.access_token)
    keys = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/all", token=bob.access_token)
    assert [d["device_id"] for d in keys.body["devices"]] == [alice.device_id]
    gone = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{phone_account.device_id}", token=bob.access_token)
    assert gone.status == 404
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        missing = await api.get(f"/api/v1/crypto/prekeys/{alice.user_id}/{bad}", token=bob.access_token)
        assert missing.status == 404 and missing.code == "not_found"
    nobody = await api.get("/api/v1/crypto/keys/00000000-0000-0000-0000-000000000000/all", token=bob.access_token)
    assert nobody.status == 200 and nobody.body == {"devices": []}


async def test_forged_or_malformed_keys_are_refused_and_change_nothing(api: Api):
    alice = await api.register()
    keys = await publish(api, alice, one_time=2)
    before = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{alice.device_id}", token=alice.access_token)

    forger = DeviceKeys()
    forged = keys.publish_body()
    forged["signed_prekey"] = forger.signed_prekey(key_id=2)  # signed by another identity key
    reply = await api.post("/api/v1/crypto/keys", json=forged, token=alice.access_token)
    assert reply.status == 400 and reply.code == "invalid_signature"
    rotate = await api.post(
        "/api/v1/crypto/prekeys", json={"signed_prekey": forger.signed_prekey(key_id=3)}, token=alice.access_token
    )
    assert rotate.status == 400 and rotate.code == "invalid_signature"

    tampered = keys.signed_prekey(key_id=4)
    signature = bytearray(base64.b64decode(tampered["signature"]))
    signature[10] ^= 1
    tampered["signature"] = b64(bytes(signature))
    assert (
        await api.post("/api/v1/crypto/prekeys", json={"signed_prekey": tampered}, token=alice.access_token)
    ).status == 400

    malformed: list[dict[str, Any]] = [
        {**keys.publish_body(), "identity_key": b64(os.urandom(31))},
        {**keys.publish_body(), "identity_key": "not base64!"},
        {**keys.publish_body(), "signed_prekey": {**keys.signed_prekey(), "signature": b64(b"short")}},
        {**keys.publish_body(), "one_time_prekeys": [{"key_id": 1, "public_key": b64(os.urandom(33))}]},
        {**keys.publish_body(), "one_time_prekeys": [{"key_id": -1, "public_key": b64(os.urandom(32))}]},
        {**keys.publish_body(), "one_time_prekeys": [{"key_id": 2**32, "public_key": b64(os.urandom(32))}]},
        {**keys.publish_body(), "one_time_prekeys": keys.one_time(101)},
        {**keys.publish_body(), "one_time_prekeys": [{"key_id": 7, "public_key": b64(os.urandom(32))}] * 2},
        {**keys.publish_body(), "surprise": 1},
        {"identity_key": b64(keys.identity_key)},
    ]
    for body in malformed:
        reply = await api.post("/api/v1/crypto/keys", json=body, token=alice.access_token)
        assert reply.status == 422, (body, reply.body)

    # Small-order keys: OpenSSL would accept R = identity, S = 0 as a signature over anything.
    small = bytes([1]) + bytes(31)
    any_prekey = b64(raw(X25519PrivateKey.generate()))
    weak: list[dict[str, Any]] = [
        {**keys.publish_body(), "identity_key": b64(small),
         "signed_prekey": {"key_id": 9, "public_key": any_prekey, "signature": b64(small + bytes(32))}},
        {**keys.publish_body(), "identity_key": b64(bytes([0xEE]) + b"\xff" * 30 + b"\x7f")},  # y = p + 1
        {**keys.publish_body(), "signed_prekey": {**keys.signed_prekey(), "public_key": b64(bytes(32))}},
        {**keys.publish_body(), "one_time_prekeys": [{"key_id": 50, "public_key": b64(small)}]},
    ]  # fmt: skip
    for body in weak:
        reply = await api.post("/api/v1/crypto/keys", json=body, token=alice.access_token)
        assert reply.status == 422, (body, reply.body)

    after = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{alice.device_id}", token=alice.access_token)
    assert after.body == before.body
    status = await api.get("/api/v1/crypto/prekeys", token=alice.access_token)
    assert status.body["one_time_prekeys"] == 2


async def test_prekeys_before_keys_rotation_and_limits(server: Server, api: Api):
    alice = await api.register()
    early = await api.post("/api/v1/crypto/prekeys", json={"one_time_prekeys": []}, token=alice.access_token)
    assert early.status == 409 and early.code == "keys_missing"
    keys = await publish(api, alice, one_time=0)

    topped = await api.post(
        "/api/v1/crypto/prekeys", json={"one_time_prekeys": keys.one_time(100)}, token=alice.access_token
    )
    assert topped.body == {"one_time_prekeys": 100}
    again = await api.post(  # a retried upload of the same key ids changes nothing
        "/api/v1/crypto/prekeys",
        json={"one_time_prekeys": [{"key_id": 1, "public_key": b64(os.urandom(32))}]},
        token=alice.access_token,
    )
    assert again.body == {"one_time_prekeys": 100}

    rotated = await api.post(
        "/api/v1/crypto/prekeys", json={"signed_prekey": keys.signed_prekey(2)}, token=alice.access_token
    )
    assert rotated.status == 200
    public = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{alice.device_id}", token=alice.access_token)
    assert public.body["signed_prekey"]["key_id"] == 2
    old_id = await api.post(
        "/api/v1/crypto/prekeys", json={"signed_prekey": keys.signed_prekey(1)}, token=alice.access_token
    )
    assert old_id.status == 409  # a signed prekey id is never reused
    kept = await server.db.fetchval("SELECT count(*) FROM signed_prekeys WHERE device_id = $1", alice.device_id)
    assert kept == 2  # the superseded one stays for its grace period

    limit = server.config.crypto.max_one_time_prekeys
    for _ in range((limit - 100) // 100):
        await api.post(
            "/api/v1/crypto/prekeys", json={"one_time_prekeys": keys.one_time(100)}, token=alice.access_token
        )
    over = await api.post(
        "/api/v1/crypto/prekeys", json={"one_time_prekeys": keys.one_time(100)}, token=alice.access_token
    )
    assert over.status == 409 and over.body["stored"] == limit


async def test_running_low_on_prekeys_is_an_event(server: Server, api: Api):
    alice, bob = await api.register(), await api.register()
    threshold = server.config.crypto.prekey_low_threshold
    await publish(api, alice, one_time=threshold + 1)
    socket = await Socket.connect(server.url, api.session, alice.access_token)
    try:
        for _ in range(threshold + 1):
            await api.get(f"/api/v1/crypto/prekeys/{alice.user_id}/{alice.device_id}", token=bob.access_token)
        low = await socket.events(2, "prekeys.low")
        assert [e["count"] for e in low] == [threshold - 1, 0]
    finally:
        await socket.close()


async def test_a_device_is_announced_when_it_publishes_its_keys(server: Server, api: Api):
    """Peers hear of a device when it can be encrypted to, with its name, not only at its login."""
    alice, bob = await api.register(), await api.register()
    await plain_group(api, alice, bob)
    socket = await Socket.connect(server.url, api.session, bob.access_token)
    try:
        tablet = await api.new_device(alice, device_name="Alice's tablet")
        at_login = await socket.until(lambda f: f["type"] == "keys.changed")
        assert at_login["change"] == "added" and at_login["device_ids"] == [tablet.device_id]
        listed = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/all", token=bob.access_token)
        assert listed.body["devices"] == []  # nothing to encrypt to yet
        await publish(api, tablet)
        published = await socket.until(lambda f: f["type"] == "keys.changed" and f["cursor"] > at_login["cursor"])
        assert published["change"] == "added" and published["device_ids"] == [tablet.device_id]
        listed = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/all", token=bob.access_token)
        assert [(d["device_id"], d["device_name"]) for d in listed.body["devices"]] == [
            (tablet.device_id, "Alice's tablet")
        ]
    finally:
        await socket.close()


async def test_a_new_identity_key_tells_everyone_who_shares_a_chat(server: Server, api: Api):
    alice, bob = await api.register(), await api.register()
    await plain_group(api, alice, bob)
    keys = await publish(api, alice)
    socket = await Socket.connect(server.url, api.session, bob.access_token)
    try:
        await publish(api, alice, keys, one_time=5)  # the same identity again: no news
        replaced = await publish(api, alice, DeviceKeys(), one_time=1)
        changed = await socket.until(lambda f: f["type"] == "keys.changed" and f["change"] == "identity")
        assert changed["user_id"] == alice.user_id and changed["change"] == "identity"
        assert changed["device_ids"] == [alice.device_id]
        public = await api.get(f"/api/v1/crypto/keys/{alice.user_id}/{alice.device_id}", token=bob.access_token)
        assert base64.b64decode(public.body["identity_key"]) == replaced.identity_key
        status = await api.get("/api/v1/crypto/prekeys", token=alice.access_token)
        assert status.body["one_time_prekeys"] == 1  # the old identity's prekeys went with it
    finally:
        await socket.close()


async def encrypted_group(api: Api, owner: Account, *members: Account) -> str:
    reply = await api.post(
        "/api/v1/chats",
        json={"type": "group", "member_ids": [m.user_id for m in members], "title": "e2e"},
        token=owner.access_token,
    )
    assert reply.status == 201 and reply.body["encrypted"] is True
    return reply.body["id"]


async def group_send(api: Api, who: Account, chat_id: str, client_id: str):
    return await api.post(
        "/api/v1/messages",
        json={"chat_id": chat_id, "client_id": client_id, "ciphertext": b64(os.urandom(64))},
        token=who.access_token,
    )


async def distribute(api: Api, who: Account, chat_id: str, distribution_id: str, *devices: str):
    return await api.post(
        f"/api/v1/crypto/sender-keys/{chat_id}",
        json={
            "distribution_id": distribution_id,
            "recipients": [{"device_id": d, "ciphertext": b64(d.encode())} for d in devices],
        },
        token=who.access_token,
    )


async def test_group_messages_wait_for_sender_keys_and_a_departure_forces_a_new_one(server: Server, api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await api.publish_keys(bob, carol)
    chat = await encrypted_group(api, alice, bob, carol)

    first = await group_send(api, alice, chat, "m1")
    assert first.status == 409 and first.code == "sender_key_required"
    partial = await distribute(api, alice, chat, "k1", bob.device_id)
    assert partial.status == 204
    missing = await group_send(api, alice, chat, "m1")
    assert missing.status == 409 and missing.code == "sender_key_missing"
    assert missing.body["missing_devices"] == [carol.device_id]

    socket = await Socket.connect(server.url, api.session, carol.access_token)
    try:
        assert (await distribute(api, alice, chat, "k1", carol.device_id)).status == 204
        event = await socket.until(lambda f: f["type"] == "sender_key")
        assert event["chat_id"] == chat and event["sender_device_id"] == alice.device_id
        assert event["sender_user_id"] == alice.user_id and event["distribution_id"] == "k1"
        assert base64.b64decode(event["ciphertext"]) == carol.device_id.encode()  # only its own copy
    finally:
        await socket.close()
    assert (await group_send(api, alice, chat, "m1")).status == 201
    mine = await api.get(f"/api/v1/crypto/sender-keys/{chat}", token=bob.access_token)
    assert [(d["sender_device_id"], d["distribution_id"]) for d in mine.body["distributions"]] == [
        (alice.device_id, "k1")
    ]

    # carol leaves: the key she holds must not encrypt anything new
    assert (await api.delete(f"/api/v1/chats/{chat}/members/{carol.user_id}", token=alice.access_token)).status == 204
    stale = await group_send(api, alice, chat, "m2")
    assert stale.status == 409 and stale.code == "sender_key_required"
    assert (await distribute(api, alice, chat, "k2", bob.device_id)).status == 204
    assert (await group_send(api, alice, chat, "m2")).status == 201
    outsider = await api.get(f"/api/v1/crypto/sender-keys/{chat}", token=carol.access_token)
    assert outsider.status == 404


async def test_sender_keys_go_only_to_member_devices_of_encrypted_groups(api: Api):
    alice, bob, mallory = await api.register(), await api.register(), await api.register()
    chat = await encrypted_group(api, alice, bob)
    stranger = await distribute(api, alice, chat, "k1", mallory.device_id)
    assert stranger.status == 409 and stranger.code == "device_mismatch"
    assert stranger.body["extra_devices"] == [mallory.device_id]
    assert (await distribute(api, mallory, chat, "k1", alice.device_id)).status == 404  # not a member
    twice = await distribute(api, alice, chat, "k1", bob.device_id, bob.device_id)
    assert twice.status == 422
    plain = await plain_group(api, alice, bob)
    assert (await distribute(api, alice, plain, "k1", bob.device_id)).status == 422
    for bad_id in ("", "x" * 65, "has space"):
        assert (await distribute(api, alice, chat, bad_id, bob.device_id)).status == 422


async def test_prekey_bundles_are_rate_limited_per_requester(server_factory: ServerFactory):
    limited = await server_factory(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_PREKEY_BUNDLES_PER_USER="3")
    api = limited.api
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await publish(api, alice, one_time=10)
    path = f"/api/v1/crypto/prekeys/{alice.user_id}/{alice.device_id}"
    for _ in range(3):
        assert (await api.get(path, token=bob.access_token)).status == 200
    drained = await api.get(path, token=bob.access_token)
    assert drained.status == 429 and drained.code == "rate_limited" and int(drained.headers["Retry-After"]) >= 1
    assert (await api.get(path, token=carol.access_token)).status == 200  # others are not held back
    status = await api.get("/api/v1/crypto/prekeys", token=alice.access_token)
    assert status.body["one_time_prekeys"] == 6


async def test_the_prekey_bundle_limit_counts_an_id_in_any_case_once(server_factory: ServerFactory):
    # Postgres matches UUIDs regardless of case: a limit keyed on the text as sent was a limit per spelling.
    limited = await server_factory(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_PREKEY_BUNDLES_PER_USER="3")
    api = limited.api
    alice, bob = await api.register(), await api.register()
    await publish(api, alice, one_time=10)
    spellings = [str.lower, str.upper, str.title, str.swapcase]
    replies = [
        await api.get(f"/api/v1/crypto/prekeys/{case(alice.user_id)}/{case(alice.device_id)}", token=bob.access_token)
        for case in spellings
    ]
    assert [r.status for r in replies] == [200, 200, 200, 429]
    assert {r.body["device_id"] for r in replies[:3]} == {alice.device_id}
    everyone = await api.get(f"/api/v1/crypto/prekeys/{alice.user_id.upper()}/all", token=bob.access_token)
    assert everyone.status == 429
    status = await api.get("/api/v1/crypto/prekeys", token=alice.access_token)
    assert status.body["one_time_prekeys"] == 7


async def test_a_new_identity_needs_every_sender_key_again(api: Api):
    alice, bob = await api.register(), await api.register()
    chat = await encrypted_group(api, alice, bob)
    await publish(api, bob)
    assert (await distribute(api, alice, chat, "k1", bob.device_id)).status == 204
    assert (await group_send(api, alice, chat, "m1")).status == 201
    await publish(api, bob, DeviceKeys())  # bob's device starts over with a new identity
    again = await group_send(api, alice, chat, "m2")
    assert again.status == 409 and again.code == "sender_key_missing"
    assert again.body["missing_devices"] == [bob.device_id]


async def test_concurrent_bundle_fetches_across_two_processes_never_share_a_prekey(fresh_postgres, tmp_path: Path):
    """50 fetches, two processes, one Postgres: 50 distinct one-time prekeys or fewer, never one twice."""
    await require_postgres()
    database_url = await fresh_postgres.create()
    async with two_processes(tmp_path, database_url, SUP_SECRET_KEY="k" * 40) as (api_a, api_b):
        alice, bob = await api_a.register(), await api_b.register()
        await publish(api_a, alice, one_time=40)
        path = f"/api/v1/crypto/prekeys/{alice.user_id}/{alice.device_id}"
        replies = await asyncio.gather(*(api.get(path, token=bob.access_token) for api in [api_a, api_b] * 25))
        assert all(r.status == 200 for r in replies)
        handed = [r.body["one_time_prekey"]["key_id"] for r in replies if r.body["one_time_prekey"]]
        assert len(handed) == 40 and len(set(handed)) == 40
