"""Messages over REST: idempotent sends, gap-free seqs, kinds, edits, deletes, reactions,
pins, receipts, history, and encrypted envelopes relayed byte for byte."""

from __future__ import annotations

import asyncio
import base64
import os
import uuid

from tests.conftest import Api, Server, plain_group, png_bytes, say, two_in_a_group
from tests.packs import new_pack


async def test_send_returns_id_seq_and_client_id(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    first = await say(api, alice, chat, "hello", client_id="c-1")
    assert first.status == 201
    assert {"id", "chat_id", "client_id", "seq"} <= set(first.body)
    assert (first.body["chat_id"], first.body["client_id"], first.body["seq"]) == (chat, "c-1", 1)
    second = await say(api, bob, chat, "hi")
    assert second.body["seq"] == 2 and second.body["id"] > first.body["id"]  # UUIDv7: time-ordered


async def test_same_client_id_is_the_same_message(server: Server):
    api = server.api
    alice, bob, chat = await two_in_a_group(api)
    first = await say(api, alice, chat, "once", client_id="dup")
    again = await say(api, alice, chat, "once", client_id="dup")
    assert again.status == 200 and again.body["id"] == first.body["id"] and again.body["seq"] == first.body["seq"]
    different = await say(api, alice, chat, "twice?", client_id="dup")
    assert different.status == 409 and different.code == "client_id_reused"
    count = await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE client_id = $1", "dup")
    assert count == 1
    # another sender may use the same client_id: it is theirs
    assert (await say(api, bob, chat, "mine", client_id="dup")).status == 201


async def test_100_concurrent_senders_get_seqs_1_to_n(server: Server):
    api = server.api
    people = [await api.register() for _ in range(10)]
    chat = await plain_group(api, people[0], *people[1:])
    replies = await asyncio.gather(*[say(api, people[i % 10], chat, f"m{i}") for i in range(100)])
    assert all(r.status == 201 for r in replies), [r.body for r in replies if r.status != 201][:3]
    assert sorted(r.body["seq"] for r in replies) == list(range(1, 101))
    rows = await server.db.fetch("SELECT seq FROM messages WHERE chat_id = $1 ORDER BY seq", chat)
    assert [r["seq"] for r in rows] == list(range(1, 101))


async def test_retry_storm_stores_one_message(server: Server):
    api = server.api
    alice, _, chat = await two_in_a_group(api)
    replies = await asyncio.gather(*[say(api, alice, chat, "storm", client_id="storm-1") for _ in range(20)])
    assert {r.body["id"] for r in replies} == {replies[0].body["id"]}
    assert sorted(r.status for r in replies) == [200] * 19 + [201]
    assert await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE chat_id = $1", chat) == 1


async def test_history_pages_both_ways(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    for i in range(7):
        await say(api, alice, chat, f"m{i}")
    path = f"/api/v1/messages/chat/{chat}"
    newest = await api.get(path, params={"limit": "3"}, token=bob.access_token)
    assert [m["seq"] for m in newest.body["items"]] == [5, 6, 7]
    older = await api.get(
        path, params={"limit": "3", "before": str(newest.body["next_before"])}, token=bob.access_token
    )
    assert [m["seq"] for m in older.body["items"]] == [2, 3, 4]
    oldest = await api.get(path, params={"limit": "3", "before": "2"}, token=bob.access_token)
    assert [m["seq"] for m in oldest.body["items"]] == [1] and oldest.body["next_before"] is None
    forward = await api.get(path, params={"limit": "4", "after": "0"}, token=bob.access_token)
    assert [m["seq"] for m in forward.body["items"]] == [1, 2, 3, 4] and forward.body["next_after"] == 4
    rest = await api.get(path, params={"limit": "4", "after": "4"}, token=bob.access_token)
    assert [m["seq"] for m in rest.body["items"]] == [5, 6, 7] and rest.body["next_after"] is None


async def test_reply_forward_edit(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    other = await plain_group(api, bob, alice, title="other")
    original = (await say(api, alice, chat, "original")).body
    reply = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat, "client_id": "r1", "body": "a reply", "reply_to": original["id"]},
        token=bob.access_token,
    )
    assert reply.status == 201 and reply.body["reply_to"] == original["id"]
    foreign = await api.post(
        "/api/v1/messages",
        json={"chat_id": other, "client_id": "r2", "body": "x", "reply_to": original["id"]},
        token=bob.access_token,
    )
    assert foreign.status == 422

    forwarded = await api.post(
        f"/api/v1/messages/{original['id']}/forward", json={"chat_id": other, "client_id": "f1"}, token=bob.access_token
    )
    assert forwarded.status == 201
    assert forwarded.body["body"] == "original"
    assert forwarded.body["forwarded_from"] == {
        "chat_id": chat,
        "message_id": original["id"],
        "sender_id": alice.user_id,
    }
    again = await api.post(
        f"/api/v1/messages/{original['id']}/forward", json={"chat_id": other, "client_id": "f1"}, token=bob.access_token
    )
    assert again.status == 200 and again.body["id"] == forwarded.body["id"]

    edited = await api.patch(f"/api/v1/messages/{original['id']}", json={"body": "edited"}, token=alice.access_token)
    assert edited.status == 200 and edited.body["body"] == "edited" and edited.body["edited_at"]
    not_mine = await api.patch(f"/api/v1/messages/{original['id']}", json={"body": "hax"}, token=bob.access_token)
    assert not_mine.status == 403


async def test_delete_for_me_and_for_everyone(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    a = (await say(api, alice, chat, "secret")).body
    b = (await say(api, alice, chat, "keep")).body
    assert (
        await api.delete(f"/api/v1/messages/{b['id']}", params={"scope": "me"}, token=bob.access_token)
    ).status == 204
    bobs = await api.get(f"/api/v1/messages/chat/{chat}", token=bob.access_token)
    assert [m["id"] for m in bobs.body["items"]] == [a["id"]]
    alices = await api.get(f"/api/v1/messages/chat/{chat}", token=alice.access_token)
    assert len(alices.body["items"]) == 2

    # bob is a plain member: he may not delete alice's message for everyone
    refused = await api.delete(f"/api/v1/messages/{a['id']}", token=bob.access_token)
    assert refused.status == 403
    assert (await api.delete(f"/api/v1/messages/{a['id']}", token=alice.access_token)).status == 204
    tomb = await api.get(f"/api/v1/messages/{a['id']}", token=bob.access_token)
    assert tomb.body["deleted"] is True and tomb.body["body"] is None and tomb.body["seq"] == a["seq"]
    assert (await api.patch(f"/api/v1/messages/{a['id']}", json={"body": "x"}, token=alice.access_token)).status == 409


async def test_reactions_count_and_mine(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    chat = await plain_group(api, alice, bob, carol)
    msg = (await say(api, alice, chat, "react to me")).body
    path = f"/api/v1/messages/{msg['id']}/reactions"
    await api.post(path, json={"emoji": "👍"}, token=bob.access_token)
    await api.post(path, json={"emoji": "👍"}, token=carol.access_token)
    mine = await api.post(path, json={"emoji": "🎉"}, token=bob.access_token)
    assert {r["emoji"]: (r["count"], r["me"]) for r in mine.body["reactions"]} == {"👍": (2, True), "🎉": (1, True)}
    twice = await api.post(path, json={"emoji": "👍"}, token=bob.access_token)
    assert {r["emoji"]: r["count"] for r in twice.body["reactions"]}["👍"] == 2
    seen = await api.get(f"/api/v1/messages/{msg['id']}", token=alice.access_token)
    assert {r["emoji"]: (r["count"], r["me"]) for r in seen.body["reactions"]} == {"👍": (2, False), "🎉": (1, False)}
    removed = await api.delete(path, params={"emoji": "👍"}, token=bob.access_token)
    assert {r["emoji"]: r["count"] for r in removed.body["reactions"]} == {"👍": 1, "🎉": 1}
    assert (await api.post(path, json={"emoji": "two words"}, token=bob.access_token)).status == 422


async def test_pins(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    msg = (await say(api, alice, chat, "pin me")).body
    assert (await api.post(f"/api/v1/messages/{msg['id']}/pin", token=bob.access_token)).status == 403
    assert (await api.post(f"/api/v1/messages/{msg['id']}/pin", token=alice.access_token)).status == 204
    pins = await api.get(f"/api/v1/chats/{chat}/pins", token=bob.access_token)
    assert [p["message_id"] for p in pins.body["pins"]] == [msg["id"]]
    assert (await api.delete(f"/api/v1/messages/{msg['id']}/pin", token=alice.access_token)).status == 204
    assert (await api.get(f"/api/v1/chats/{chat}/pins", token=bob.access_token)).body["pins"] == []


async def test_read_receipts_and_unread_counts(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    for i in range(4):
        await say(api, alice, chat, f"m{i}")
    await say(api, bob, chat, "my own does not count")
    view = await api.get(f"/api/v1/chats/{chat}", token=bob.access_token)
    assert view.body["unread_count"] == 4
    read = await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": 3}, token=bob.access_token)
    assert read.body == {"chat_id": chat, "last_read_seq": 3}
    assert (await api.get(f"/api/v1/chats/{chat}", token=bob.access_token)).body["unread_count"] == 1
    back = await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": 1}, token=bob.access_token)
    assert back.body["last_read_seq"] == 3  # never backwards
    beyond = await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": 999}, token=bob.access_token)
    assert beyond.body["last_read_seq"] == 5  # not past the last message


async def test_channels_broadcast_plaintext_and_only_posters_post(api: Api):
    owner, reader = await api.register(), await api.register()
    channel = await api.post(
        "/api/v1/chats",
        json={"type": "channel", "member_ids": [reader.user_id], "title": "news"},
        token=owner.access_token,
    )
    assert channel.status == 201 and channel.body["encrypted"] is False
    chat = channel.body["id"]
    assert (await say(api, owner, chat, "announcement")).status == 201
    refused = await say(api, reader, chat, "can I post?")
    assert refused.status == 403 and refused.code == "forbidden"
    history = await api.get(f"/api/v1/messages/chat/{chat}", token=reader.access_token)
    assert [m["body"] for m in history.body["items"]] == ["announcement"]


async def test_message_kinds(api: Api):
    alice, bob, chat = await two_in_a_group(api)
    media = (await api.upload(alice, png_bytes(), filename="cat.png")).body["id"]
    sticker_id = (await new_pack(api, bob, "👍"))["stickers"][0]["id"]  # anyone's published pack
    draft_sticker = (await new_pack(api, alice, "👎", publish=False))["stickers"][0]["id"]
    ok = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat, "client_id": "k1", "kind": "media", "media_id": media, "body": "caption"},
        token=alice.access_token,
    )
    assert ok.status == 201 and ok.body["media_id"] == media
    sticker = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat, "client_id": "k2", "kind": "sticker", "sticker_id": sticker_id},
        token=alice.access_token,
    )
    assert sticker.status == 201
    for bad in [
        {"kind": "media"},
        {"kind": "sticker"},
        {"kind": "system", "body": "I am the server"},
        {"kind": "html", "body": "x"},
        {"kind": "media", "media_id": str(uuid.uuid4())},  # no such upload
        {"kind": "sticker", "sticker_id": media},  # a file, not a sticker
        {"kind": "sticker", "sticker_id": draft_sticker},  # a sticker of a pack not published
    ]:
        reply = await api.post(
            "/api/v1/messages", json={"chat_id": chat, "client_id": str(uuid.uuid4()), **bad}, token=alice.access_token
        )
        assert reply.status == 422, bad


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def test_encrypted_direct_chat_relays_ciphertext_per_device(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    bob_phone = await api.new_device(bob, device_name="phone")
    alice_tablet = await api.new_device(alice, device_name="tablet")
    await api.publish_keys(bob, bob_phone, alice_tablet)
    chat = (
        await api.post("/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token)
    ).body
    assert chat["encrypted"] is True
    blobs = {d: os.urandom(40) for d in [bob.device_id, bob_phone.device_id, alice_tablet.device_id]}
    recipients = [{"device_id": d, "ciphertext": b64(c)} for d, c in blobs.items()]

    plaintext = await api.post(
        "/api/v1/messages", json={"chat_id": chat["id"], "client_id": "p", "body": "hi"}, token=alice.access_token
    )
    assert plaintext.status == 422 and plaintext.code == "encryption_required"

    missing = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "e0", "recipients": recipients[:2]},
        token=alice.access_token,
    )
    assert missing.status == 409 and missing.code == "device_mismatch"
    assert missing.body["missing_devices"] == [alice_tablet.device_id]
    listed = {d for entry in missing.body["devices"] for d in entry["device_ids"]}
    assert listed == set(blobs)

    extra = [*recipients, {"device_id": str(uuid.uuid4()), "ciphertext": b64(b"x")}]
    wrong = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "e1", "recipients": extra},
        token=alice.access_token,
    )
    assert wrong.status == 409 and len(wrong.body["extra_devices"]) == 1

    sent = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "e2", "recipients": recipients},
        token=alice.access_token,
    )
    assert sent.status == 201 and sent.body["seq"] == 1

    # each device reads its own ciphertext, byte for byte
    for device in (bob, bob_phone):
        got = await api.get(f"/api/v1/messages/{sent.body['id']}", token=device.access_token)
        assert base64.b64decode(got.body["ciphertext"]) == blobs[device.device_id]
        assert got.body["body"] is None

    # a device revoked since: naming it is stale (410), and nothing is stored
    await api.delete(f"/api/v1/devices/{bob_phone.device_id}", token=bob.access_token)
    stale = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "e3", "recipients": recipients},
        token=alice.access_token,
    )
    assert stale.status == 410 and stale.code == "stale_devices"
    assert stale.body["stale_devices"] == [bob_phone.device_id]
    assert await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE chat_id = $1", chat["id"]) == 1


async def test_encrypted_group_takes_one_sender_key_ciphertext(api: Api):
    alice, bob = await api.register(), await api.register()
    await api.publish_keys(bob)
    chat = (
        await api.post(
            "/api/v1/chats",
            json={"type": "group", "member_ids": [bob.user_id], "title": "e2e"},
            token=alice.access_token,
        )
    ).body
    assert chat["encrypted"] is True
    key = await api.post(
        f"/api/v1/crypto/sender-keys/{chat['id']}",
        json={"distribution_id": "k1", "recipients": [{"device_id": bob.device_id, "ciphertext": b64(b"key")}]},
        token=alice.access_token,
    )
    assert key.status == 204
    blob = os.urandom(300)
    sent = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "g1", "ciphertext": b64(blob)},
        token=alice.access_token,
    )
    assert sent.status == 201
    got = await api.get(f"/api/v1/messages/chat/{chat['id']}", token=bob.access_token)
    assert base64.b64decode(got.body["items"][0]["ciphertext"]) == blob
    not_b64 = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat["id"], "client_id": "g2", "ciphertext": "@@@"},
        token=alice.access_token,
    )
    assert not_b64.status == 422


async def test_plaintext_chats_refuse_ciphertext(api: Api):
    alice, _, chat = await two_in_a_group(api)
    reply = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat, "client_id": "x", "ciphertext": b64(b"abc")},
        token=alice.access_token,
    )
    assert reply.status == 422 and reply.code == "not_encrypted"


async def test_an_encrypted_send_that_reaches_no_device_of_a_member_is_refused(server: Server):
    """A member with no device that can read (no device yet, or none with keys) would see an unread
    message with nothing to read: the send is refused, naming the member, and nothing is stored."""
    api = server.api
    alice, bob, grandpa = await api.register(), await api.register(), await api.register()
    await api.publish_keys(bob)
    assert (await api.post("/api/v1/auth/logout", token=grandpa.access_token)).status == 204  # no device at all
    chat = (
        await api.post(
            "/api/v1/chats",
            json={"type": "group", "member_ids": [bob.user_id, grandpa.user_id], "title": "family"},
            token=alice.access_token,
        )
    ).body["id"]
    before = await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE chat_id = $1", chat)
    for body in (
        {"recipients": [{"device_id": bob.device_id, "ciphertext": b64(b"x")}]},
        {"ciphertext": b64(b"group")},
    ):
        reply = await api.post(
            "/api/v1/messages", json={"chat_id": chat, "client_id": str(uuid.uuid4()), **body}, token=alice.access_token
        )
        assert reply.status == 409 and reply.code == "member_without_device", reply.body
        assert reply.body["user_ids"] == [grandpa.user_id]
    assert await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE chat_id = $1", chat) == before

    # A device that logged in but published no keys cannot read either; once it has, the send goes.
    tablet = await api.new_device(grandpa, device_name="tablet")
    sealed = {"recipients": [{"device_id": bob.device_id, "ciphertext": b64(b"x")}]}
    reply = await api.post(
        "/api/v1/messages", json={"chat_id": chat, "client_id": "c1", **sealed}, token=alice.access_token
    )
    assert reply.status == 409 and reply.code == "member_without_device"
    await api.publish_keys(tablet)
    sealed["recipients"].append({"device_id": tablet.device_id, "ciphertext": b64(b"y")})
    reply = await api.post(
        "/api/v1/messages", json={"chat_id": chat, "client_id": "c1", **sealed}, token=alice.access_token
    )
    assert reply.status == 201, reply.body


async def test_unread_counts_only_what_this_device_can_read(server: Server):
    """A device that joined after a message was sent cannot decrypt it, so it is not unread there."""
    api = server.api
    alice, bob = await api.register(), await api.register()
    await api.publish_keys(alice, bob)
    chat = (
        await api.post("/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token)
    ).body["id"]
    sent = await api.post(
        "/api/v1/messages",
        json={"chat_id": chat, "client_id": "old", "recipients": [{"device_id": bob.device_id, "ciphertext": "eA=="}]},
        token=alice.access_token,
    )
    assert sent.status == 201, sent.body
    laptop = await api.new_device(bob, device_name="laptop")
    await api.publish_keys(laptop)

    async def unread(device) -> int:
        listed = await api.get("/api/v1/chats", token=device.access_token)
        return next(c["unread_count"] for c in listed.body["items"] if c["id"] == chat)

    assert await unread(bob) == 1
    assert await unread(laptop) == 0
    both = [{"device_id": d.device_id, "ciphertext": "eA=="} for d in (bob, laptop)]
    sent = await api.post(
        "/api/v1/messages", json={"chat_id": chat, "client_id": "new", "recipients": both}, token=alice.access_token
    )
    assert sent.status == 201, sent.body
    assert (await unread(bob), await unread(laptop)) == (2, 1)
    one = await api.get(f"/api/v1/chats/{chat}", token=laptop.access_token)
    assert one.body["unread_count"] == 1
