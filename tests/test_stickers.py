"""Sticker packs: make, publish, share, install, order and send them; images checked by the media
pipeline (size, pixels, frames); the stickers sent before packs existed keep working."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image, ImageFile

from sup.db import migrations
from sup.db.database import open_database
from sup.ids import uuid7
from sup.media import MediaError
from sup.media.images import process_image
from tests.conftest import Account, Api, Server, Socket, plain_group, png_bytes, send
from tests.packs import new_pack, processed, sticker_image, webp_bytes

PACKS = "/api/v1/stickers/packs"
INSTALLED = "/api/v1/stickers/installed"


async def send_sticker(api: Api, who: Account, chat_id: str, sticker_id: str):
    return await send(api, who, chat_id, kind="sticker", sticker_id=sticker_id)


async def test_make_publish_share_install_and_send(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    cover = await sticker_image(api, alice, png_bytes(96, 96))
    draft = await api.post(PACKS, json={"title": "Cats", "cover_media_id": cover["id"]}, token=alice.access_token)
    assert draft.status == 201 and draft.body["published"] is False and draft.body["stickers"] == []
    pack_id, slug = draft.body["id"], draft.body["slug"]
    assert 6 <= len(slug) <= 16 and draft.body["cover_media_id"] == cover["id"]
    still = await sticker_image(api, alice, webp_bytes(128, 128))
    moving = await sticker_image(api, alice, webp_bytes(128, 128, frames=12, color=(250, 10, 10)))
    flat = await sticker_image(api, alice, png_bytes(100, 80, (0, 0, 255)))
    for media, emoji in ((still, "😺"), (moving, "🙀"), (flat, "😿")):
        added = await api.post(
            f"{PACKS}/{pack_id}/stickers", json={"media_id": media["id"], "emoji": emoji}, token=alice.access_token
        )
        assert added.status == 201, added.body
    # A draft is its maker's alone.
    for path in (f"{PACKS}/{pack_id}", f"{PACKS}/by-slug/{slug}"):
        assert (await api.get(path, token=bob.access_token)).status == 404
    assert (await api.post(INSTALLED, json={"pack_id": pack_id}, token=bob.access_token)).status == 404
    mine = (await api.get(PACKS, token=alice.access_token)).body["packs"]
    assert [p["id"] for p in mine] == [pack_id]
    stickers = mine[0]["stickers"]
    assert [(s["emoji"], s["mime"], s["animated"]) for s in stickers] == [
        ("😺", "image/webp", False),
        ("🙀", "image/webp", True),
        ("😿", "image/png", False),
    ]
    chat = await plain_group(api, alice, bob)
    assert (await send_sticker(api, alice, chat, stickers[0]["id"])).status == 422  # not published yet

    published = await api.post(f"{PACKS}/{pack_id}/publish", token=alice.access_token)
    assert published.status == 200 and published.body["published"] is True
    by_slug = await api.get(f"{PACKS}/by-slug/{slug}", token=bob.access_token)
    assert by_slug.status == 200 and by_slug.body["id"] == pack_id and by_slug.body["installed"] is False
    assert (await api.patch(f"{PACKS}/{pack_id}", json={"title": "Mine"}, token=bob.access_token)).status == 403

    socket = await Socket.connect(server.url, api.session, bob.access_token)
    try:
        other = await new_pack(api, alice, "🐶", title="Dogs")
        assert (await api.post(INSTALLED, json={"pack_id": pack_id}, token=bob.access_token)).status == 201
        installed = await api.post(INSTALLED, json={"pack_id": other["id"]}, token=bob.access_token)
        assert [p["id"] for p in installed.body["packs"]] == [pack_id, other["id"]]
        [first, second] = await socket.events(2, "stickers.installed")
        assert first["pack_ids"] == [pack_id] and second["pack_ids"] == [pack_id, other["id"]]
        twice = await api.post(INSTALLED, json={"pack_id": pack_id}, token=bob.access_token)
        assert twice.status == 409 and twice.code == "conflict"
        reordered = await api.request(
            "PUT", INSTALLED, json={"pack_ids": [other["id"], pack_id]}, token=bob.access_token
        )
        assert reordered.status == 200 and [p["id"] for p in reordered.body["packs"]] == [other["id"], pack_id]
        listed = (await api.get(INSTALLED, token=bob.access_token)).body["packs"]
        assert [p["id"] for p in listed] == [other["id"], pack_id] and all(p["installed"] for p in listed)
        assert len(listed[1]["stickers"]) == 3

        # bob sends alice's sticker from his installed pack; alice sees which image it is.
        sent = await send_sticker(api, bob, chat, listed[1]["stickers"][1]["id"])
        assert sent.status == 201 and sent.body["sticker_id"] == stickers[1]["id"] and sent.body["kind"] == "sticker"
        shown = await api.get(f"/api/v1/stickers/{sent.body['sticker_id']}", token=alice.access_token)
        assert shown.status == 200 and shown.body["media_id"] == moving["id"] and shown.body["emoji"] == "🙀"
        image = await api.get(f"/api/v1/media/download/{moving['id']}", token=bob.access_token)
        assert image.status == 200 and image.headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(image.body)) as served:
            assert served.n_frames == 12

        # Taken out of a published pack: sent messages still show it, no new message may send it.
        out = await api.delete(f"{PACKS}/{pack_id}/stickers/{stickers[1]['id']}", token=alice.access_token)
        assert out.status == 204
        assert (await api.get(f"/api/v1/stickers/{stickers[1]['id']}", token=bob.access_token)).status == 200
        assert (await send_sticker(api, bob, chat, stickers[1]["id"])).status == 422
        assert len((await api.get(f"{PACKS}/{pack_id}", token=bob.access_token)).body["stickers"]) == 2

        assert (await api.delete(f"{INSTALLED}/{other['id']}", token=bob.access_token)).status == 204
        assert (await api.delete(f"{INSTALLED}/{other['id']}", token=bob.access_token)).status == 404
        assert [p["id"] for p in (await api.get(INSTALLED, token=bob.access_token)).body["packs"]] == [pack_id]
        [*_, last] = await socket.events(2, "stickers.installed")
        assert last["pack_ids"] == [pack_id]
    finally:
        await socket.close()


async def test_sticker_images_are_checked_by_the_media_pipeline(server: Server):
    api = server.api
    alice = await api.register()
    pack_id = (await api.post(PACKS, json={"title": "bad"}, token=alice.access_token)).body["id"]

    async def add(data: bytes, **upload: str):
        uploaded = await api.upload(alice, data, purpose="sticker", **upload)
        assert uploaded.status == 201, uploaded.body
        media = await processed(api, alice, uploaded.body["id"])
        reply = await api.post(
            f"{PACKS}/{pack_id}/stickers", json={"media_id": media["id"], "emoji": "🤔"}, token=alice.access_token
        )
        return media, reply

    def huge_png() -> bytes:  # 50 megapixels in 50 kB
        huge = io.BytesIO()
        Image.new("L", (10_000, 5_000)).save(huge, "PNG")
        return huge.getvalue()

    # Making these images takes seconds: off the loop, which the server in this process shares.
    media, reply = await add(await asyncio.to_thread(huge_png))
    assert media["status"] == "failed" and "over the limit of 1048576 pixels" in media["failure"]
    assert reply.status == 422 and "could not be processed" in reply.body["detail"]

    five_thousand_frames = await asyncio.to_thread(webp_bytes, 2, 2, frames=5000)
    media, reply = await add(five_thousand_frames)
    assert media["status"] == "failed" and "5000 frames, over the limit of 300" in media["failure"]
    assert reply.status == 422

    # The same 5000 frames as a photo for a chat: over the limit for any animation.
    plain = (await api.upload(alice, five_thousand_frames)).body
    assert "5000 frames, over the limit of 2000" in (await processed(api, alice, plain["id"]))["failure"]

    jpeg = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(jpeg, "JPEG")
    apng = io.BytesIO()
    frames = [Image.new("RGB", (16, 16), (i, 0, 0)) for i in range(3)]
    frames[0].save(apng, "PNG", save_all=True, append_images=frames[1:])
    for data in (jpeg.getvalue(), apng.getvalue()):
        media, reply = await add(data)
        assert media["status"] == "ready" and reply.status == 422 and "WebP" in reply.body["detail"], reply.body
    photo = (await api.upload(alice, png_bytes(20, 20))).body  # a photo for chats, not a sticker upload
    await processed(api, alice, photo["id"])
    reply = await api.post(
        f"{PACKS}/{pack_id}/stickers", json={"media_id": photo["id"], "emoji": "🤔"}, token=alice.access_token
    )
    assert reply.status == 422 and reply.body["field"] == "media_id"
    # A sticker upload of bytes that were a fine photo is still held to the sticker limits.
    big = png_bytes(1100, 1000, (3, 3, 3))
    assert (await processed(api, alice, (await api.upload(alice, big)).body["id"]))["status"] == "ready"
    media, reply = await add(big)
    assert media["status"] == "failed" and reply.status == 422
    assert len((await api.get(f"{PACKS}/{pack_id}", token=alice.access_token)).body["stickers"]) == 0


async def test_bad_requests_are_clear_4xx(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    for title in ("", "t" * 10_000, " "):
        reply = await api.post(PACKS, json={"title": title}, token=alice.access_token)
        assert reply.status == 422 and reply.body["field"] == "title", (title[:5], reply.body)
    empty = (await api.post(PACKS, json={"title": "empty"}, token=alice.access_token)).body
    assert (await api.post(f"{PACKS}/{empty['id']}/publish", token=alice.access_token)).status == 409
    image = await sticker_image(api, alice)
    bobs = await sticker_image(api, bob, webp_bytes(color=(0, 255, 0)))
    for body, field in (
        ({"media_id": image["id"], "emoji": "two words"}, "emoji"),
        ({"media_id": image["id"], "emoji": "x" * 40}, "emoji"),
        ({"media_id": bobs["id"], "emoji": "🙂"}, "media_id"),  # someone else's image
        ({"media_id": str(uuid.uuid4()), "emoji": "🙂"}, "media_id"),
    ):
        reply = await api.post(f"{PACKS}/{empty['id']}/stickers", json=body, token=alice.access_token)
        assert reply.status == 422 and reply.body["field"] == field, (body, reply.body)
    assert (
        await api.post(
            f"{PACKS}/{empty['id']}/stickers", json={"media_id": image["id"], "emoji": "🙂"}, token=bob.access_token
        )
    ).status == 404  # bob cannot see alice's draft at all
    pack = await new_pack(api, alice, "🙂")
    assert (await api.post(f"{PACKS}/{pack['id']}/publish", token=alice.access_token)).status == 409  # again
    reply = await api.post(INSTALLED, json={"pack_id": empty["id"]}, token=alice.access_token)
    assert reply.status == 409  # a draft is not installed, even by its maker
    assert (await api.post(INSTALLED, json={"pack_id": pack["id"]}, token=bob.access_token)).status == 201
    for order in ([], [pack["id"], pack["id"]], [empty["id"]], [str(uuid.uuid4())]):
        reply = await api.request("PUT", INSTALLED, json={"pack_ids": order}, token=bob.access_token)
        assert reply.status == 422, order
    for path in (f"{PACKS}/{uuid.uuid4()}", f"{PACKS}/nope", f"{PACKS}/by-slug/{'x' * 100}", f"{PACKS}/by-slug/a.b"):
        assert (await api.get(path, token=bob.access_token)).status == 404, path
    assert (await api.get(f"/api/v1/stickers/{uuid.uuid4()}", token=bob.access_token)).status == 404
    assert (await api.delete(f"{INSTALLED}/{uuid.uuid4()}", token=bob.access_token)).status == 404
    limited = await api.patch(f"{PACKS}/{pack['id']}", json={"cover_media_id": bobs["id"]}, token=alice.access_token)
    assert limited.status == 422 and limited.body["field"] == "cover_media_id"


# -- the image child on its own ------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["WEBP", "GIF", "PNG"])
def test_animations_over_the_frame_limit_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch, fmt: str):
    frames = [Image.new("RGB", (4, 4), (i % 256, i // 256, 0)) for i in range(600)]
    buffer = io.BytesIO()
    lossless = {"lossless": True} if fmt == "WEBP" else {}  # lossy WebP would merge frames that look alike
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=20, **lossless)
    data = buffer.getvalue()
    assert process_image(data, max_frames=600).frames == 600

    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(MediaError, match=r"(600|more than 599) frames, over the limit of 599"):
        process_image(data, max_frames=599)
    with pytest.raises(MediaError, match="pixels in all"):
        process_image(data, max_animation_pixels=600 * 16 - 1)


# -- stickers sent before packs existed -----------------------------------------------------------


async def test_migration_gives_old_stickers_a_pack_and_keeps_their_ids(database_url: str, fresh_postgres, tmp_path):
    """Before 0008 a sticker message named a media row (purpose=sticker); after it, a sticker of the same id."""
    known = migrations.discover()
    postgres = database_url.startswith("postgres")
    db = await open_database(await fresh_postgres.create() if postgres else f"sqlite:///{tmp_path / 'old.db'}")
    try:
        await migrations.migrate_up(db, 0, [m for m in known if m.version < 8])
        user, media, chat, message = uuid7(), uuid7(), uuid7(), uuid7()
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO users (id, username, username_key, password_hash, created_at, updated_at)"
                " VALUES ($1, 'old', 'old', 'x', 1, 1)",
                user,
            )
            await tx.execute(
                "INSERT INTO media (id, owner_id, purpose, encrypted, kind, mime, filename, size, sha256, blob_key,"
                " status, created_at, updated_at) VALUES ($1, $2, 'sticker', $3, 'image', 'image/webp', 's.webp', 10,"
                " 'x', 'k', 'ready', 5, 5)",
                media,
                user,
                False,
            )
            await tx.execute(
                "INSERT INTO chats (id, type, encrypted, created_at, updated_at) VALUES ($1, 'group', $2, 1, 1)",
                chat,
                False,
            )
            await tx.execute(
                "INSERT INTO messages (id, chat_id, seq, sender_id, client_id, content_hash, kind, sticker_id,"
                " created_at) VALUES ($1, $2, 1, $3, 'c', $4, 'sticker', $5, 6)",
                message,
                chat,
                user,
                b"h",
                media,
            )
        await migrations.migrate_up(db, 0, known)
        pack = await db.fetchrow("SELECT id, owner_id, slug, published_at FROM sticker_packs")
        assert pack["owner_id"] == user and pack["published_at"] == 5 and len(pack["slug"]) == 16
        sticker = await db.fetchrow("SELECT id, pack_id, media_id, emoji, position FROM stickers")
        assert (sticker["id"], sticker["media_id"], sticker["pack_id"]) == (media, media, pack["id"])
        assert sticker["position"] == 1
        assert await db.fetchval("SELECT sticker_id FROM messages WHERE id = $1", message) == sticker["id"]
        await migrations.migrate_down(db, 1, known)
        assert await db.fetchval("SELECT sticker_id FROM messages WHERE id = $1", message) == media
    finally:
        await db.close()
