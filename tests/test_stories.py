"""Stories: every audience, enforced on every read (feed, story, file, signed URL, view); views;
expiry by the durable job scheduler, driven by the clock; events; bad input is a clear 4xx."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from sup.app import SCHEDULER
from sup.transport.services import SERVICES
from tests.conftest import Account, Api, Reply, Server, ServerFactory, Socket, plain_group, png_bytes
from tests.packs import processed

STORIES = "/api/v1/stories"
LISTS = f"{STORIES}/lists"


async def photo(api: Api, who: Account, color: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A processed photo of mine, as a story takes it."""
    reply = await api.upload(who, png_bytes(40, 30, color))
    assert reply.status == 201, reply.body
    assert (await processed(api, who, reply.body["id"]))["status"] == "ready"
    return reply.body["id"]


async def post(api: Api, who: Account, media_id: str, audience: str, **extra: Any) -> Reply:
    return await api.post(STORIES, json={"media_id": media_id, "audience": audience, **extra}, token=who.access_token)


async def posted(api: Api, who: Account, audience: str, color: tuple[int, int, int] = (1, 2, 3), **extra: Any) -> dict:
    reply = await post(api, who, await photo(api, who, color), audience, **extra)
    assert reply.status == 201, reply.body
    return reply.body


async def contact(api: Api, who: Account, *others: Account) -> None:
    for other in others:
        reply = await api.post("/api/v1/users/me/contacts", json={"user_id": other.user_id}, token=who.access_token)
        assert reply.status == 201, reply.body


async def feed_ids(api: Api, who: Account) -> set[str]:
    reply = await api.get(STORIES, token=who.access_token)
    assert reply.status == 200, reply.body
    return {story["id"] for group in reply.body["authors"] for story in group["stories"]}


async def fetch_file(api: Api, who: Account | None, media_id: str, url: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {who.access_token}"} if who is not None else {}
    async with api.session.get(url or f"{api.base_url}/api/v1/media/download/{media_id}", headers=headers) as answer:
        await answer.read()
        return answer.status


async def test_each_audience_sees_its_stories_and_no_one_else_does(server: Server):
    api = server.api
    alice, bob, carol, dave, erin, frank, gina = [await api.register() for _ in range(7)]
    await plain_group(api, alice, dave, carol)  # dave and carol share a group with alice
    channel = await api.post(
        "/api/v1/chats",
        json={"type": "channel", "title": "news", "member_ids": [frank.user_id]},
        token=alice.access_token,
    )
    assert channel.status == 201  # frank only subscribes to alice's channel: that is not sharing a chat
    await contact(api, alice, bob, carol, gina)
    assert (
        await api.post(f"/api/v1/users/{alice.user_id}/block", json={"user_id": gina.user_id}, token=alice.access_token)
    ).status == 201
    close = await api.patch(f"{LISTS}/close-friends", json={"user_ids": [bob.user_id]}, token=alice.access_token)
    assert close.status == 200 and [m["user"]["id"] for m in close.body["members"]] == [bob.user_id]
    leave_out = await api.post(LISTS, json={"name": "not carol", "user_ids": [carol.user_id]}, token=alice.access_token)
    assert leave_out.status == 201, leave_out.body

    chats = await posted(api, alice, "chats", (10, 0, 0), caption="for my chats")
    contacts = await posted(api, alice, "contacts", (20, 0, 0))
    friends = await posted(api, alice, "close_friends", (30, 0, 0))
    most = await posted(api, alice, "contacts_except", (40, 0, 0), list_id=leave_out.body["id"])
    assert chats["caption"] == "for my chats" and chats["audience"] == "chats" and chats["view_count"] == 0
    assert most["list_id"] == leave_out.body["id"] and friends["list_id"] == close.body["id"]
    expected = [
        (alice, {chats["id"], contacts["id"], friends["id"], most["id"]}),
        (bob, {contacts["id"], friends["id"], most["id"]}),
        (carol, {chats["id"], contacts["id"]}),
        (dave, {chats["id"]}),
        (erin, set()),
        (frank, set()),
        (gina, set()),  # a contact, but blocked
    ]
    everything = expected[0][1]
    for who, visible in expected:
        assert await feed_ids(api, who) == visible, who.username
        for story in (chats, contacts, friends, most):
            sees = story["id"] in visible
            one = await api.get(f"{STORIES}/{story['id']}", token=who.access_token)
            assert one.status == (200 if sees else 404), (who.username, story["audience"], one.body)
            if sees and who is not alice:
                assert "audience" not in one.body or one.body["audience"] is None  # the author's business
            assert await fetch_file(api, who, story["media_id"]) == (200 if sees else 404)
            signed = await api.get(f"/api/v1/media/{story['media_id']}/url", token=who.access_token)
            assert signed.status == (200 if sees else 404)
            if sees:
                assert signed.body["expires_at"] <= story["expires_at"] // 1000 + 1
                assert await fetch_file(api, None, story["media_id"], signed.body["url"]) == 200
            if who is not alice:
                viewed = await api.post(f"{STORIES}/{story['id']}/view", token=who.access_token)
                assert viewed.status == (204 if sees else 404)
    # A list is read live: carol put back, bob off the close friends.
    assert (await api.patch(f"{LISTS}/{leave_out.body['id']}", json={"user_ids": []}, token=alice.access_token)).status
    assert (await api.delete(f"{LISTS}/close-friends/members/{bob.user_id}", token=alice.access_token)).status == 204
    assert await feed_ids(api, carol) == {chats["id"], contacts["id"], most["id"]}
    assert await feed_ids(api, bob) == {contacts["id"], most["id"]}
    # Unblocking brings gina's contact stories back.
    assert (
        await api.delete(f"/api/v1/users/{alice.user_id}/block/{gina.user_id}", token=alice.access_token)
    ).status == 204
    assert await feed_ids(api, gina) == {contacts["id"], most["id"]}
    # And gina blocking alice hides them again: a block works both ways.
    assert (
        await api.post(f"/api/v1/users/{gina.user_id}/block", json={"user_id": alice.user_id}, token=gina.access_token)
    ).status == 201
    assert await feed_ids(api, gina) == set()
    assert everything == await feed_ids(api, alice)


async def test_the_feed_is_grouped_by_author_newest_first_with_what_i_have_seen(server: Server):
    api = server.api
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await contact(api, alice, carol)
    await contact(api, bob, carol)
    first = await posted(api, alice, "contacts", (1, 1, 1))
    second = await posted(api, bob, "contacts", (2, 2, 2))
    third = await posted(api, alice, "contacts", (3, 3, 3))
    assert (await api.post(f"{STORIES}/{first['id']}/view", token=carol.access_token)).status == 204
    assert (await api.post(f"{STORIES}/{first['id']}/view", token=carol.access_token)).status == 204  # once
    feed = (await api.get(STORIES, token=carol.access_token)).body
    assert [g["author"]["id"] for g in feed["authors"]] == [alice.user_id, bob.user_id]
    assert [s["id"] for s in feed["authors"][0]["stories"]] == [third["id"], first["id"]]
    assert [s["seen"] for s in feed["authors"][0]["stories"]] == [False, True]
    assert feed["authors"][0]["all_seen"] is False and feed["authors"][0]["author"]["username"] == alice.username
    assert feed["authors"][1]["stories"][0]["id"] == second["id"]
    assert feed["authors"][0]["stories"][0]["media"]["kind"] == "image"
    assert feed["authors"][0]["stories"][0]["media"]["width"] == 40
    # One author a page.
    page = await api.get(STORIES, token=carol.access_token, params={"limit": "1"})
    assert [g["author"]["id"] for g in page.body["authors"]] == [alice.user_id] and page.body["next_cursor"]
    rest = await api.get(STORIES, token=carol.access_token, params={"limit": "1", "before": page.body["next_cursor"]})
    assert [g["author"]["id"] for g in rest.body["authors"]] == [bob.user_id] and rest.body["next_cursor"] is None
    bad = await api.get(STORIES, token=carol.access_token, params={"before": "yesterday"})
    assert bad.status == 422


async def test_views_are_recorded_once_and_shown_to_the_author_only(server: Server):
    api = server.api
    alice, bob, carol, erin = [await api.register() for _ in range(4)]
    await contact(api, alice, bob, carol)
    story = await posted(api, alice, "contacts")
    for who in (bob, bob, carol, alice):  # the author's own look is not a view
        assert (await api.post(f"{STORIES}/{story['id']}/view", token=who.access_token)).status == 204
    views = await api.get(f"{STORIES}/{story['id']}/views", token=alice.access_token)
    assert views.status == 200 and views.body["count"] == 2
    assert [v["user"]["id"] for v in views.body["items"]] == [carol.user_id, bob.user_id]
    assert all(v["viewed_at"] > 0 for v in views.body["items"])
    first = await api.get(f"{STORIES}/{story['id']}/views", token=alice.access_token, params={"limit": "1"})
    more = await api.get(
        f"{STORIES}/{story['id']}/views",
        token=alice.access_token,
        params={"limit": "1", "before": first.body["next_cursor"]},
    )
    assert [v["user"]["id"] for v in first.body["items"] + more.body["items"]] == [carol.user_id, bob.user_id]
    assert (await api.get(f"{STORIES}/{story['id']}/views", token=bob.access_token)).status == 403
    assert (await api.get(f"{STORIES}/{story['id']}/views", token=erin.access_token)).status == 404
    mine = await api.get(f"{STORIES}/{story['id']}", token=alice.access_token)
    assert mine.body["view_count"] == 2 and mine.body["seen"] is True


async def test_events_reach_the_audience_and_the_authors_devices(server: Server):
    api = server.api
    alice, bob, erin = await api.register(), await api.register(), await api.register()
    alice_phone = await api.new_device(alice)
    await contact(api, alice, bob)
    sockets = {
        name: await Socket.connect(server.url, api.session, who.access_token)
        for name, who in (("bob", bob), ("erin", erin), ("phone", alice_phone))
    }
    try:
        story = await posted(api, alice, "contacts")
        [new] = await sockets["bob"].events(1, "story.new")
        assert new["story"]["id"] == story["id"] and new["author"]["id"] == alice.user_id
        assert new["story"].get("audience") is None
        [own] = await sockets["phone"].events(1, "story.new")
        assert own["story"]["audience"] == "contacts"
        assert (await api.delete(f"{STORIES}/{story['id']}", token=alice.access_token)).status == 204
        [gone] = await sockets["bob"].events(1, "story.deleted")
        assert gone["story_id"] == story["id"] and gone["author_id"] == alice.user_id
        await sockets["phone"].events(1, "story.deleted")
        # erin, in no audience, heard nothing: her first event is the message sent to her afterwards.
        chat = await plain_group(api, erin, title="later")
        [first] = await sockets["erin"].events(1)
        assert first["type"] == "chat.created" and first["chat"]["id"] == chat
        assert (await api.get(f"{STORIES}/{story['id']}", token=bob.access_token)).status == 404
        assert await fetch_file(api, bob, story["media_id"]) == 404
        assert (await api.get(f"/api/v1/media/{story['media_id']}", token=alice.access_token)).status == 404
    finally:
        for sock in sockets.values():
            await sock.close()


def sharing_files(server: Server) -> dict[str, str]:
    """Settings for another server on this module's database: the jobs table is shared, so any
    server may process an upload, and each must find its bytes."""
    return {"SUP_BLOBS_URL": f"file://{server.config.data_dir.resolve() / 'blobs'}"}


@pytest.fixture(scope="module")
async def brief(server_factory: ServerFactory, server: Server) -> Server:
    """Stories that live six minutes: less than an access token, so a test moves the clock past
    a story's end and goes on asking with the same token."""
    return await server_factory(SUP_STORIES_LIFETIME_HOURS="0.1", **sharing_files(server))


async def test_expiry_removes_stories_views_and_unused_files(brief: Server):
    api = brief.api
    alice, bob = await api.register(), await api.register()
    await contact(api, alice, bob)
    lone = await posted(api, alice, "contacts", (5, 5, 5))
    shared_photo = await photo(api, alice, (6, 6, 6))
    channel = await api.post(
        "/api/v1/chats", json={"type": "channel", "title": "pics", "member_ids": []}, token=alice.access_token
    )
    sent = await api.post(
        "/api/v1/messages",
        json={"chat_id": channel.body["id"], "client_id": str(uuid.uuid4()), "kind": "media", "media_id": shared_photo},
        token=alice.access_token,
    )
    assert sent.status == 201
    shared = (await post(api, alice, shared_photo, "contacts")).body
    assert (await api.post(f"{STORIES}/{lone['id']}/view", token=bob.access_token)).status == 204
    signed = (await api.get(f"/api/v1/media/{lone['media_id']}/url", token=bob.access_token)).body

    brief.clock.advance(0.1 * 3600 + 30)  # past the stories' end; before the job has run
    assert await feed_ids(api, bob) == set()
    assert (await api.get(f"{STORIES}/{lone['id']}", token=bob.access_token)).status == 404
    viewing = await api.post(f"{STORIES}/{lone['id']}/view", token=bob.access_token)
    assert viewing.status == 404 and viewing.code == "not_found"
    assert (await api.get(f"{STORIES}/{lone['id']}/views", token=alice.access_token)).status == 404
    assert await fetch_file(api, bob, lone["media_id"]) == 404
    assert await fetch_file(api, None, lone["media_id"], signed["url"]) in (403, 404)  # the link ended with it

    # The periodic job, run by the scheduler once the clock says it is due.
    scheduler = brief.app[SCHEDULER]
    deadline = asyncio.get_running_loop().time() + 20
    while await brief.db.fetchval("SELECT COUNT(*) FROM stories WHERE author_id = $1", alice.user_id):
        assert asyncio.get_running_loop().time() < deadline, "the expiry job did not run"
        scheduler.wake()
        await asyncio.sleep(0.05)
    assert await brief.db.fetchval("SELECT COUNT(*) FROM story_views WHERE story_id = $1", lone["id"]) == 0
    assert (await api.get(f"/api/v1/media/{lone['media_id']}", token=alice.access_token)).status == 404
    assert (await api.get(f"/api/v1/media/{shared['media_id']}", token=alice.access_token)).status == 200  # in use
    # An expired story's file is gone for good: a new story cannot take it.
    again = await post(api, alice, lone["media_id"], "contacts")
    assert again.status == 422 and again.body["field"] == "media_id"


async def test_bad_input_gets_a_clear_4xx(server: Server):
    api = server.api
    alice, bob, stranger = await api.register(), await api.register(), await api.register()
    await contact(api, alice, bob)
    mine = await photo(api, alice)
    bobs = await photo(api, bob, (9, 9, 9))
    sealed = (await api.upload(alice, b"\x01" * 100, encrypted=True)).body["id"]
    text = (await api.upload(alice, b"just some notes")).body["id"]
    sticker = (await api.upload(alice, png_bytes(), purpose="sticker")).body["id"]
    bobs_list = (await api.post(LISTS, json={"name": "b", "user_ids": []}, token=bob.access_token)).body["id"]
    cases = [
        ({"media_id": bobs, "audience": "contacts"}, "media_id"),  # someone else's file
        ({"media_id": str(uuid.uuid4()), "audience": "contacts"}, "media_id"),  # no such file
        ({"media_id": sealed, "audience": "contacts"}, "media_id"),  # end-to-end encrypted
        ({"media_id": text, "audience": "contacts"}, "media_id"),  # neither photo nor video
        ({"media_id": sticker, "audience": "contacts"}, "media_id"),  # uploaded for a sticker
        ({"media_id": mine, "audience": "everyone"}, "audience"),
        ({"media_id": mine, "audience": "contacts_except"}, "list_id"),  # which list?
        ({"media_id": mine, "audience": "contacts", "list_id": bobs_list}, "list_id"),
        ({"media_id": mine, "audience": "contacts_except", "list_id": bobs_list}, "list_id"),  # bob's list
        ({"media_id": mine, "audience": "contacts", "caption": "x" * 3000}, "caption"),
        ({"media_id": mine, "audience": "contacts", "caption": "bell\x07"}, "caption"),
        ({"media_id": "../../etc/passwd", "audience": "contacts"}, "media_id"),
    ]
    for body, field in cases:
        reply = await api.post(STORIES, json=body, token=alice.access_token)
        assert reply.status == 422 and reply.body.get("field") == field, (body, reply.body)
    # Audience lists hold people I know, by id.
    for user_ids in ([stranger.user_id], [str(uuid.uuid4())], [alice.user_id], ["nobody"]):
        reply = await api.post(LISTS, json={"name": "x", "user_ids": user_ids}, token=alice.access_token)
        assert reply.status == 422, (user_ids, reply.body)
        reply = await api.patch(f"{LISTS}/close-friends", json={"user_ids": user_ids}, token=alice.access_token)
        assert reply.status == 422, (user_ids, reply.body)
    refused = await api.post(
        f"{LISTS}/close-friends/members", json={"user_ids": [bob.user_id, stranger.user_id]}, token=alice.access_token
    )
    assert refused.status == 422 and refused.body["user_ids"] == [stranger.user_id]
    assert (await api.post(LISTS, json={"name": "", "user_ids": []}, token=alice.access_token)).status == 422
    assert (await api.post(LISTS, json={"name": "n" * 10_000}, token=alice.access_token)).status == 422
    assert (await api.delete(f"{LISTS}/close-friends", token=alice.access_token)).status == 409
    assert (await api.patch(f"{LISTS}/close-friends", json={"name": "besties"}, token=alice.access_token)).status == 422
    assert (await api.get(f"{LISTS}/{bobs_list}", token=alice.access_token)).status == 404
    assert (
        await api.delete(f"{LISTS}/close-friends/members/{stranger.user_id}", token=alice.access_token)
    ).status == 404
    used = (await api.post(LISTS, json={"name": "u", "user_ids": [bob.user_id]}, token=alice.access_token)).body
    story = await posted(api, alice, "contacts_except", list_id=used["id"])
    assert (await api.delete(f"{LISTS}/{used['id']}", token=alice.access_token)).status == 409
    # Stories that are not mine, or not there.
    for path in (f"{STORIES}/{uuid.uuid4()}", f"{STORIES}/not-an-id"):
        assert (await api.get(path, token=alice.access_token)).status == 404
        assert (await api.post(f"{path}/view", token=alice.access_token)).status == 404
        assert (await api.delete(path, token=alice.access_token)).status == 404
    assert (await api.delete(f"{STORIES}/{story['id']}", token=bob.access_token)).status == 404
    assert (await api.delete(f"{STORIES}/{story['id']}", token=alice.access_token)).status == 204
    assert (await api.delete(f"{LISTS}/{used['id']}", token=alice.access_token)).status == 204
    lists = (await api.get(LISTS, token=alice.access_token)).body["lists"]
    assert lists[0]["kind"] == "close_friends" and used["id"] not in [x["id"] for x in lists]


async def test_a_story_limit_and_the_expiry_job_run_directly(server_factory: ServerFactory, server: Server):
    limited = await server_factory(SUP_STORIES_MAX_LIVE="2", **sharing_files(server))
    api = limited.api
    alice = await api.register()
    for color in ((1, 0, 0), (2, 0, 0)):
        await posted(api, alice, "chats", color)
    assert len(await feed_ids(api, alice)) == 2  # mine, though I share no chat with anyone
    over = await post(api, alice, await photo(api, alice, (3, 0, 0)), "chats")
    assert over.status == 409 and over.code == "conflict"
    hours = limited.config.stories.lifetime_hours
    limited.clock.advance(hours * 3600 + 1)
    try:
        await limited.app[SERVICES].stories.expire()
    finally:
        limited.clock.advance(-(hours * 3600 + 1))
    assert await limited.db.fetchval("SELECT COUNT(*) FROM stories") == 0
    assert (await post(api, alice, await photo(api, alice, (4, 0, 0)), "chats")).status == 201
