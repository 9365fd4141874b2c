"""Profiles, contacts and blocks."""

from __future__ import annotations

import uuid

from tests.conftest import Api, png_bytes


async def test_profiles_are_readable_and_only_mine_is_writable(api: Api):
    alice = await api.register()
    bob = await api.register()
    seen = await api.get(f"/api/v1/users/{alice.user_id}", token=bob.access_token)
    assert seen.status == 200 and seen.body["username"] == alice.username
    by_name = await api.get(f"/api/v1/users/by-username/{alice.username.upper()}", token=bob.access_token)
    assert by_name.status == 200 and by_name.body["id"] == alice.user_id

    media_id = (await api.upload(alice, png_bytes(), purpose="avatar")).body["id"]
    mine = await api.patch(
        f"/api/v1/users/{alice.user_id}",
        json={"display_name": " Alice ", "bio": "hi\nthere", "avatar_media_id": media_id},
        token=alice.access_token,
    )
    assert mine.status == 200
    assert (mine.body["display_name"], mine.body["bio"], mine.body["avatar_media_id"]) == (
        "Alice",
        "hi\nthere",
        media_id,
    )
    partial = await api.patch("/api/v1/users/me", json={"bio": "changed"}, token=alice.access_token)
    assert partial.body["display_name"] == "Alice" and partial.body["bio"] == "changed"
    cleared = await api.patch("/api/v1/users/me", json={"avatar_media_id": None}, token=alice.access_token)
    assert cleared.body["avatar_media_id"] is None

    theirs = await api.patch(f"/api/v1/users/{alice.user_id}", json={"bio": "pwned"}, token=bob.access_token)
    assert theirs.status == 403 and theirs.code == "forbidden"
    assert (await api.get("/api/v1/users/me", token=alice.access_token)).body["bio"] == "changed"


async def test_profile_validation(api: Api):
    alice = await api.register()
    for body in [
        {"display_name": "x" * 65},
        {"bio": "x" * 501},
        {"display_name": None},
        {"avatar_media_id": "not-a-uuid"},
        {"display_name": "bell\x07"},
        {"username": "renamed"},
    ]:
        reply = await api.patch("/api/v1/users/me", json=body, token=alice.access_token)
        assert reply.status == 422, (body, reply.body)


async def test_unknown_user_is_404(api: Api):
    alice = await api.register()
    for path in [
        f"/api/v1/users/{uuid.uuid4()}",
        "/api/v1/users/not-an-id",
        "/api/v1/users/by-username/nobody_here",
    ]:
        reply = await api.get(path, token=alice.access_token)
        assert reply.status == 404 and reply.code == "not_found"


async def test_users_endpoints_need_a_token(api: Api):
    alice = await api.register()
    for method, path in [
        ("GET", f"/api/v1/users/{alice.user_id}"),
        ("PATCH", f"/api/v1/users/{alice.user_id}"),
        ("GET", f"/api/v1/users/{alice.user_id}/contacts"),
        ("GET", "/api/v1/devices"),
    ]:
        reply = await api.request(method, path, json={})
        assert reply.status == 401, (method, path)


async def test_contacts_add_list_paginate_remove(api: Api):
    me = await api.register()
    friends = [await api.register() for _ in range(5)]
    for friend in friends:
        added = await api.post(
            f"/api/v1/users/{me.user_id}/contacts", json={"user_id": friend.user_id}, token=me.access_token
        )
        assert added.status == 201 and added.body["user"]["id"] == friend.user_id
    # adding twice is harmless
    again = await api.post("/api/v1/users/me/contacts", json={"user_id": friends[0].user_id}, token=me.access_token)
    assert again.status == 201

    seen, cursor = [], None
    while True:
        params = {"limit": "2", **({"after": cursor} if cursor else {})}
        page = await api.get("/api/v1/users/me/contacts", params=params, token=me.access_token)
        assert page.status == 200
        seen += [item["user"]["id"] for item in page.body["items"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(f.user_id for f in friends) and len(seen) == 5

    gone = await api.delete(f"/api/v1/users/me/contacts/{friends[0].user_id}", token=me.access_token)
    assert gone.status == 204
    missing = await api.delete(f"/api/v1/users/me/contacts/{friends[0].user_id}", token=me.access_token)
    assert missing.status == 404
    page = await api.get("/api/v1/users/me/contacts", token=me.access_token)
    assert len(page.body["items"]) == 4


async def test_contacts_of_others_are_private(api: Api):
    alice = await api.register()
    bob = await api.register()
    for reply in [
        await api.get(f"/api/v1/users/{bob.user_id}/contacts", token=alice.access_token),
        await api.post(
            f"/api/v1/users/{bob.user_id}/contacts", json={"user_id": alice.user_id}, token=alice.access_token
        ),
        await api.delete(f"/api/v1/users/{bob.user_id}/contacts/{alice.user_id}", token=alice.access_token),
        await api.get(f"/api/v1/users/{bob.user_id}/blocks", token=alice.access_token),
        await api.post(f"/api/v1/users/{bob.user_id}/block", json={"user_id": alice.user_id}, token=alice.access_token),
    ]:
        assert reply.status == 403


async def test_contact_must_exist_and_not_be_me(api: Api):
    me = await api.register()
    unknown = await api.post("/api/v1/users/me/contacts", json={"user_id": str(uuid.uuid4())}, token=me.access_token)
    assert unknown.status == 404
    myself = await api.post("/api/v1/users/me/contacts", json={"user_id": me.user_id}, token=me.access_token)
    assert myself.status == 422


async def test_block_and_unblock(api: Api):
    me = await api.register()
    pest = await api.register()
    blocked = await api.post("/api/v1/users/me/block", json={"user_id": pest.user_id}, token=me.access_token)
    assert blocked.status == 201 and blocked.body["user_id"] == pest.user_id
    listed = await api.get("/api/v1/users/me/blocks", token=me.access_token)
    assert [b["user_id"] for b in listed.body["items"]] == [pest.user_id]
    assert (await api.post("/api/v1/users/me/block", json={"user_id": me.user_id}, token=me.access_token)).status == 422
    assert (await api.delete(f"/api/v1/users/me/block/{pest.user_id}", token=me.access_token)).status == 204
    assert (await api.delete(f"/api/v1/users/me/block/{pest.user_id}", token=me.access_token)).status == 404
    assert (await api.get("/api/v1/users/me/blocks", token=me.access_token)).body["items"] == []


async def test_pagination_parameters_are_validated(api: Api):
    me = await api.register()
    for params in [{"limit": "0"}, {"limit": "201"}, {"limit": "abc"}, {"after": "nope"}, {"sort": "x"}]:
        reply = await api.get("/api/v1/users/me/contacts", params=params, token=me.access_token)
        assert reply.status == 422, params
