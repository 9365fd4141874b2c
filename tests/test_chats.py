"""Chats over HTTP: direct chats (one per pair), groups and channels, the chat list with
unread counts, updates, delete and leave, members and roles."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, get_args

import msgspec

from sup.http.schemas import PermissionName
from tests.conftest import Account, Api, Reply, Server, png_bytes

CHATS = "/api/v1/chats"
MESSAGES = "/api/v1/messages"
ALL_PERMISSIONS = set(get_args(PermissionName))  # every name the API takes and gives


# -- helpers ----------------------------------------------------------------------------------


async def create(api: Api, who: Account, type: str, *members: Account, **fields: Any) -> Reply:
    body = {"type": type, "member_ids": [m.user_id for m in members], **fields}
    return await api.post(CHATS, json=body, token=who.access_token)


async def group(api: Api, owner: Account, *members: Account, title: str = "group", **fields: Any) -> str:
    """An unencrypted group (plaintext bodies can be sent): its id."""
    reply = await create(api, owner, "group", *members, title=title, encrypted=False, **fields)
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def direct(api: Api, me: Account, other: Account) -> str:
    reply = await create(api, me, "direct", other)
    assert reply.status in (200, 201), reply.body
    return reply.body["id"]


async def say(api: Api, who: Account, chat_id: str, body: str = "hello") -> Reply:
    return await api.post(
        MESSAGES, json={"chat_id": chat_id, "client_id": str(uuid.uuid4()), "body": body}, token=who.access_token
    )


async def said(api: Api, who: Account, chat_id: str, body: str = "hello") -> dict[str, Any]:
    reply = await say(api, who, chat_id, body)
    assert reply.status == 201, reply.body
    return reply.body


async def chat_of(api: Api, who: Account, chat_id: str) -> dict[str, Any]:
    reply = await api.get(f"{CHATS}/{chat_id}", token=who.access_token)
    assert reply.status == 200, reply.body
    return reply.body


async def my_chats(api: Api, who: Account) -> list[dict[str, Any]]:
    reply = await api.get(CHATS, params={"limit": "200"}, token=who.access_token)
    assert reply.status == 200, reply.body
    return reply.body["items"]


async def members_of(api: Api, who: Account, chat_id: str) -> dict[str, dict[str, Any]]:
    reply = await api.get(f"{CHATS}/{chat_id}/members", params={"limit": "200"}, token=who.access_token)
    assert reply.status == 200, reply.body
    return {m["user_id"]: m for m in reply.body["items"]}


async def roles_of(api: Api, who: Account, chat_id: str) -> list[dict[str, Any]]:
    reply = await api.get(f"{CHATS}/{chat_id}/roles", token=who.access_token)
    assert reply.status == 200, reply.body
    return reply.body["roles"]


async def role_id(api: Api, who: Account, chat_id: str, kind: str) -> str:
    return next(r["id"] for r in await roles_of(api, who, chat_id) if r["kind"] == kind)


async def set_role(api: Api, who: Account, chat_id: str, user: Account, role: str) -> Reply:
    return await api.patch(f"{CHATS}/{chat_id}/members/{user.user_id}", json={"role_id": role}, token=who.access_token)


async def history(api: Api, who: Account, chat_id: str) -> list[dict[str, Any]]:
    reply = await api.get(f"{MESSAGES}/chat/{chat_id}", params={"limit": "200"}, token=who.access_token)
    assert reply.status == 200, reply.body
    return reply.body["items"]


def system_actions(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [msgspec.json.decode(m["body"]) for m in items if m["kind"] == "system"]


# -- direct chats ----------------------------------------------------------------------------


async def test_direct_chat_is_one_per_pair(api: Api):
    alice, bob = await api.register(), await api.register()
    first = await create(api, alice, "direct", bob)
    assert first.status == 201, first.body
    chat = first.body
    assert (chat["type"], chat["encrypted"], chat["title"]) == ("direct", True, "")

    again = await create(api, alice, "direct", bob)
    from_bob = await create(api, bob, "direct", alice)
    listing_myself_too = await create(api, alice, "direct", alice, bob)
    for reply in (again, from_bob, listing_myself_too):
        assert reply.status == 200 and reply.body["id"] == chat["id"], reply.body

    for who in (alice, bob):
        assert [c["id"] for c in await my_chats(api, who)] == [chat["id"]]
    members = await members_of(api, alice, chat["id"])
    assert set(members) == {alice.user_id, bob.user_id}
    assert {m["role"]["kind"] for m in members.values()} == {"member"}


async def test_concurrent_direct_creates_from_both_sides_make_one_chat(api: Api):
    pairs = [(await api.register(), await api.register()) for _ in range(3)]
    attempts = [(a, b) for a, b in pairs for _ in range(2)] + [(b, a) for a, b in pairs for _ in range(2)]
    replies = await asyncio.gather(*[create(api, me, "direct", other) for me, other in attempts])
    assert all(r.status in (200, 201) for r in replies), [r.body for r in replies]
    for a, b in pairs:
        pair = {a.user_id, b.user_id}
        mine = [r for (me, other), r in zip(attempts, replies, strict=True) if {me.user_id, other.user_id} == pair]
        assert len({r.body["id"] for r in mine}) == 1
        assert sorted(r.status for r in mine) == [200, 200, 200, 201]
        for who in (a, b):
            assert [c["id"] for c in await my_chats(api, who)] == [mine[0].body["id"]]


async def test_direct_chat_shape_is_enforced(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    for reply in [
        await create(api, alice, "direct", bob, encrypted=False),
        await create(api, alice, "direct"),
        await create(api, alice, "direct", alice),
        await create(api, alice, "direct", bob, carol),
    ]:
        assert reply.status == 422 and reply.code == "validation_failed", reply.body
    assert await my_chats(api, alice) == []


async def test_direct_chat_is_encrypted_fixed_and_deletable_by_either(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await api.publish_keys(bob)
    chat_id = await direct(api, alice, bob)

    plaintext = await say(api, alice, chat_id, "in the clear")
    assert plaintext.status == 422 and plaintext.code == "encryption_required"
    sealed = await api.post(
        MESSAGES,
        json={
            "chat_id": chat_id,
            "client_id": str(uuid.uuid4()),
            "recipients": [{"device_id": bob.device_id, "ciphertext": b"\x01sealed"}],
        },
        token=alice.access_token,
    )
    assert sealed.status == 201, sealed.body

    for changes in [{"title": "ours"}, {"description": "about us"}]:
        edit = await api.patch(f"{CHATS}/{chat_id}", json=changes, token=alice.access_token)
        assert edit.status == 403 and edit.code == "forbidden", edit.body
    add = await api.post(f"{CHATS}/{chat_id}/members", json={"user_ids": [carol.user_id]}, token=alice.access_token)
    assert add.status == 403 and add.code == "forbidden", add.body
    assert set(await members_of(api, alice, chat_id)) == {alice.user_id, bob.user_id}
    leave = await api.post(f"{CHATS}/{chat_id}/leave", token=alice.access_token)
    assert leave.status == 409 and leave.code == "conflict", leave.body
    leave_by_removal = await api.delete(f"{CHATS}/{chat_id}/members/{bob.user_id}", token=bob.access_token)
    assert leave_by_removal.status == 409, leave_by_removal.body
    remove_other = await api.delete(f"{CHATS}/{chat_id}/members/{bob.user_id}", token=alice.access_token)
    assert remove_other.status == 403, remove_other.body

    # either member deletes it for both; then the pair can start afresh
    assert (await api.delete(f"{CHATS}/{chat_id}", token=bob.access_token)).status == 204
    for who in (alice, bob):
        assert (await api.get(f"{CHATS}/{chat_id}", token=who.access_token)).status == 404
        assert await my_chats(api, who) == []
    fresh = await create(api, alice, "direct", bob)
    assert fresh.status == 201 and fresh.body["id"] != chat_id


async def test_a_user_who_blocked_me_cannot_be_reached(api: Api):
    me, blocker = await api.register(), await api.register()
    assert (
        await api.post("/api/v1/users/me/block", json={"user_id": me.user_id}, token=blocker.access_token)
    ).status == 201

    opened = await create(api, me, "direct", blocker)
    assert opened.status == 403 and opened.code == "blocked", opened.body
    with_them = await create(api, me, "group", blocker, title="party", encrypted=False)
    assert with_them.status == 403 and with_them.code == "blocked", with_them.body
    assert await my_chats(api, me) == []

    chat_id = await group(api, me)
    added = await api.post(f"{CHATS}/{chat_id}/members", json={"user_ids": [blocker.user_id]}, token=me.access_token)
    assert added.status == 403 and added.code == "blocked", added.body
    assert set(await members_of(api, me, chat_id)) == {me.user_id}
    assert await my_chats(api, blocker) == []


# -- groups and channels ---------------------------------------------------------------------


async def test_groups_and_channels_need_a_title(api: Api):
    alice = await api.register()
    for type in ("group", "channel"):
        for fields in [{}, {"title": ""}, {"title": "   "}]:
            reply = await create(api, alice, type, **fields)
            assert reply.status == 422 and reply.code == "validation_failed", (type, fields, reply.body)
            assert reply.body.get("field") == "title"
    assert await my_chats(api, alice) == []


async def test_creator_owns_a_group_and_the_others_are_members(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    reply = await create(api, alice, "group", bob, carol, title=" Friends ", description="weekend plans")
    assert reply.status == 201, reply.body
    chat = reply.body
    assert (chat["type"], chat["title"], chat["description"], chat["created_by"]) == (
        "group",
        "Friends",
        "weekend plans",
        alice.user_id,
    )
    assert chat["encrypted"] is True  # groups are end-to-end encrypted unless asked otherwise
    assert chat["my_role"]["kind"] == "owner" and set(chat["my_role"]["permissions"]) == ALL_PERMISSIONS

    members = await members_of(api, bob, chat["id"])
    assert {uid: m["role"]["kind"] for uid, m in members.items()} == {
        alice.user_id: "owner",
        bob.user_id: "member",
        carol.user_id: "member",
    }
    seen_by_bob = await chat_of(api, bob, chat["id"])
    assert seen_by_bob["my_role"]["kind"] == "member" and "send_messages" in seen_by_bob["my_role"]["permissions"]
    assert "manage_roles" not in seen_by_bob["my_role"]["permissions"]

    plain = await create(api, alice, "group", bob, title="plain", encrypted=False)
    assert plain.status == 201 and plain.body["encrypted"] is False


async def test_channels_are_never_encrypted(api: Api):
    alice, bob = await api.register(), await api.register()
    channel = await create(api, alice, "channel", bob, title="News")
    assert channel.status == 201, channel.body
    assert (channel.body["type"], channel.body["encrypted"]) == ("channel", False)
    assert channel.body["my_role"]["kind"] == "owner"
    assert (await chat_of(api, bob, channel.body["id"]))["my_role"]["kind"] == "member"
    explicit = await create(api, alice, "channel", title="News", encrypted=False)
    assert explicit.status == 201 and explicit.body["encrypted"] is False
    refused = await create(api, alice, "channel", title="Secret news", encrypted=True)
    assert refused.status == 422 and refused.code == "validation_failed", refused.body
    # the owner broadcasts in plaintext
    assert (await say(api, alice, channel.body["id"], "extra!")).status == 201


# -- the list of my chats --------------------------------------------------------------------


async def test_my_chats_are_ordered_by_last_activity(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    first = await group(api, alice, bob, title="first")
    server.clock.advance(1)
    second = await group(api, alice, bob, title="second")
    server.clock.advance(1)
    third = await group(api, alice, bob, title="third")
    assert [c["id"] for c in await my_chats(api, alice)] == [third, second, first]

    server.clock.advance(1)
    message = await said(api, bob, first, "bump")
    for who in (alice, bob):
        assert [c["id"] for c in await my_chats(api, who)] == [first, third, second]
    server.clock.advance(1)
    await said(api, alice, second, "me too")
    chats = {c["id"]: c for c in await my_chats(api, alice)}
    assert list(chats) == [second, first, third]

    assert chats[first]["last_message"]["id"] == message["id"]
    assert chats[first]["last_message"]["body"] == "bump"
    assert chats[first]["last_message"]["sender_id"] == bob.user_id
    assert chats[first]["unread_count"] == 1
    assert chats[second]["last_message"]["body"] == "me too" and chats[second]["unread_count"] == 0
    assert chats[third]["last_message"] is None and chats[third]["unread_count"] == 0


async def test_unread_count_and_read_marker(api: Api):
    alice, bob = await api.register(), await api.register()
    chat_id = await group(api, alice, bob)
    a1 = await said(api, alice, chat_id, "one")
    a2 = await said(api, alice, chat_id, "two")
    b1 = await said(api, bob, chat_id, "three")
    assert (a1["seq"], a2["seq"], b1["seq"]) == (1, 2, 3)

    async def unread(who: Account) -> tuple[int, int]:
        listed = next(c for c in await my_chats(api, who) if c["id"] == chat_id)
        single = await chat_of(api, who, chat_id)
        assert (listed["unread_count"], listed["last_read_seq"]) == (single["unread_count"], single["last_read_seq"])
        return single["unread_count"], single["last_read_seq"]

    assert await unread(bob) == (2, 0)  # my own messages are never unread
    assert await unread(alice) == (1, 0)

    async def read(who: Account, seq: int) -> int:
        reply = await api.post(f"{MESSAGES}/chat/{chat_id}/read", json={"seq": seq}, token=who.access_token)
        assert reply.status == 200 and reply.body["chat_id"] == chat_id, reply.body
        return reply.body["last_read_seq"]

    assert await read(bob, 1) == 1
    assert await unread(bob) == (1, 1)
    assert await read(bob, 0) == 1  # never backwards
    assert await unread(bob) == (1, 1)
    assert await read(bob, 2) == 2
    assert await unread(bob) == (0, 2)
    assert await read(bob, 1_000) == 3  # not beyond the last message
    assert await unread(bob) == (0, 3)
    assert await unread(alice) == (1, 0)  # bob's marker is his alone

    a4 = await said(api, alice, chat_id, "four")
    await said(api, alice, chat_id, "five")
    assert await unread(bob) == (2, 3)
    assert (await api.delete(f"{MESSAGES}/{a4['id']}", token=alice.access_token)).status == 204
    assert await unread(bob) == (1, 3)  # a message deleted for everyone is not waiting to be read
    for bad in [{"seq": -1}, {"seq": "2"}, {}]:
        reply = await api.post(f"{MESSAGES}/chat/{chat_id}/read", json=bad, token=bob.access_token)
        assert reply.status == 422, (bad, reply.body)


async def test_chat_list_pages_visit_every_chat_once(api: Api):
    me, other = await api.register(), await api.register()
    ids = [await group(api, me, title=f"g{i}") for i in range(7)]  # several may share a millisecond
    await said(api, me, ids[2], "bump")
    await said(api, other, await group(api, other, me, title="theirs"), "hello")
    everything = [c["id"] for c in await my_chats(api, me)]
    assert len(everything) == 8 and len(set(everything)) == 8

    for limit in (1, 3, 4, 8):
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": str(limit), **({"before": cursor} if cursor else {})}
            page = await api.get(CHATS, params=params, token=me.access_token)
            assert page.status == 200, page.body
            assert len(page.body["items"]) <= limit
            seen += [c["id"] for c in page.body["items"]]
            cursor = page.body["next_cursor"]
            pages += 1
            if cursor is None:
                break
            assert pages <= 8, "pagination does not end"
        assert seen == everything, limit
        assert pages == -(-8 // limit)

    for params in [{"before": "nope"}, {"before": f"12_{uuid.uuid4()}x"}, {"limit": "0"}, {"limit": "201"}]:
        reply = await api.get(CHATS, params=params, token=me.access_token)
        assert reply.status == 422, (params, reply.body)


# -- update, delete, leave -------------------------------------------------------------------


async def test_update_changes_info_and_a_title_change_leaves_a_system_message(api: Api):
    alice, bob = await api.register(), await api.register()
    chat_id = await group(api, alice, bob, title="Before")

    renamed = await api.patch(f"{CHATS}/{chat_id}", json={"title": " After "}, token=alice.access_token)
    assert renamed.status == 200 and renamed.body["title"] == "After", renamed.body
    items = await history(api, bob, chat_id)
    assert items[-1]["kind"] == "system" and items[-1]["sender_id"] == alice.user_id
    assert system_actions(items) == [{"action": "title_changed", "title": "After"}]

    media_id = (await api.upload(alice, png_bytes(), purpose="avatar")).body["id"]
    described = await api.patch(
        f"{CHATS}/{chat_id}",
        json={"description": "all about it", "avatar_media_id": media_id},
        token=alice.access_token,
    )
    assert described.status == 200, described.body
    assert (described.body["title"], described.body["description"], described.body["avatar_media_id"]) == (
        "After",
        "all about it",
        media_id,
    )
    cleared = await api.patch(f"{CHATS}/{chat_id}", json={"avatar_media_id": None}, token=alice.access_token)
    assert cleared.status == 200 and cleared.body["avatar_media_id"] is None
    same = await api.patch(f"{CHATS}/{chat_id}", json={"title": "After"}, token=alice.access_token)
    assert same.status == 200
    assert system_actions(await history(api, bob, chat_id)) == [{"action": "title_changed", "title": "After"}]
    assert (await chat_of(api, bob, chat_id))["title"] == "After"

    for bad in [
        {"title": ""},
        {"title": "  "},
        {"title": "x" * 129},
        {"title": 5},
        {"title": None},
        {"description": "x" * 2001},
        {"avatar_media_id": "not-a-media-id"},
        {"owner": bob.user_id},
    ]:
        reply = await api.patch(f"{CHATS}/{chat_id}", json=bad, token=alice.access_token)
        assert reply.status == 422, (bad, reply.body)
    assert (await chat_of(api, alice, chat_id))["title"] == "After"


async def test_only_the_owner_deletes_a_group(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, alice, bob, carol)
    assert (await set_role(api, alice, chat_id, bob, await role_id(api, alice, chat_id, "admin"))).status == 204
    for who in (bob, carol):
        refused = await api.delete(f"{CHATS}/{chat_id}", token=who.access_token)
        assert refused.status == 403 and refused.code == "forbidden", refused.body
    assert (await chat_of(api, carol, chat_id))["id"] == chat_id

    assert (await api.delete(f"{CHATS}/{chat_id}", token=alice.access_token)).status == 204
    for who in (alice, bob, carol):
        gone = await api.get(f"{CHATS}/{chat_id}", token=who.access_token)
        assert gone.status == 404 and gone.code == "not_found"
        assert chat_id not in [c["id"] for c in await my_chats(api, who)]
    assert (await api.delete(f"{CHATS}/{chat_id}", token=alice.access_token)).status == 404


async def test_owner_leaving_hands_ownership_to_an_admin(api: Api):
    owner, older, admin = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, owner, older, admin)
    assert (await set_role(api, owner, chat_id, admin, await role_id(api, owner, chat_id, "admin"))).status == 204

    assert (await api.post(f"{CHATS}/{chat_id}/leave", token=owner.access_token)).status == 204
    assert (await api.get(f"{CHATS}/{chat_id}", token=owner.access_token)).status == 404
    members = await members_of(api, admin, chat_id)
    assert {uid: m["role"]["kind"] for uid, m in members.items()} == {admin.user_id: "owner", older.user_id: "member"}
    assert (await chat_of(api, admin, chat_id))["my_role"]["kind"] == "owner"
    assert {"action": "member_left", "user_id": owner.user_id} in system_actions(await history(api, older, chat_id))


async def test_owner_leaving_without_admins_hands_ownership_to_the_oldest_member(server: Server):
    api = server.api
    owner, oldest, newer = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, owner)
    for member in (oldest, newer):
        server.clock.advance(1)
        added = await api.post(
            f"{CHATS}/{chat_id}/members", json={"user_ids": [member.user_id]}, token=owner.access_token
        )
        assert added.status == 200 and added.body["added"] == [member.user_id]

    assert (await api.post(f"{CHATS}/{chat_id}/leave", token=owner.access_token)).status == 204
    members = await members_of(api, newer, chat_id)
    assert {uid: m["role"]["kind"] for uid, m in members.items()} == {oldest.user_id: "owner", newer.user_id: "member"}


async def test_the_last_member_out_deletes_the_chat(server: Server):
    api = server.api
    owner, member = await api.register(), await api.register()
    chat_id = await group(api, owner, member)
    await said(api, owner, chat_id, "anyone?")
    assert (await api.post(f"{CHATS}/{chat_id}/leave", token=member.access_token)).status == 204
    assert (await chat_of(api, owner, chat_id))["id"] == chat_id  # the owner is still there
    assert (await api.post(f"{CHATS}/{chat_id}/leave", token=owner.access_token)).status == 204
    assert await server.db.fetchval("SELECT COUNT(*) FROM chats WHERE id = $1", chat_id) == 0
    assert await server.db.fetchval("SELECT COUNT(*) FROM messages WHERE chat_id = $1", chat_id) == 0
    for who in (owner, member):
        assert (await api.post(f"{CHATS}/{chat_id}/leave", token=who.access_token)).status == 404


# -- members ---------------------------------------------------------------------------------


async def test_members_add_list_and_remove(api: Api):
    owner, a, b, c, d = [await api.register() for _ in range(5)]
    chat_id = await group(api, owner, a)
    path = f"{CHATS}/{chat_id}/members"

    first = await api.post(path, json={"user_ids": [b.user_id, c.user_id, b.user_id]}, token=owner.access_token)
    assert first.status == 200 and sorted(first.body["added"]) == sorted([b.user_id, c.user_id]), first.body
    again = await api.post(path, json={"user_ids": [b.user_id, d.user_id]}, token=owner.access_token)
    assert again.status == 200 and again.body["added"] == [d.user_id]
    nothing = await api.post(path, json={"user_ids": [owner.user_id, a.user_id]}, token=owner.access_token)
    assert nothing.status == 200 and nothing.body["added"] == []
    added = [x for x in system_actions(await history(api, owner, chat_id)) if x["action"] == "members_added"]
    assert [sorted(x["user_ids"]) for x in added] == [sorted([b.user_id, c.user_id]), [d.user_id]]
    assert (await chat_of(api, d, chat_id))["my_role"]["kind"] == "member"

    everyone = {u.user_id for u in (owner, a, b, c, d)}
    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"after": cursor} if cursor else {})}
        page = await api.get(path, params=params, token=c.access_token)
        assert page.status == 200, page.body
        seen += [m["user_id"] for m in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(everyone) and len(seen) == 5
    assert {m["username"] for m in (await members_of(api, a, chat_id)).values()} == {
        u.username for u in (owner, a, b, c, d)
    }

    assert (await api.delete(f"{path}/{c.user_id}", token=owner.access_token)).status == 204
    assert (await api.get(f"{CHATS}/{chat_id}", token=c.access_token)).status == 404
    assert c.user_id not in await members_of(api, owner, chat_id)
    assert {"action": "member_removed", "user_id": c.user_id} in system_actions(await history(api, a, chat_id))
    for target in (c.user_id, str(uuid.uuid4()), "not-a-user"):
        missing = await api.delete(f"{path}/{target}", token=owner.access_token)
        assert missing.status == 404 and missing.code == "not_found", (target, missing.body)

    # members cannot remove (by default); admins can, but not the owner
    refused = await api.delete(f"{path}/{b.user_id}", token=a.access_token)
    assert refused.status == 403 and refused.code == "forbidden"
    assert (await set_role(api, owner, chat_id, a, await role_id(api, owner, chat_id, "admin"))).status == 204
    not_the_owner = await api.delete(f"{path}/{owner.user_id}", token=a.access_token)
    assert not_the_owner.status == 403 and not_the_owner.code == "forbidden"
    assert (await api.delete(f"{path}/{b.user_id}", token=a.access_token)).status == 204
    assert set(await members_of(api, owner, chat_id)) == {owner.user_id, a.user_id, d.user_id}

    # removing myself is leaving
    assert (await api.delete(f"{path}/{d.user_id}", token=d.access_token)).status == 204
    assert {"action": "member_left", "user_id": d.user_id} in system_actions(await history(api, a, chat_id))


async def test_added_members_get_the_member_role_and_can_take_part(api: Api):
    owner, member, newcomer = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, owner, member)
    await said(api, owner, chat_id, "before you came")
    added = await api.post(
        f"{CHATS}/{chat_id}/members", json={"user_ids": [newcomer.user_id]}, token=member.access_token
    )
    assert added.status == 200 and added.body["added"] == [newcomer.user_id], added.body  # group members may add
    assert (await chat_of(api, newcomer, chat_id))["my_role"]["kind"] == "member"
    assert (await said(api, newcomer, chat_id, "hi all"))["sender_id"] == newcomer.user_id


async def test_member_list_shows_each_members_role_as_the_roles_list_does(api: Api):
    owner, admin, member = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, owner, admin, member)
    assert (await set_role(api, owner, chat_id, admin, await role_id(api, owner, chat_id, "admin"))).status == 204
    roles = {r["id"]: r for r in await roles_of(api, owner, chat_id)}
    for user_id, listed in (await members_of(api, member, chat_id)).items():
        expected = roles[listed["role"]["id"]]
        assert listed["role"] == expected, f"{listed['role']['kind']} {user_id}: {listed['role']} != {expected}"


# -- roles -----------------------------------------------------------------------------------


async def test_roles_list_create_and_update(api: Api):
    owner, member = await api.register(), await api.register()
    chat_id = await group(api, owner, member)
    roles = await roles_of(api, member, chat_id)
    assert sorted(r["kind"] for r in roles) == ["admin", "member", "owner"]
    owner_role = next(r for r in roles if r["kind"] == "owner")
    assert set(owner_role["permissions"]) == ALL_PERMISSIONS

    created = await api.post(
        f"{CHATS}/{chat_id}/roles",
        json={"name": "Moderator", "permissions": ["pin", "delete_others"]},
        token=owner.access_token,
    )
    assert created.status == 201, created.body
    role = created.body
    assert (role["kind"], role["name"], set(role["permissions"])) == ("custom", "Moderator", {"pin", "delete_others"})
    assert role in await roles_of(api, member, chat_id)

    path = f"{CHATS}/{chat_id}/roles/{role['id']}"
    renamed = await api.patch(path, json={"name": "Mods"}, token=owner.access_token)
    assert renamed.status == 200 and renamed.body["name"] == "Mods"
    assert set(renamed.body["permissions"]) == {"pin", "delete_others"}
    narrowed = await api.patch(path, json={"permissions": ["pin"]}, token=owner.access_token)
    assert narrowed.status == 200 and (narrowed.body["name"], narrowed.body["permissions"]) == ("Mods", ["pin"])

    for changes in [{"permissions": []}, {"name": "Boss"}]:
        immutable = await api.patch(
            f"{CHATS}/{chat_id}/roles/{owner_role['id']}", json=changes, token=owner.access_token
        )
        assert immutable.status == 403 and immutable.code == "forbidden", immutable.body
    assert next(r for r in await roles_of(api, owner, chat_id) if r["kind"] == "owner") == owner_role

    for bad in [{"name": ""}, {"name": "   "}, {"name": "x" * 65}, {"name": "ok", "permissions": ["fly"]}, {}]:
        reply = await api.post(f"{CHATS}/{chat_id}/roles", json=bad, token=owner.access_token)
        assert reply.status == 422, (bad, reply.body)
    for bad in [{"permissions": ["fly"]}, {"name": ""}, {"name": 5}]:
        reply = await api.patch(path, json=bad, token=owner.access_token)
        assert reply.status == 422, (bad, reply.body)

    other_chat = await group(api, owner)
    for unknown in (str(uuid.uuid4()), "not-a-role", await role_id(api, owner, other_chat, "member")):
        reply = await api.patch(f"{CHATS}/{chat_id}/roles/{unknown}", json={"name": "x"}, token=owner.access_token)
        assert reply.status == 404 and reply.code == "not_found", (unknown, reply.body)

    member_tries = await api.post(f"{CHATS}/{chat_id}/roles", json={"name": "Mine"}, token=member.access_token)
    assert member_tries.status == 403 and member_tries.code == "forbidden"


async def test_only_the_owner_changes_the_admin_role(api: Api):
    owner, admin = await api.register(), await api.register()
    chat_id = await group(api, owner, admin)
    admin_role = await role_id(api, owner, chat_id, "admin")
    manage = await api.post(
        f"{CHATS}/{chat_id}/roles",
        json={"name": "Role manager", "permissions": ["manage_roles"]},
        token=owner.access_token,
    )
    assert manage.status == 201
    assert (await set_role(api, owner, chat_id, admin, manage.body["id"])).status == 204
    refused = await api.patch(
        f"{CHATS}/{chat_id}/roles/{admin_role}", json={"permissions": ["manage_roles"]}, token=admin.access_token
    )
    assert refused.status == 403 and refused.code == "forbidden", refused.body
    allowed = await api.patch(
        f"{CHATS}/{chat_id}/roles/{admin_role}", json={"name": "Admins"}, token=owner.access_token
    )
    assert allowed.status == 200 and allowed.body["name"] == "Admins"


async def test_custom_role_permissions_take_effect(api: Api):
    owner, member = await api.register(), await api.register()
    chat_id = await group(api, owner, member)
    mine = await said(api, member, chat_id, "while I could")
    theirs = await said(api, owner, chat_id, "pin me")

    created = await api.post(f"{CHATS}/{chat_id}/roles", json={"name": "Quiet"}, token=owner.access_token)
    assert created.status == 201 and created.body["permissions"] == []
    quiet = created.body["id"]
    assert (await set_role(api, owner, chat_id, member, quiet)).status == 204
    my_role = (await chat_of(api, member, chat_id))["my_role"]
    assert (my_role["id"], my_role["kind"], my_role["name"], my_role["permissions"]) == (quiet, "custom", "Quiet", [])
    assert (await members_of(api, owner, chat_id))[member.user_id]["role"]["id"] == quiet

    refused = await say(api, member, chat_id, "let me talk")
    assert refused.status == 403 and refused.code == "forbidden", refused.body
    edit = await api.patch(f"{MESSAGES}/{mine['id']}", json={"body": "changed"}, token=member.access_token)
    assert edit.status == 403 and edit.code == "forbidden", edit.body
    pin = await api.post(f"{MESSAGES}/{theirs['id']}/pin", token=member.access_token)
    assert pin.status == 403 and pin.code == "forbidden", pin.body

    granted = await api.patch(
        f"{CHATS}/{chat_id}/roles/{quiet}", json={"permissions": ["send_messages", "pin"]}, token=owner.access_token
    )
    assert granted.status == 200, granted.body
    assert (await say(api, member, chat_id, "thanks")).status == 201
    assert (await api.post(f"{MESSAGES}/{theirs['id']}/pin", token=member.access_token)).status == 204
    assert [
        p["message_id"] for p in (await api.get(f"{CHATS}/{chat_id}/pins", token=owner.access_token)).body["pins"]
    ] == [theirs["id"]]

    # back to the built-in member role
    assert (await set_role(api, owner, chat_id, member, await role_id(api, owner, chat_id, "member"))).status == 204
    assert (await chat_of(api, member, chat_id))["my_role"]["kind"] == "member"


async def test_setting_member_roles_is_checked(api: Api):
    owner, member, outsider = await api.register(), await api.register(), await api.register()
    chat_id = await group(api, owner, member)
    owner_role = await role_id(api, owner, chat_id, "owner")
    member_role = await role_id(api, owner, chat_id, "member")

    hand_over = await set_role(api, owner, chat_id, member, owner_role)
    assert hand_over.status == 403 and hand_over.code == "forbidden", hand_over.body
    demote_owner = await set_role(api, owner, chat_id, owner, member_role)
    assert demote_owner.status == 403 and demote_owner.code == "forbidden", demote_owner.body
    assert (await chat_of(api, owner, chat_id))["my_role"]["kind"] == "owner"

    not_a_member = await set_role(api, owner, chat_id, outsider, member_role)
    assert not_a_member.status == 404 and not_a_member.code == "not_found"
    unknown_role = await set_role(api, owner, chat_id, member, str(uuid.uuid4()))
    assert unknown_role.status == 404 and unknown_role.code == "not_found"
    foreign_role = await set_role(
        api, owner, chat_id, member, await role_id(api, owner, await group(api, owner), "admin")
    )
    assert foreign_role.status == 404 and foreign_role.code == "not_found"
    for bad in [{"role_id": "admin"}, {"role_id": None}, {}]:
        reply = await api.patch(f"{CHATS}/{chat_id}/members/{member.user_id}", json=bad, token=owner.access_token)
        assert reply.status == 422, (bad, reply.body)
    assert (await members_of(api, owner, chat_id))[member.user_id]["role"]["kind"] == "member"


# -- validation ------------------------------------------------------------------------------


async def test_unknown_members_are_404_with_their_ids(api: Api):
    alice, bob = await api.register(), await api.register()
    unknown = sorted(str(uuid.uuid4()) for _ in range(2))
    for type, fields in [("group", {"title": "g"}), ("channel", {"title": "c"})]:
        reply = await api.post(
            CHATS,
            json={"type": type, "member_ids": [bob.user_id, *unknown], **fields},
            token=alice.access_token,
        )
        assert reply.status == 404 and reply.code == "not_found", reply.body
        assert sorted(reply.body["missing_user_ids"]) == unknown
    lone = await api.post(CHATS, json={"type": "direct", "member_ids": [unknown[0]]}, token=alice.access_token)
    assert lone.status == 404 and lone.body["missing_user_ids"] == [unknown[0]]
    assert await my_chats(api, alice) == []

    chat_id = await group(api, alice)
    added = await api.post(
        f"{CHATS}/{chat_id}/members", json={"user_ids": [unknown[1], bob.user_id]}, token=alice.access_token
    )
    assert added.status == 404 and added.code == "not_found" and added.body["missing_user_ids"] == [unknown[1]]
    assert set(await members_of(api, alice, chat_id)) == {alice.user_id}  # nobody was added


async def test_wrong_types_are_422(api: Api):
    alice, bob = await api.register(), await api.register()
    for body in [
        {"title": "no type"},
        {"type": "party", "title": "x"},
        {"type": "group", "title": 5},
        {"type": "group", "title": "x", "member_ids": bob.user_id},
        {"type": "group", "title": "x", "member_ids": ["not-a-uuid"]},
        {"type": "group", "title": "x", "member_ids": [5]},
        {"type": "group", "title": "x", "encrypted": "yes"},
        {"type": "group", "title": "x", "owner_id": bob.user_id},
        {"type": "group", "title": "x" * 129},
        {"type": "group", "title": "x", "description": "x" * 2001},
        {"type": "group", "title": "bell\x07"},
    ]:
        reply = await api.post(CHATS, json=body, token=alice.access_token)
        assert reply.status == 422 and reply.code == "validation_failed", (body, reply.body)
    assert await my_chats(api, alice) == []

    chat_id = await group(api, alice)
    for body in [{"user_ids": []}, {"user_ids": bob.user_id}, {"user_ids": ["x"]}, {}]:
        reply = await api.post(f"{CHATS}/{chat_id}/members", json=body, token=alice.access_token)
        assert reply.status == 422, (body, reply.body)
    for params in [{"limit": "0"}, {"limit": "x"}, {"after": "nope"}, {"extra": "1"}]:
        reply = await api.get(f"{CHATS}/{chat_id}/members", params=params, token=alice.access_token)
        assert reply.status == 422, (params, reply.body)
    typing = await api.post(f"{CHATS}/{chat_id}/typing", json={"active": "yes"}, token=alice.access_token)
    assert typing.status == 422


async def test_chat_ids_that_are_not_uuids_are_404(api: Api):
    alice, bob = await api.register(), await api.register()
    await group(api, alice, bob)
    role = str(uuid.uuid4())
    for bad in ["not-a-chat", "1", "0" * 36, "-" * 36, str(uuid.uuid4())[:-1] + "g"]:
        for method, path, body in [
            ("GET", f"{CHATS}/{bad}", None),
            ("PATCH", f"{CHATS}/{bad}", {"title": "x"}),
            ("DELETE", f"{CHATS}/{bad}", None),
            ("POST", f"{CHATS}/{bad}/leave", None),
            ("GET", f"{CHATS}/{bad}/members", None),
            ("POST", f"{CHATS}/{bad}/members", {"user_ids": [bob.user_id]}),
            ("DELETE", f"{CHATS}/{bad}/members/{bob.user_id}", None),
            ("PATCH", f"{CHATS}/{bad}/members/{bob.user_id}", {"role_id": role}),
            ("GET", f"{CHATS}/{bad}/roles", None),
            ("POST", f"{CHATS}/{bad}/roles", {"name": "x"}),
            ("PATCH", f"{CHATS}/{bad}/roles/{role}", {"name": "x"}),
            ("GET", f"{CHATS}/{bad}/pins", None),
            ("POST", f"{CHATS}/{bad}/typing", {"active": True}),
            ("GET", f"{MESSAGES}/chat/{bad}", None),
            ("POST", f"{MESSAGES}/chat/{bad}/read", {"seq": 1}),
            ("GET", f"{MESSAGES}/{bad}", None),
            ("PATCH", f"{MESSAGES}/{bad}", {"body": "x"}),
            ("DELETE", f"{MESSAGES}/{bad}", None),
            ("POST", f"{MESSAGES}/{bad}/reactions", {"emoji": "x"}),
            ("POST", f"{MESSAGES}/{bad}/pin", None),
            ("POST", f"{MESSAGES}/{bad}/forward", {"chat_id": role, "client_id": "x"}),
        ]:
            reply = await api.request(method, path, json=body, token=alice.access_token)
            assert reply.status == 404 and reply.code == "not_found", (method, path, reply.status, reply.body)


async def test_chat_endpoints_need_a_token(api: Api):
    alice = await api.register()
    chat_id = await group(api, alice)
    for method, path in [
        ("GET", CHATS),
        ("POST", CHATS),
        ("GET", f"{CHATS}/{chat_id}"),
        ("PATCH", f"{CHATS}/{chat_id}"),
        ("GET", f"{CHATS}/{chat_id}/members"),
        ("GET", f"{MESSAGES}/chat/{chat_id}"),
    ]:
        reply = await api.request(method, path, json={})
        assert reply.status == 401, (method, path, reply.body)
