"""Joining chats over HTTP: public chats, invite links (expiry, use limit, approval, revocation),
join requests, who may do what, blocks, and the events and system messages that follow."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec

from tests.conftest import Account, Api, Reply, Server, Socket, plain_group, png_bytes
from tests.test_media import processed

CHATS = "/api/v1/chats"
INVITES = "/api/v1/chat-invites"


async def channel(api: Api, owner: Account, *members: Account, visibility: str = "private", **fields: Any) -> str:
    reply = await api.post(
        CHATS,
        json={
            "type": "channel",
            "title": "news",
            "member_ids": [m.user_id for m in members],
            "visibility": visibility,
            **fields,
        },
        token=owner.access_token,
    )
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def invite(api: Api, who: Account, chat_id: str, **fields: Any) -> dict[str, Any]:
    reply = await api.post(f"{CHATS}/{chat_id}/invites", json=fields, token=who.access_token)
    assert reply.status == 201, reply.body
    return reply.body


async def join(api: Api, who: Account, code: str) -> Reply:
    return await api.post(f"{INVITES}/join", json={"code": code}, token=who.access_token)


async def member_ids(api: Api, who: Account, chat_id: str) -> set[str]:
    reply = await api.get(f"{CHATS}/{chat_id}/members", params={"limit": "200"}, token=who.access_token)
    assert reply.status == 200, reply.body
    return {m["user_id"] for m in reply.body["items"]}


async def make_admin(api: Api, owner: Account, chat_id: str, user: Account) -> None:
    roles = (await api.get(f"{CHATS}/{chat_id}/roles", token=owner.access_token)).body["roles"]
    admin = next(r["id"] for r in roles if r["kind"] == "admin")
    reply = await api.patch(
        f"{CHATS}/{chat_id}/members/{user.user_id}", json={"role_id": admin}, token=owner.access_token
    )
    assert reply.status == 204, reply.body


async def system_actions(api: Api, who: Account, chat_id: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/api/v1/messages/chat/{chat_id}", params={"limit": "200"}, token=who.access_token)
    assert reply.status == 200, reply.body
    return [msgspec.json.decode(m["body"]) for m in reply.body["items"] if m["kind"] == "system"]


# -- public chats -----------------------------------------------------------------------------


async def test_anyone_joins_a_public_channel_once(api: Api):
    owner, reader = await api.register(), await api.register()
    news = await channel(api, owner, visibility="public")

    reply = await api.post(f"{CHATS}/{news}/join", token=reader.access_token)
    assert reply.status == 201 and reply.body["status"] == "joined", reply.body
    chat = reply.body["chat"]
    assert chat["id"] == news and chat["my_role"]["kind"] == "member" and chat["visibility"] == "public"
    assert await member_ids(api, owner, news) == {owner.user_id, reader.user_id}
    # A channel's subscribers do not see each other come: no system message (its staff hears the
    # join as an event, see tests/test_channel_privacy.py).
    assert not [a for a in await system_actions(api, owner, news) if a["action"] == "member_joined"]

    again = await api.post(f"{CHATS}/{news}/join", token=reader.access_token)
    assert again.status == 200 and again.body["status"] == "member", again.body
    assert await member_ids(api, owner, news) == {owner.user_id, reader.user_id}


async def test_a_private_chat_cannot_be_joined_without_a_link(api: Api):
    owner, stranger = await api.register(), await api.register()
    private = await channel(api, owner)
    group = await plain_group(api, owner)
    for chat_id in (private, group, "00000000-0000-7000-8000-000000000000", "not-an-id"):
        reply = await api.post(f"{CHATS}/{chat_id}/join", token=stranger.access_token)
        assert reply.status == 404 and reply.code == "not_found", reply.body
    assert await member_ids(api, owner, private) == {owner.user_id}


async def test_visibility_is_set_at_creation_and_by_edit_info(api: Api):
    owner, member, stranger = await api.register(), await api.register(), await api.register()
    group = await plain_group(api, owner, member)
    reply = await api.patch(f"{CHATS}/{group}", json={"visibility": "public"}, token=member.access_token)
    assert reply.status == 403, reply.body  # members lack edit_info
    reply = await api.patch(f"{CHATS}/{group}", json={"visibility": "public"}, token=owner.access_token)
    assert reply.status == 200 and reply.body["visibility"] == "public", reply.body
    assert {"action": "visibility_changed", "visibility": "public"} in await system_actions(api, member, group)
    assert (await api.post(f"{CHATS}/{group}/join", token=stranger.access_token)).status == 201

    reply = await api.patch(f"{CHATS}/{group}", json={"visibility": "private"}, token=owner.access_token)
    assert reply.status == 200 and reply.body["visibility"] == "private"
    late = await api.register()
    assert (await api.post(f"{CHATS}/{group}/join", token=late.access_token)).status == 404

    # Nobody can make an encrypted chat public: anyone could join it and read along.
    encrypted = await api.post(
        CHATS, json={"type": "group", "title": "e2e", "visibility": "public"}, token=owner.access_token
    )
    assert encrypted.status == 422 and encrypted.body["field"] == "visibility", encrypted.body
    e2e = (await api.post(CHATS, json={"type": "group", "title": "e2e"}, token=owner.access_token)).body
    assert e2e["visibility"] == "private"
    reply = await api.patch(f"{CHATS}/{e2e['id']}", json={"visibility": "public"}, token=owner.access_token)
    assert reply.status == 422, reply.body
    reply = await api.patch(f"{CHATS}/{group}", json={"visibility": "secret"}, token=owner.access_token)
    assert reply.status == 422, reply.body


# -- invite links -----------------------------------------------------------------------------


async def test_a_link_lets_people_into_a_private_channel_and_a_group(api: Api):
    owner, alice, bob = await api.register(), await api.register(), await api.register()
    for chat_id, is_channel in ((await channel(api, owner), True), (await plain_group(api, owner), False)):
        link = await invite(api, owner, chat_id, name="for friends")
        assert link["usable"] and link["uses"] == 0 and link["name"] == "for friends" and len(link["code"]) >= 16

        preview = await api.post(f"{INVITES}/preview", json={"code": link["code"]}, token=alice.access_token)
        assert preview.status == 200, preview.body
        assert preview.body["chat"]["id"] == chat_id and preview.body["chat"]["joined"] is False
        assert preview.body["chat"]["member_count"] == 1 and preview.body["requires_approval"] is False

        reply = await join(api, alice, link["code"])
        assert reply.status == 201 and reply.body["status"] == "joined", reply.body
        assert reply.body["chat"]["my_role"]["kind"] == "member"
        again = await join(api, alice, link["code"])  # joining twice: nothing changes, no use counted
        assert again.status == 200 and again.body["status"] == "member"
        assert (await join(api, bob, link["code"])).status == 201

        listed = await api.get(f"{CHATS}/{chat_id}/invites", token=owner.access_token)
        assert listed.status == 200 and [i["uses"] for i in listed.body["items"]] == [2], listed.body
        actions = [a for a in await system_actions(api, owner, chat_id) if a["action"] == "member_joined"]
        assert actions == [
            {"action": "member_joined", "user_id": user.user_id, "via": "invite", "invite_id": link["id"]}
            for user in (alice, bob)
            if not is_channel  # a channel's subscribers do not see each other come
        ]


async def test_a_revoked_expired_or_used_up_link_lets_nobody_in(server: Server):
    api = server.api
    owner, first, late = await api.register(), await api.register(), await api.register()
    chat_id = await channel(api, owner)
    once = await invite(api, owner, chat_id, max_uses=1)
    soon = await invite(api, owner, chat_id, expires_in=60)
    revoked = await invite(api, owner, chat_id)
    assert (await join(api, first, once["code"])).status == 201
    reply = await api.delete(f"{CHATS}/{chat_id}/invites/{revoked['id']}", token=owner.access_token)
    assert reply.status == 204, reply.body
    assert (await api.delete(f"{CHATS}/{chat_id}/invites/{revoked['id']}", token=owner.access_token)).status == 204
    server.clock.advance(61)
    try:
        for link, reason in [(once, "used_up"), (soon, "expired"), (revoked, "revoked"), ({"code": "nope"}, "unknown")]:
            for call in (
                join(api, late, link["code"]),
                api.post(f"{INVITES}/preview", json={"code": link["code"]}, token=late.access_token),
            ):
                reply = await call
                assert reply.status == 403 and reply.code == "invalid_invite", reply.body
                assert reply.body["reason"] == reason, reply.body
        listed = (await api.get(f"{CHATS}/{chat_id}/invites", token=owner.access_token)).body["items"]
        assert {i["id"]: i["usable"] for i in listed} == {once["id"]: False, soon["id"]: False, revoked["id"]: False}
        assert next(i for i in listed if i["id"] == revoked["id"])["revoked_at"] is not None
    finally:
        server.clock.advance(-61)
    assert await member_ids(api, owner, chat_id) == {owner.user_id, first.user_id}


async def test_a_link_with_one_use_lets_one_of_many_in(api: Api):
    owner = await api.register()
    people = [await api.register() for _ in range(6)]
    chat_id = await channel(api, owner)
    link = await invite(api, owner, chat_id, max_uses=1)
    replies = await asyncio.gather(*(join(api, who, link["code"]) for who in people))
    assert sorted(r.status for r in replies) == [201] + [403] * 5, [r.body for r in replies]
    assert len(await member_ids(api, owner, chat_id)) == 2


async def test_one_user_joining_twice_at_once_uses_the_link_once(api: Api):
    owner, eager = await api.register(), await api.register()
    chat_id = await plain_group(api, owner)  # a group: its timeline says who joined
    link = await invite(api, owner, chat_id, max_uses=2)
    replies = await asyncio.gather(*(join(api, eager, link["code"]) for _ in range(4)))
    statuses = sorted(str(r.body.get("status", r.body)) for r in replies)
    assert statuses == ["joined", "member", "member", "member"], statuses
    listed = (await api.get(f"{CHATS}/{chat_id}/invites", token=owner.access_token)).body["items"]
    assert listed[0]["uses"] == 1
    joins = [a for a in await system_actions(api, owner, chat_id) if a["action"] == "member_joined"]
    assert len(joins) == 1


async def test_who_may_make_links(api: Api):
    owner, admin, member, custom = [await api.register() for _ in range(4)]
    group = await plain_group(api, owner, admin, member, custom)
    roles = {r["kind"]: r for r in (await api.get(f"{CHATS}/{group}/roles", token=owner.access_token)).body["roles"]}
    assert "invite_users" in roles["admin"]["permissions"] and "invite_users" not in roles["member"]["permissions"]
    await api.patch(
        f"{CHATS}/{group}/members/{admin.user_id}", json={"role_id": roles["admin"]["id"]}, token=owner.access_token
    )
    role = await api.post(
        f"{CHATS}/{group}/roles", json={"name": "doorman", "permissions": ["invite_users"]}, token=owner.access_token
    )
    assert role.status == 201, role.body
    await api.patch(
        f"{CHATS}/{group}/members/{custom.user_id}", json={"role_id": role.body["id"]}, token=owner.access_token
    )

    for who in (owner, admin, custom):
        await invite(api, who, group)
    for path in ("invites", "join-requests"):
        reply = await api.get(f"{CHATS}/{group}/{path}", token=member.access_token)
        assert reply.status == 403 and reply.code == "forbidden", reply.body
    reply = await api.post(f"{CHATS}/{group}/invites", json={}, token=member.access_token)
    assert reply.status == 403 and reply.code == "forbidden", reply.body
    links = (await api.get(f"{CHATS}/{group}/invites", token=admin.access_token)).body["items"]
    reply = await api.delete(f"{CHATS}/{group}/invites/{links[0]['id']}", token=member.access_token)
    assert reply.status == 403, reply.body

    stranger = await api.register()
    assert (await api.get(f"{CHATS}/{group}/invites", token=stranger.access_token)).status == 404
    direct = (
        await api.post(CHATS, json={"type": "direct", "member_ids": [member.user_id]}, token=owner.access_token)
    ).body
    reply = await api.post(f"{CHATS}/{direct['id']}/invites", json={}, token=owner.access_token)
    assert reply.status == 403, reply.body


async def test_bad_link_settings_are_refused(api: Api):
    owner = await api.register()
    chat_id = await channel(api, owner)
    for body in ({"max_uses": 0}, {"expires_in": 1}, {"expires_in": -5}, {"name": "x" * 65}, {"code": "mine"}):
        reply = await api.post(f"{CHATS}/{chat_id}/invites", json=body, token=owner.access_token)
        assert reply.status == 422, (body, reply.body)
    for body in ({}, {"code": ""}, {"code": "x" * 65}, {"code": 5}):
        assert (await api.post(f"{INVITES}/join", json=body, token=owner.access_token)).status == 422, body
    reply = await api.delete(
        f"{CHATS}/{chat_id}/invites/00000000-0000-7000-8000-000000000000", token=owner.access_token
    )
    assert reply.status == 404, reply.body


# -- join requests ----------------------------------------------------------------------------


async def test_a_link_that_needs_approval_makes_a_request(server: Server):
    api = server.api
    owner, admin, alice, bob = [await api.register() for _ in range(4)]
    group = await plain_group(api, owner, admin)
    admin_role = next(
        r["id"]
        for r in (await api.get(f"{CHATS}/{group}/roles", token=owner.access_token)).body["roles"]
        if r["kind"] == "admin"
    )
    await api.patch(f"{CHATS}/{group}/members/{admin.user_id}", json={"role_id": admin_role}, token=owner.access_token)
    link = await invite(api, owner, group, requires_approval=True)
    admin_socket = await Socket.connect(server.url, api.session, admin.access_token)
    alice_socket = await Socket.connect(server.url, api.session, alice.access_token)
    try:
        preview = await api.post(f"{INVITES}/preview", json={"code": link["code"]}, token=alice.access_token)
        assert preview.body["requires_approval"] is True and preview.body["requested"] is False

        reply = await join(api, alice, link["code"])
        assert reply.status == 202 and reply.body["status"] == "requested", reply.body
        assert reply.body["request"]["user_id"] == alice.user_id and reply.body["chat"] is None
        assert (await join(api, alice, link["code"])).status == 202  # asking twice: one request
        assert (await join(api, bob, link["code"])).status == 202
        event = await admin_socket.until(lambda f: f["type"] == "chat.join_request.new")
        assert event["chat_id"] == group and event["request"]["username"] == alice.username

        assert await member_ids(api, owner, group) == {owner.user_id, admin.user_id}
        assert (await api.get(f"{CHATS}/{group}", token=alice.access_token)).status == 404
        listed = await api.get(f"{CHATS}/{group}/join-requests", params={"limit": "1"}, token=admin.access_token)
        assert [r["user_id"] for r in listed.body["items"]] == [alice.user_id], listed.body
        more = await api.get(
            f"{CHATS}/{group}/join-requests", params={"after": listed.body["next_cursor"]}, token=admin.access_token
        )
        assert [r["user_id"] for r in more.body["items"]] == [bob.user_id] and more.body["next_cursor"] is None

        reply = await api.post(f"{CHATS}/{group}/join-requests/{alice.user_id}/approve", token=admin.access_token)
        assert reply.status == 204, reply.body
        added = await alice_socket.until(lambda f: f["type"] == "chat.member.added")
        assert added["chat"]["id"] == group and added["user_ids"] == [alice.user_id]
        resolved = await alice_socket.until(lambda f: f["type"] == "chat.join_request.resolved")
        assert resolved["approved"] is True
        assert alice.user_id in await member_ids(api, owner, group)
        assert {
            "action": "member_joined",
            "user_id": alice.user_id,
            "via": "request",
            "approved_by": admin.user_id,
        } in (await system_actions(api, owner, group))

        reply = await api.delete(f"{CHATS}/{group}/join-requests/{bob.user_id}", token=owner.access_token)
        assert reply.status == 204, reply.body
        assert bob.user_id not in await member_ids(api, owner, group)
        assert (await api.get(f"{CHATS}/{group}/join-requests", token=owner.access_token)).body["items"] == []
        for decided in (alice, bob):
            reply = await api.post(f"{CHATS}/{group}/join-requests/{decided.user_id}/approve", token=owner.access_token)
            assert reply.status == 404, reply.body
        listed = (await api.get(f"{CHATS}/{group}/invites", token=owner.access_token)).body["items"]
        assert listed[0]["uses"] == 1  # the approved request

        # Bob asks again, then thinks better of it.
        assert (await join(api, bob, link["code"])).status == 202
        assert (await api.delete(f"{CHATS}/{group}/join-requests/me", token=bob.access_token)).status == 204
        assert (await api.delete(f"{CHATS}/{group}/join-requests/me", token=bob.access_token)).status == 404
        assert (await api.get(f"{CHATS}/{group}/join-requests", token=owner.access_token)).body["items"] == []
    finally:
        await admin_socket.close()
        await alice_socket.close()


# -- blocks -----------------------------------------------------------------------------------


async def test_whom_the_owner_admins_or_link_maker_block_cannot_join(api: Api):
    owner, admin, member, pest, other = [await api.register() for _ in range(5)]
    news = await channel(api, owner, admin, member, visibility="public")
    private = await channel(api, owner, admin, member)
    for chat_id in (news, private):
        await make_admin(api, owner, chat_id, admin)
    link = await invite(api, admin, private)

    # An ordinary member's block keeps no one out.
    await api.post("/api/v1/users/me/block", json={"user_id": other.user_id}, token=member.access_token)
    assert (await api.post(f"{CHATS}/{news}/join", token=other.access_token)).status == 201
    assert (await join(api, other, link["code"])).status == 201

    for blocker in (owner, admin):
        await api.post("/api/v1/users/me/block", json={"user_id": pest.user_id}, token=blocker.access_token)
        reply = await api.post(f"{CHATS}/{news}/join", token=pest.access_token)
        assert reply.status == 403 and reply.code == "blocked", reply.body
        for path in ("join", "preview"):
            reply = await api.post(f"{INVITES}/{path}", json={"code": link["code"]}, token=pest.access_token)
            assert reply.status == 403 and reply.code == "blocked", reply.body
        await api.delete(f"/api/v1/users/me/block/{pest.user_id}", token=blocker.access_token)
    assert (await join(api, pest, link["code"])).status == 201


async def test_a_request_from_someone_blocked_since_is_not_approved(api: Api):
    owner, pest = await api.register(), await api.register()
    chat_id = await channel(api, owner)
    link = await invite(api, owner, chat_id, requires_approval=True)
    assert (await join(api, pest, link["code"])).status == 202
    await api.post("/api/v1/users/me/block", json={"user_id": pest.user_id}, token=owner.access_token)
    reply = await api.post(f"{CHATS}/{chat_id}/join-requests/{pest.user_id}/approve", token=owner.access_token)
    assert reply.status == 403 and reply.code == "blocked", reply.body
    assert await member_ids(api, owner, chat_id) == {owner.user_id}


async def test_a_public_chats_avatar_is_seen_by_those_who_may_join(api: Api):
    owner, stranger = await api.register(), await api.register()
    public = await channel(api, owner, visibility="public")
    private = await channel(api, owner)
    avatars = {}
    for chat_id in (public, private):
        uploaded = await api.upload(owner, png_bytes(color=(10, 20, 30)) + os.urandom(8), purpose="avatar")
        assert uploaded.status == 201, uploaded.body
        await processed(api, owner, uploaded.body["id"])
        reply = await api.patch(
            f"{CHATS}/{chat_id}", json={"avatar_media_id": uploaded.body["id"]}, token=owner.access_token
        )
        assert reply.status == 200, reply.body
        avatars[chat_id] = uploaded.body["id"]
    seen = await api.get(f"/api/v1/media/download/{avatars[public]}", token=stranger.access_token)
    assert seen.status == 200, seen.body
    hidden = await api.get(f"/api/v1/media/download/{avatars[private]}", token=stranger.access_token)
    assert hidden.status == 404, hidden.body
