"""Deleting an account (by its owner or an administrator) and exporting an account's data."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sup.app import SCHEDULER
from sup.db.emails import EmailStore
from sup.domain.exports import EXPORT_EVERY_HOURS, EXPORT_KEEP_HOURS
from sup.transport.services import SERVICES
from tests.conftest import Account, Api, Server, Socket, plain_group, say, send
from tests.test_2fa import enable_2fa
from tests.test_admin import make_admin

ADMIN = "/api/v1/admin"
EXPORTS = "/api/v1/account/exports"


@pytest.fixture(scope="module")
async def admin(server: Server) -> Account:
    return await make_admin(server)


async def verified_email(server: Server, who: Account) -> str:
    """Give the account a verified address, as the email flow (with SMTP) leaves one."""
    address = f"{who.username}@example.org"
    async with server.db.transaction() as tx:
        await EmailStore().set_verified(tx, who.user_id, address, address, server.clock.now_ms())
    return address


async def eventually(server: Server, check: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """The first truthy result of `check`, asked again while background jobs run (woken each time)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        server.app[SCHEDULER].wake()
        if result := await check():
            return result
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def history(api: Api, who: Account, chat_id: str) -> list[dict[str, Any]]:
    reply = await api.get(f"/api/v1/messages/chat/{chat_id}", token=who.access_token, params={"limit": "200"})
    assert reply.status == 200, reply.body
    return reply.body["items"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def direct_chat(api: Api, alice: Account, bob: Account) -> str:
    await api.publish_keys(alice, bob)
    made = await api.post(
        "/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token
    )
    assert made.status in (200, 201), made.body
    return made.body["id"]


async def sealed(api: Api, sender: Account, chat_id: str, to: Account, ciphertext: bytes) -> dict[str, Any]:
    sent = await api.post(
        "/api/v1/messages",
        json={
            "chat_id": chat_id,
            "client_id": str(uuid.uuid4()),
            "recipients": [{"device_id": to.device_id, "ciphertext": b64(ciphertext)}],
        },
        token=sender.access_token,
    )
    assert sent.status == 201, sent.body
    return sent.body


def blob_path(server: Server, key: str) -> Path:
    return Path(server.config.data_dir) / "blobs" / key[:2] / key[2:4] / key


async def released(server: Server, paths: list[Path]) -> None:
    """Wait until the blobs are deleted: released blobs go once the release delay has passed."""
    server.clock.advance(3600)
    try:
        await eventually(server, lambda: _none_exist(paths))
    finally:
        server.clock.advance(-3600)


async def _none_exist(paths: list[Path]) -> bool:
    return not any(p.exists() for p in paths)


# -- deletion -----------------------------------------------------------------------------------------


async def test_a_deleted_users_messages_are_tombstones_for_the_others(server: Server, admin: Account):
    api = server.api
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await api.post(f"/api/v1/users/{alice.user_id}/contacts", json={"user_id": bob.user_id}, token=alice.access_token)
    group = await plain_group(api, alice, bob, carol)
    photo = await api.upload(bob, os.urandom(3000), filename="bob.bin")
    said = [(await say(api, bob, group, f"bob says {i}")).body for i in range(3)]
    said.append(
        (
            await api.post(
                "/api/v1/messages",
                json={"chat_id": group, "client_id": "m", "kind": "media", "media_id": photo.body["id"]},
                token=bob.access_token,
            )
        ).body
    )
    mine = (await say(api, alice, group, "alice stays")).body
    for who in (bob, carol):
        reacted = await api.post(
            f"/api/v1/messages/{mine['id']}/reactions", json={"emoji": "👍"}, token=who.access_token
        )
        assert reacted.status == 200, reacted.body
    direct = await direct_chat(api, alice, bob)
    secret = await sealed(api, bob, direct, alice, b"sealed for alice")
    sock = await Socket.connect(server.url, api.session, alice.access_token, cursor=0)

    assert (await api.delete(f"{ADMIN}/users/{bob.user_id}", token=admin.access_token)).status == 204

    # At once: bob's devices are out, he is out of every chat, his profile is empty.
    assert (await api.get("/api/v1/users/me", token=bob.access_token)).code == "invalid_token"
    profile = (await api.get(f"/api/v1/users/{bob.user_id}", token=alice.access_token)).body
    assert profile["display_name"] == "Deleted account" and profile["bio"] == ""
    assert profile["username"] == f"deleted-{bob.user_id}"
    members = (await api.get(f"/api/v1/chats/{group}/members", token=alice.access_token)).body["items"]
    assert {m["user_id"] for m in members} == {alice.user_id, carol.user_id}
    assert (await api.get(f"/api/v1/users/{alice.user_id}/contacts", token=alice.access_token)).body["items"] == []
    assert (await api.login(bob)).code == "invalid_credentials"

    # Then the job: every message bob sent is a tombstone, for alice and carol alike.
    ids = {m["id"] for m in said} | {secret["id"]}

    async def all_gone() -> list[dict[str, Any]] | None:
        items = await history(api, carol, group) + await history(api, alice, direct)
        gone = [m for m in items if m["id"] in ids and m["deleted"]]
        return items if len(gone) == len(ids) else None

    items = await eventually(server, all_gone)
    for message in (m for m in items if m["id"] in ids):
        assert message["body"] is None and message["ciphertext"] is None and message["media_id"] is None
        assert message["sender_id"] == bob.user_id  # the row stays: every copy of the chat converges
    seqs = [m["seq"] for m in await history(api, alice, group)]
    assert seqs == list(range(1, len(seqs) + 1))  # no gaps
    [kept] = [m for m in await history(api, alice, group) if m["id"] == mine["id"]]
    assert kept["body"] == "alice stays"
    left = [m for m in await history(api, alice, group) if m["kind"] == "system"]
    assert msgspec.json.decode(left[-1]["body"]) == {"action": "member_left", "user_id": bob.user_id}

    # alice heard it all: bob's devices gone, bob out of both chats, each of his messages deleted.
    events = []
    while True:
        frame = await sock.until(lambda f: f.get("cursor") is not None)
        events.append(frame)
        deletions = sum(e["type"] == "message.deleted" for e in events)
        if deletions == len(ids) and any(e["type"] == "reaction.updated" and not e["added"] for e in events):
            break
    kinds = [e["type"] for e in events]
    assert "keys.changed" in kinds
    removed = {e["chat_id"] for e in events if e["type"] == "chat.member.removed" and e["user_id"] == bob.user_id}
    assert removed == {group, direct}
    deleted = {e["message_id"] for e in events if e["type"] == "message.deleted"}
    assert deleted == ids and all(e["for_everyone"] for e in events if e["type"] == "message.deleted")
    [withdrawn] = [e for e in events if e["type"] == "reaction.updated" and not e["added"]]  # bob's thumb, back
    assert withdrawn["user_id"] == bob.user_id and withdrawn["added"] is False and withdrawn["count"] == 1
    [kept] = [m for m in await history(api, alice, group) if m["id"] == mine["id"]]
    assert kept["reactions"] == [{"emoji": "👍", "count": 1, "me": False}]
    await sock.close()


async def test_a_deleted_users_files_are_gone_from_the_blob_store(server: Server, admin: Account):
    api = server.api
    alice, bob = await api.register(), await api.register()
    group = await plain_group(api, alice, bob)
    files = [(await api.upload(bob, os.urandom(2000 + i))).body for i in range(3)]
    await api.post(
        "/api/v1/messages",
        json={"chat_id": group, "client_id": "f", "kind": "media", "media_id": files[0]["id"]},
        token=bob.access_token,
    )
    started = await api.post("/api/v1/media/uploads", json={"size": 100}, token=bob.access_token)
    assert started.status == 201
    paths = [blob_path(server, f["sha256"]) for f in files]
    assert all(p.exists() for p in paths)

    assert (await api.delete(f"{ADMIN}/users/{bob.user_id}", token=admin.access_token)).status == 204

    async def files_gone() -> bool:
        detail = await api.get(f"{ADMIN}/users/{bob.user_id}", token=admin.access_token)
        return detail.body["storage"]["files"] == 0

    await eventually(server, files_gone)
    assert (await api.get(f"/api/v1/media/{files[0]['id']}", token=alice.access_token)).status == 404
    await released(server, paths)


async def test_deleting_my_own_account_needs_my_password_and_2fa(server: Server, admin: Account):
    api = server.api
    user, friend = await api.register(), await api.register()
    _, codes = await enable_2fa(server, user)
    await verified_email(server, user)
    path = "/api/v1/account/delete"
    wrong = await api.post(path, json={"password": "not my password"}, token=user.access_token)
    assert wrong.status == 401 and wrong.code == "invalid_credentials"
    no_code = await api.post(path, json={"password": user.password}, token=user.access_token)
    assert no_code.status == 401 and no_code.code == "totp_required"
    bad_code = await api.post(path, json={"password": user.password, "totp_code": "000000"}, token=user.access_token)
    assert bad_code.status == 401 and bad_code.code == "invalid_totp"
    assert (await api.get("/api/v1/users/me", token=user.access_token)).status == 200  # still there
    for body in ({}, {"password": ""}, {"password": user.password, "totp_code": "12"}, {"password": 1}):
        assert (await api.post(path, json=body, token=user.access_token)).status == 422, body

    gone = await api.post(path, json={"password": user.password, "recovery_code": codes[0]}, token=user.access_token)
    assert gone.status == 204, gone.body

    # A deleted account's token, password and username: nothing works; the name is free again.
    again = await api.post(path, json={"password": user.password}, token=user.access_token)
    assert again.status == 401 and again.code == "invalid_token"
    assert (await api.get(f"{EXPORTS}", token=user.access_token)).status == 401
    assert (await api.login(user)).code == "invalid_credentials"
    assert (await api.get(f"/api/v1/users/by-username/{user.username}", token=friend.access_token)).status == 404
    assert await server.db.fetchval("SELECT COUNT(*) FROM user_emails WHERE user_id = $1", user.user_id) == 0
    for q in ("Deleted account", user.user_id[:8]):
        found = await api.get("/api/v1/search/users", token=friend.access_token, params={"q": q})
        assert found.status == 200 and user.user_id not in {u["id"] for u in found.body["items"]}, q
    # Still shown where the account's messages are, but no one to add, block or chat with.
    shown = await api.get(f"/api/v1/users/{user.user_id}", token=friend.access_token)
    assert shown.status == 200 and shown.body["display_name"] == "Deleted account"
    for path, body in (
        (f"/api/v1/users/{friend.user_id}/contacts", {"user_id": user.user_id}),
        (f"/api/v1/users/{friend.user_id}/block", {"user_id": user.user_id}),
        ("/api/v1/chats", {"type": "direct", "member_ids": [user.user_id]}),
        (f"/api/v1/chats/{await plain_group(api, friend)}/members", {"user_ids": [user.user_id]}),
    ):
        reply = await api.post(path, json=body, token=friend.access_token)
        assert reply.status == 404, (path, reply.body)
    reborn = await api.register(user.username)
    assert reborn.user_id != user.user_id
    entries = (await api.get(f"{ADMIN}/audit", token=admin.access_token, params={"target_id": user.user_id})).body
    [entry] = entries["items"]
    assert entry["action"] == "user.deleted" and entry["actor_id"] == user.user_id
    assert entry["details"]["by"] == "self" and entry["details"]["username"] == user.username
    assert (await api.delete(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)).code == "conflict"


async def test_deleting_an_account_of_nothing_is_a_clear_404(server: Server, admin: Account):
    api = server.api
    for user_id in (str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000"):
        reply = await api.delete(f"{ADMIN}/users/{user_id}", token=admin.access_token)
        assert reply.status == 404 and reply.body["detail"] == "No such user."
    assert (await api.delete(f"{ADMIN}/users/bob", token=admin.access_token)).status == 404


async def test_a_group_owned_by_a_deleted_user_passes_on_or_goes(server: Server, admin: Account):
    api = server.api
    owner, member = await api.register(), await api.register()
    shared = await plain_group(api, owner, member)
    alone = await plain_group(api, owner, title="just me")
    assert (await api.delete(f"{ADMIN}/users/{owner.user_id}", token=admin.access_token)).status == 204
    chat = await api.get(f"/api/v1/chats/{shared}", token=member.access_token)
    assert chat.body["my_role"]["kind"] == "owner"
    stats = (await api.get(f"{ADMIN}/users/{owner.user_id}", token=admin.access_token)).body
    assert stats["chats"] == 0 and stats["devices"] == []
    assert alone not in {c["id"] for c in (await api.get("/api/v1/chats", token=member.access_token)).body["items"]}


# -- export -------------------------------------------------------------------------------------------


async def ready_export(server: Server, who: Account) -> dict[str, Any]:
    api = server.api
    started = await api.post(EXPORTS, token=who.access_token)
    assert started.status == 202, started.body
    assert started.body["state"] == "pending"

    async def done() -> dict[str, Any] | None:
        reply = await api.get(f"{EXPORTS}/{started.body['id']}", token=who.access_token)
        return reply.body if reply.body["state"] != "pending" else None

    export = await eventually(server, done)
    assert export["state"] == "ready", export
    return export


async def download(api: Api, who: Account, export_id: str) -> zipfile.ZipFile:
    reply = await api.get(f"{EXPORTS}/{export_id}/download", token=who.access_token)
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/zip"
    assert "attachment" in reply.headers["Content-Disposition"]
    return zipfile.ZipFile(io.BytesIO(reply.body))


def entry(archive: zipfile.ZipFile, name: str) -> Any:
    return msgspec.json.decode(archive.read(name))


async def test_an_export_holds_what_it_says_and_nothing_of_others(server: Server):
    api = server.api
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await api.patch("/api/v1/users/me", json={"bio": "exported bio"}, token=alice.access_token)
    address = await verified_email(server, alice)
    await api.post(f"/api/v1/users/{alice.user_id}/contacts", json={"user_id": bob.user_id}, token=alice.access_token)
    await api.post(f"/api/v1/users/{alice.user_id}/block", json={"user_id": carol.user_id}, token=alice.access_token)
    await api.post(f"/api/v1/users/{bob.user_id}/contacts", json={"user_id": carol.user_id}, token=bob.access_token)
    mine = os.urandom(5000)
    upload = (await api.upload(alice, mine, filename="notes.bin")).body
    bobs_private = os.urandom(4000)
    await api.upload(bob, bobs_private)
    bobs_shared = os.urandom(4100)
    bob_file = (await api.upload(bob, bobs_shared)).body
    group = await plain_group(api, alice, bob, title="plain")
    await say(api, alice, group, "alice in plain text")
    await say(api, bob, group, "bob in plain text")
    await api.post(
        "/api/v1/messages",
        json={"chat_id": group, "client_id": "bf", "kind": "media", "media_id": bob_file["id"]},
        token=bob.access_token,
    )
    direct = await direct_chat(api, alice, bob)
    secret = b"ciphertext the server cannot read"
    sealed_message = await sealed(api, bob, direct, alice, secret)

    export = await ready_export(server, alice)
    assert export["size"] > 0 and export["expires_at"] - export["ready_at"] == EXPORT_KEEP_HOURS * 3_600_000
    archive = await download(api, alice, export["id"])
    names = set(archive.namelist())
    assert {"README.txt", "profile.json", "contacts.json", "blocks.json", "chats.json", "files.json"} <= names
    assert "encrypted" in archive.read("README.txt").decode()

    profile = entry(archive, "profile.json")
    assert profile["user"]["id"] == alice.user_id and profile["user"]["bio"] == "exported bio"
    assert profile["user"]["email"]["address"] == address
    assert [d["id"] for d in profile["devices"]] == [alice.device_id]
    assert [c["user_id"] for c in entry(archive, "contacts.json")] == [bob.user_id]
    assert [b["user_id"] for b in entry(archive, "blocks.json")] == [carol.user_id]

    chats = {c["id"]: c for c in entry(archive, "chats.json")}
    assert set(chats) == {group, direct}
    assert chats[group]["message_text"] == "included" and chats[direct]["encrypted"] is True
    assert {m["user_id"] for m in chats[group]["members"]} == {alice.user_id, bob.user_id}
    plain = [msgspec.json.decode(line) for line in archive.read(f"messages/{group}.jsonl").splitlines()]
    assert [m["body"] for m in plain if m["kind"] == "text"] == ["alice in plain text", "bob in plain text"]
    assert any(m["media_id"] == bob_file["id"] for m in plain)
    e2e = [msgspec.json.decode(line) for line in archive.read(f"messages/{direct}.jsonl").splitlines()]
    [opaque] = [m for m in e2e if m["id"] == sealed_message["id"]]
    assert "body" not in opaque and opaque["sender_id"] == bob.user_id

    [listed] = entry(archive, "files.json")
    assert listed["id"] == upload["id"] and listed["filename"] == "notes.bin"
    assert archive.read(listed["path"]) == mine

    everything = b"".join(archive.read(name) for name in names)
    for private in (bobs_private, bobs_shared, secret, b64(secret).encode(), carol.user_id.encode() + b'", "username'):
        assert private not in everything  # bob's files, the ciphertext, bob's contacts
    assert bob.password.encode() not in everything and b"password_hash" not in everything

    # A ranged download resumes where a connection broke.
    part = await api.get(
        f"{EXPORTS}/{export['id']}/download", token=alice.access_token, headers={"Range": "bytes=10-19"}
    )
    assert part.status == 206 and len(part.body) == 10


async def test_exports_are_mine_alone_and_one_a_day(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    export = await ready_export(server, alice)
    for path in (f"{EXPORTS}/{export['id']}", f"{EXPORTS}/{export['id']}/download"):
        reply = await api.get(path, token=bob.access_token)
        assert reply.status == 404 and reply.code == "not_found", path
    assert (await api.get(EXPORTS, token=bob.access_token)).body["items"] == []
    assert [e["id"] for e in (await api.get(EXPORTS, token=alice.access_token)).body["items"]] == [export["id"]]
    for bad in (str(uuid.uuid4()), "nope"):
        assert (await api.get(f"{EXPORTS}/{bad}", token=alice.access_token)).status == 404
    assert (await api.get(EXPORTS)).status == 401

    again = await api.post(EXPORTS, token=alice.access_token)
    assert again.status == 429 and again.code == "rate_limited"
    assert 0 < int(again.headers["Retry-After"]) <= EXPORT_EVERY_HOURS * 3600
    server.clock.advance(EXPORT_EVERY_HOURS * 3600 + 1)
    try:
        alice = await api.new_device(alice)  # a day later: a fresh token
        later = await api.post(EXPORTS, token=alice.access_token)
        assert later.status == 202
        busy = await api.post(EXPORTS, token=alice.access_token)
        assert busy.status in (409, 429)  # building now, or built already: not a second one today
    finally:
        server.clock.advance(-(EXPORT_EVERY_HOURS * 3600 + 1))


async def test_an_export_expires_and_its_zip_goes(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    upload = (await api.upload(alice, os.urandom(3333))).body
    # Sent, so it is a file in use: the clock moves days on, and the hourly media clean-up that may run
    # meanwhile takes uploads never attached (media.orphan_hours), which is not what this test is about.
    group = await plain_group(api, alice, bob)
    assert (await send(api, alice, group, kind="media", media_id=upload["id"])).status == 201
    export = await ready_export(server, alice)
    link = f"{EXPORTS}/{export['id']}/download"
    archive = blob_path(server, hashlib.sha256((await api.get(link, token=alice.access_token)).body).hexdigest())
    assert archive.exists()
    server.clock.advance(EXPORT_KEEP_HOURS * 3600 + 1)
    try:
        alice = await api.new_device(alice)  # days later: a fresh token
        assert (await api.get(link, token=alice.access_token)).status == 404  # before the hourly job has run
        await server.app[SERVICES].exports.expire()  # the hourly job
        assert (await api.get(f"{EXPORTS}/{export['id']}", token=alice.access_token)).status == 404
        await released(server, [archive])
    finally:
        server.clock.advance(-(EXPORT_KEEP_HOURS * 3600 + 1))
    assert blob_path(server, upload["sha256"]).exists()  # the user's own file stays, of course
