"""A channel's subscribers do not see each other: only those who manage members see the member
list; presence is not shared through a channel; read positions are one's own. Every answer
and event that could tell one subscriber about another is checked here; groups keep showing
their members to each other."""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from sup.db import migrations
from tests.conftest import Account, Api, Server, Socket, plain_group, say


async def channel_with_subscribers(api: Api) -> tuple[str, Account, Account, Account]:
    """A public channel: its owner, and two subscribers who joined by themselves."""
    owner, one, two = await api.register(), await api.register(), await api.register()
    reply = await api.post(
        "/api/v1/chats", json={"type": "channel", "title": "News", "visibility": "public"}, token=owner.access_token
    )
    assert reply.status == 201, reply.body
    chat = reply.body["id"]
    for subscriber in (one, two):
        joined = await api.post(f"/api/v1/chats/{chat}/join", token=subscriber.access_token)
        assert joined.status == 201, joined.body
    return chat, owner, one, two


async def frames_until_marker(sock: Socket, marker_body: str) -> list[dict[str, Any]]:
    """Every frame up to the `message.new` of the marker message, which comes after what is tested."""
    seen = []
    while True:
        frame = await sock.recv()
        seen.append(frame)
        if frame["type"] == "message.new" and frame["message"].get("body") == marker_body:
            return seen


def mentions(frames: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    """The frames that name this user anywhere."""
    return [f for f in frames if user_id in repr(f)]


async def test_only_those_who_manage_members_see_a_channels_member_list(api: Api):
    chat, owner, one, two = await channel_with_subscribers(api)
    await say(api, owner, chat, "first post")
    read = await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": 1}, token=two.access_token)
    assert read.status == 200, read.body

    mine = await api.get(f"/api/v1/chats/{chat}/members", token=one.access_token)
    assert mine.status == 200, mine.body
    assert [m["user_id"] for m in mine.body["items"]] == [one.user_id]
    assert mine.body["member_count"] == 3 and mine.body["next_cursor"] is None
    assert mine.body["items"][0]["role"]["kind"] == "member"
    # Paging past oneself finds no one else.
    after = await api.get(f"/api/v1/chats/{chat}/members", params={"after": one.user_id}, token=one.access_token)
    assert after.body["items"] == []

    everyone = await api.get(f"/api/v1/chats/{chat}/members", token=owner.access_token)
    listed = {m["user_id"]: m for m in everyone.body["items"]}
    assert set(listed) == {owner.user_id, one.user_id, two.user_id}
    # Even the owner does not see how far subscribers have read: read positions are one's own.
    assert listed[two.user_id]["last_read_seq"] is None and listed[one.user_id]["last_read_seq"] is None
    assert listed[owner.user_id]["last_read_seq"] is not None

    # An admin manages members, so sees them too.
    admin_role = next(
        r
        for r in (await api.get(f"/api/v1/chats/{chat}/roles", token=owner.access_token)).body["roles"]
        if r["kind"] == "admin"
    )
    promoted = await api.patch(
        f"/api/v1/chats/{chat}/members/{one.user_id}", json={"role_id": admin_role["id"]}, token=owner.access_token
    )
    assert promoted.status in (200, 204), promoted.body
    assert len((await api.get(f"/api/v1/chats/{chat}/members", token=one.access_token)).body["items"]) == 3
    assert len((await api.get(f"/api/v1/chats/{chat}/members", token=two.access_token)).body["items"]) == 1


async def test_a_groups_members_still_see_each_other(api: Api):
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    chat = await plain_group(api, alice, bob, carol)
    page = await api.get(f"/api/v1/chats/{chat}/members", token=bob.access_token)
    assert {m["user_id"] for m in page.body["items"]} == {alice.user_id, bob.user_id, carol.user_id}
    assert all(isinstance(m["last_read_seq"], int) for m in page.body["items"])
    assert page.body["member_count"] == 3


async def test_a_channels_timeline_does_not_say_who_joined_or_left(api: Api):
    chat, owner, one, two = await channel_with_subscribers(api)
    third = await api.register()
    added = await api.post(
        f"/api/v1/chats/{chat}/members", json={"user_ids": [third.user_id]}, token=owner.access_token
    )
    assert added.status == 200, added.body
    assert (await api.post(f"/api/v1/chats/{chat}/leave", token=two.access_token)).status in (200, 204)
    await say(api, owner, chat, "news")
    history = await api.get(f"/api/v1/messages/chat/{chat}", token=one.access_token)
    assert [m["kind"] for m in history.body["items"]] == ["text"], history.body
    for someone in (two, third):
        assert not mentions(history.body["items"], someone.user_id)


async def test_channel_events_do_not_tell_subscribers_about_each_other(server: Server):
    api = server.api
    chat, owner, one, two = await channel_with_subscribers(api)
    await say(api, owner, chat, "a post to react to")
    post = (await api.get(f"/api/v1/messages/chat/{chat}", token=one.access_token)).body["items"][-1]
    watcher = await Socket.connect(server.url, api.session, one.access_token)
    staff = await Socket.connect(server.url, api.session, owner.access_token)
    other = await Socket.connect(server.url, api.session, two.access_token)  # presence: two comes online

    newcomer = await api.register()
    assert (await api.post(f"/api/v1/chats/{chat}/join", token=newcomer.access_token)).status == 201
    assert (await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": 1}, token=two.access_token)).status == 200
    typing = await api.post(f"/api/v1/chats/{chat}/typing", json={"active": True}, token=two.access_token)
    assert typing.status in (200, 204), typing.body
    reacted = await api.post(f"/api/v1/messages/{post['id']}/reactions", json={"emoji": "👍"}, token=two.access_token)
    assert reacted.status == 200, reacted.body
    await api.new_device(two)  # a new device: key-change events go to those who share a chat
    assert (await api.post(f"/api/v1/chats/{chat}/leave", token=newcomer.access_token)).status in (200, 204)
    await other.close()  # presence: two goes offline
    await say(api, owner, chat, "marker")

    seen = await frames_until_marker(watcher, "marker")
    assert not mentions(seen, two.user_id), mentions(seen, two.user_id)
    assert not mentions(seen, newcomer.user_id), mentions(seen, newcomer.user_id)
    reaction = next(f for f in seen if f["type"] == "reaction.updated")
    assert reaction["count"] == 1 and reaction["user_id"] is None

    # Who manages members hears them come and go; nobody hears how far anyone else read.
    managed = await frames_until_marker(staff, "marker")
    kinds = [f["type"] for f in managed if newcomer.user_id in repr(f)]
    assert kinds == ["chat.member.added", "chat.member.removed"], kinds
    came = next(f for f in managed if f["type"] == "chat.member.added" and newcomer.user_id in f["user_ids"])
    assert came["via"] == "public"  # how they came: no system message says it in a channel
    assert not [f for f in managed if f["type"] in ("receipt.read", "presence", "typing", "keys.changed")]
    await watcher.close()
    await staff.close()

    # The reactor's own devices are told it was them.
    again = await Socket.connect(server.url, api.session, two.access_token, cursor=0)
    mine = await again.until(lambda f: f["type"] == "reaction.updated")
    assert mine["user_id"] == two.user_id
    await again.close()


async def test_presence_is_not_shared_through_a_channel(server: Server):
    api = server.api
    _chat, owner, one, two = await channel_with_subscribers(api)
    online = [await Socket.connect(server.url, api.session, who.access_token) for who in (owner, two)]
    for viewer, subject in [(one, two), (owner, two), (two, owner)]:
        status = await api.get(f"/api/v1/users/{subject.user_id}/presence", token=viewer.access_token)
        assert status.status == 200, status.body
        assert status.body == {"user_id": subject.user_id, "online": False, "last_seen_at": None}
    # Sharing a group as well, they see each other as before.
    await plain_group(api, one, two, title="friends")
    status = await api.get(f"/api/v1/users/{two.user_id}/presence", token=one.access_token)
    assert status.body["online"] is True, status.body
    for sock in online:
        await sock.close()


async def test_the_upgrade_takes_back_the_membership_notices_channels_had(server: Server):
    """Channels used to post who joined and left; migration 0013 deletes those notices (their
    actor with them) and leaves a group's, and the channel's other system messages, alone."""
    api = server.api
    chat, owner, one, two = await channel_with_subscribers(api)
    group = await plain_group(api, owner, one)
    notices = [
        (chat, two.user_id, {"action": "member_joined", "user_id": two.user_id, "via": "public"}),
        (chat, owner.user_id, {"action": "members_added", "user_ids": [one.user_id]}),
        (chat, owner.user_id, {"action": "title_changed", "title": "News"}),
        (group, owner.user_id, {"action": "members_added", "user_ids": [one.user_id]}),
    ]
    async with server.db.transaction() as tx:
        for chat_id, actor, action in notices:  # as the code before this change wrote them
            seq = await tx.fetchval(
                "UPDATE chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq", chat_id
            )
            await tx.execute(
                "INSERT INTO messages (id, chat_id, seq, sender_id, client_id, content_hash, kind, body, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'system', $7, $8)",
                str(uuid.uuid4()),
                chat_id,
                seq,
                actor,
                f"system:{uuid.uuid4()}",
                b"",
                msgspec.json.encode(action).decode(),
                server.clock.now_ms(),
            )
    assert [m.version for m in await migrations.migrate_down(server.db, steps=2)] == [14, 13]
    assert [m.version for m in await migrations.migrate_up(server.db, server.clock.now_ms())] == [13, 14]

    history = (await api.get(f"/api/v1/messages/chat/{chat}", token=one.access_token)).body["items"]
    assert [(m["deleted"], m["sender_id"], m["body"]) for m in history] == [
        (True, None, None),
        (True, None, None),
        (False, owner.user_id, '{"action":"title_changed","title":"News"}'),
    ]
    assert not mentions(history, two.user_id)
    kept = (await api.get(f"/api/v1/messages/chat/{group}", token=one.access_token)).body["items"]
    assert [(m["deleted"], m["sender_id"]) for m in kept] == [(False, owner.user_id)]
