"""Media over HTTP, as a client uses it: uploads, processing, downloads, access, bad input.

Every test runs against a real server on each database; the flows that touch the blob
store run on local disk and on S3 (moto's server on loopback).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image

from sup.app import SCHEDULER
from sup.transport.services import SERVICES
from tests import media_samples as samples
from tests.conftest import (
    Account,
    Api,
    Reply,
    Server,
    ServerFactory,
    Socket,
    plain_group,
    png_bytes,
    require_postgres,
    send,
)
from tests.packs import processed
from tests.processes import two_processes
from tests.s3server import MotoS3

MEDIA = "/api/v1/media"


@pytest.fixture(scope="module", params=["disk", "s3"])
async def media_server(request, server_factory: ServerFactory) -> Server:
    if request.param == "disk":
        return await server_factory()
    moto: MotoS3 = request.getfixturevalue("moto_s3")
    return await server_factory(**moto.env(f"s3://sup-{uuid.uuid4().hex[:12]}/media"))


async def multipart_upload(api: Api, who: Account, data: bytes, filename: str, **params: str) -> Reply:
    form = aiohttp.FormData()
    form.add_field("caption", "ignored")  # other fields before the file are skipped
    form.add_field("file", data, filename=filename, content_type="application/x-lies")
    headers = {"Authorization": f"Bearer {who.access_token}"}
    url = api.base_url + f"{MEDIA}/upload"
    async with api.session.post(url, data=form, params=params, headers=headers) as response:
        return Reply(response.status, await response.json(), response.headers)


async def download(api: Api, who: Account | None, path: str, **headers: str) -> tuple[int, bytes, Any]:
    if who is not None:
        headers["Authorization"] = f"Bearer {who.access_token}"
    async with api.session.get(api.base_url + path, headers=headers) as response:
        return response.status, await response.read(), response.headers


async def channel_with(api: Api, owner: Account, *members: Account) -> str:
    reply = await api.post(
        "/api/v1/chats",
        json={"type": "channel", "title": "pics", "member_ids": [m.user_id for m in members]},
        token=owner.access_token,
    )
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def attach(api: Api, who: Account, chat_id: str, media_id: str) -> Reply:
    return await send(api, who, chat_id, kind="media", media_id=media_id)


# -- the main flows, on disk and on S3 ---------------------------------------------------------


async def test_photo_is_processed_stripped_and_shared_with_the_chat(media_server: Server):
    api = media_server.api
    alice, bob, eve = await api.register(), await api.register(), await api.register()
    # rotated, with GPS in its EXIF; bytes after the end make it unique (no earlier results to reuse)
    photo = samples.jpeg(800, 600, orientation=6) + os.urandom(16)
    socket = await Socket.connect(media_server.url, api.session, alice.access_token)
    try:
        uploaded = await multipart_upload(api, alice, photo, "holiday.JPG")
        assert uploaded.status == 201, uploaded.body
        media = uploaded.body
        assert (media["kind"], media["mime"], media["filename"]) == ("image", "image/jpeg", "holiday.JPG")
        assert media["sha256"] == hashlib.sha256(photo).hexdigest() and media["size"] == len(photo)
        event = await socket.until(lambda f: f["type"] == "media.processed", timeout=30)
        assert event["media"]["id"] == media["id"] and event["media"]["status"] == "ready"
    finally:
        await socket.close()
    ready = await processed(api, alice, media["id"])
    assert (ready["width"], ready["height"]) == (600, 800)  # orientation applied
    assert ready["placeholder"] and ready["thumbnail"] is True

    # what is served has no EXIF, so no GPS
    status, served, headers = await download(api, alice, f"{MEDIA}/download/{media['id']}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    assert "inline" in headers["Content-Disposition"] and headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]
    with Image.open(io.BytesIO(served)) as image:
        assert image.size == (600, 800) and not image.getexif().get_ifd(0x8825)
    for size, edge in (("small", 320), ("large", 800)):
        status, thumb, headers = await download(api, alice, f"{MEDIA}/thumbnail/{media['id']}?size={size}")
        assert status == 200 and headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(thumb)) as image:
            assert max(image.size) == edge and not image.getexif()

    # bob sees it once it is in a chat he is in; eve never does
    chat = await channel_with(api, alice, bob)
    assert (await download(api, bob, f"{MEDIA}/download/{media['id']}"))[0] == 404
    sent = await attach(api, alice, chat, media["id"])
    assert sent.status == 201 and sent.body["media_id"] == media["id"]
    assert (await download(api, bob, f"{MEDIA}/download/{media['id']}"))[1] == served
    assert (await api.get(f"{MEDIA}/{media['id']}", token=bob.access_token)).status == 200
    for path in (f"{MEDIA}/{media['id']}", f"{MEDIA}/download/{media['id']}", f"{MEDIA}/thumbnail/{media['id']}"):
        assert (await download(api, eve, path))[0] == 404
    assert (await attach(api, eve, await plain_group(api, eve), media["id"])).status == 422  # not hers to send
    assert (await download(api, None, f"{MEDIA}/download/{media['id']}"))[0] == 401


async def test_the_same_bytes_are_processed_once(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    picture = png_bytes(90, 60, (9, 99, 199)) + os.urandom(8)
    first = await processed(api, alice, (await api.upload(alice, picture)).body["id"])
    again = (await api.upload(bob, picture, filename="mine.png")).body
    assert again["status"] == "ready" and again["owner_id"] == bob.user_id  # no second job: the results are known
    assert (again["width"], again["height"], again["placeholder"]) == (
        first["width"],
        first["height"],
        first["placeholder"],
    )
    assert (await download(api, bob, f"{MEDIA}/thumbnail/{again['id']}"))[0] == 200


async def test_ranges_etags_and_head(media_server: Server):
    api = media_server.api
    alice = await api.register()
    data = os.urandom(100_000)
    media = (await api.upload(alice, data, filename="blob.bin")).body
    path = f"{MEDIA}/download/{media['id']}"
    status, body, headers = await download(api, alice, path)
    assert status == 200 and body == data and headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream" and "attachment" in headers["Content-Disposition"]
    etag = headers["ETag"]
    assert (await download(api, alice, path, **{"If-None-Match": etag}))[0] == 304
    for header, expected in [
        ("bytes=0-0", data[:1]),
        ("bytes=10-19", data[10:20]),
        ("bytes=99990-", data[99990:]),
        ("bytes=-5", data[-5:]),
        ("bytes=99999-200000", data[99999:]),
    ]:
        status, body, headers = await download(api, alice, path, Range=header)
        assert status == 206 and body == expected, header
        assert headers["Content-Range"].endswith("/100000")
    status, _, headers = await download(api, alice, path, Range="bytes=100000-")
    assert status == 416 and headers["Content-Range"] == "bytes */100000"
    assert (await download(api, alice, path, Range="bytes=0-1,5-6"))[0] == 200  # several ranges: the whole file
    assert (await download(api, alice, path, Range="bytes=0-9", **{"If-Range": '"other"'}))[0] == 200
    async with api.session.head(api.base_url + path, headers={"Authorization": f"Bearer {alice.access_token}"}) as r:
        assert r.status == 200 and r.headers["Content-Length"] == "100000" and await r.read() == b""


async def test_resumable_upload_in_any_order_after_a_dropped_connection(media_server: Server):
    api = media_server.api
    alice = await api.register()
    chunk = media_server.config.media.chunk_bytes
    data = os.urandom(chunk * 2 + 1234)
    started = await api.post(
        f"{MEDIA}/uploads", json={"filename": "big.bin", "size": len(data)}, token=alice.access_token
    )
    assert started.status == 201 and started.body["chunk_count"] == 3
    upload = started.body["upload_id"]
    pieces = [data[i * chunk : (i + 1) * chunk] for i in range(3)]

    async def put(index: int, body: bytes) -> Reply:
        return await api.put_chunk(alice, upload, index, body)

    assert (await put(2, pieces[2])).body["received"] == [2]
    # chunk 0 dies halfway: the connection drops with half the declared bytes sent
    host, port = media_server.url.removeprefix("http://").split(":")
    _, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"PUT {MEDIA}/uploads/{upload}/chunks/0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.access_token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(pieces[0])}\r\n\r\n".encode()
        + pieces[0][: chunk // 2]
    )
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.3)
    status = await api.get(f"{MEDIA}/uploads/{upload}", token=alice.access_token)
    assert status.body["received"] == [2]
    early = await api.post(f"{MEDIA}/uploads/{upload}/complete", token=alice.access_token)
    assert early.status == 409 and early.code == "upload_incomplete" and early.body["missing_chunks"] == [0, 1]
    assert (await put(1, pieces[1])).status == 200
    assert (await put(0, pieces[0])).body["received"] == [0, 1, 2]
    done = await api.post(f"{MEDIA}/uploads/{upload}/complete", token=alice.access_token)
    assert done.status == 201, done.body
    assert done.body["sha256"] == hashlib.sha256(data).hexdigest() and done.body["size"] == len(data)
    assert (await download(api, alice, f"{MEDIA}/download/{done.body['id']}"))[1] == data
    assert (await api.get(f"{MEDIA}/uploads/{upload}", token=alice.access_token)).status == 404


async def test_signed_urls_work_without_a_token_until_they_expire(media_server: Server):
    api = media_server.api
    alice = await api.register()
    media = (await api.upload(alice, png_bytes(), filename="dot.png")).body
    await processed(api, alice, media["id"])
    signed = await api.get(f"{MEDIA}/{media['id']}/url", token=alice.access_token)
    assert signed.status == 200
    async with aiohttp.ClientSession() as browser, browser.get(signed.body["url"]) as response:  # like an <img>
        assert response.status == 200 and (await response.read())[:8] == b"\x89PNG\r\n\x1a\n"
    if "signature=" in signed.body["url"]:  # our own HMAC URL (disk); S3 presigns its own
        tampered = signed.body["url"].replace("variant=original", "variant=small")
        assert (await download(api, None, tampered.removeprefix(media_server.url)))[0] == 403
        media_server.clock.advance(media_server.config.media.signed_url_seconds + 5)
        try:
            assert (await download(api, None, signed.body["url"].removeprefix(media_server.url)))[0] == 403
        finally:
            media_server.clock.advance(-(media_server.config.media.signed_url_seconds + 5))


# -- the rest, on the default store ----------------------------------------------------------


async def test_video_gets_facts_and_a_poster_and_a_voice_note_a_waveform(server: Server, tmp_path: Path):
    api = server.api
    alice = await api.register()
    tags = {"title": "SECRET-TITLE"}
    clip = samples.video(tmp_path / "clip.mp4", size=(64, 48), frames=10, metadata=tags).read_bytes()
    assert b"SECRET-TITLE" in clip
    video = (await api.upload(alice, clip, filename="clip.mp4")).body
    assert video["kind"] == "video" and video["mime"] == "video/mp4"
    voice = samples.voice_note(tmp_path / "note.ogg", seconds=2.0, metadata=tags).read_bytes()
    assert b"SECRET-TITLE" in voice
    note = (await api.upload(alice, voice, filename="note.ogg")).body
    assert note["kind"] == "audio"

    video = await processed(api, alice, video["id"])
    assert video["status"] == "ready", video
    assert (video["width"], video["height"], video["video_codec"]) == (64, 48, "h264")
    assert video["audio_codec"] == "aac" and 900 <= video["duration_ms"] <= 1100
    status, poster, headers = await download(api, alice, f"{MEDIA}/thumbnail/{video['id']}")
    assert status == 200 and headers["Content-Type"] == "image/webp" and len(poster) > 0

    note = await processed(api, alice, note["id"])
    assert note["status"] == "ready", note
    assert 1900 <= note["duration_ms"] <= 2100
    assert len(note["waveform"]) == 64 and max(note["waveform"]) == 255 and min(note["waveform"]) < 255

    # Others get copies without the container's tags (location, dates, device): here, the title.
    bob = await api.register()
    chat = await channel_with(api, alice, bob)
    for media in (video, note):
        assert (await attach(api, alice, chat, media["id"])).status == 201
        status, served, headers = await download(api, bob, f"{MEDIA}/download/{media['id']}")
        assert status == 200 and headers["Content-Type"] in ("video/mp4", "audio/ogg"), headers["Content-Type"]
        assert b"SECRET-TITLE" not in served and len(served) > 1000


@pytest.fixture(scope="module")
def phone_media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Voice notes and photos as phones make them; made here, off the event loop the tests watch."""
    directory = tmp_path_factory.mktemp("phone")
    made = {
        # Android's recorders write voice notes as an `isom` MP4 or a 3GP, with the index at the end.
        "Recording_001.m4a": samples.voice_note(directory / "a", container="mp4", codec="aac").read_bytes(),
        "Voice 002.3gp": samples.voice_note(directory / "b", container="3gp", codec="libopencore_amrnb").read_bytes(),
        "Voice 003.3gp": samples.voice_note(directory / "c", container="3gp", codec="aac").read_bytes(),
        "Memo.m4a": samples.voice_note(directory / "d", container="ipod", codec="aac").read_bytes(),
        "IMG_0001.HEIC": samples.heic(800, 600, orientation=6, tile=256),
        "IMG_0002.avif": samples.avif(800, 600, orientation=6),
        "grid.heic": samples.heic(1200, 900, tile=256),
        "small.heic": samples.heic(320, 240),
        "small.avif": samples.avif(320, 240),
        "fine.heic": samples.heic(640, 480, gps=False),
    }
    return made


async def test_voice_notes_from_phones_in_mp4_and_3gp_are_audio(
    server: Server, phone_media: dict[str, bytes], tmp_path: Path
):
    api = server.api
    alice, bob = await api.register(), await api.register()
    chat = await channel_with(api, alice, bob)
    notes = {
        "Recording_001.m4a": ("audio/mp4", "aac", "audio/mp4"),
        "Voice 002.3gp": ("audio/3gpp", "amr_nb", "audio/3gpp"),
        "Voice 003.3gp": ("audio/3gpp", "aac", "audio/mp4"),
        "Memo.m4a": ("audio/mp4", "aac", "audio/mp4"),
    }
    for name, (mime, codec, served_mime) in notes.items():
        data = phone_media[name]
        uploaded = (await api.upload(alice, data, filename=name)).body
        assert uploaded["status"] == "pending", uploaded
        media = await processed(api, alice, uploaded["id"])
        assert media["status"] == "ready", (name, media)
        assert (media["kind"], media["mime"], media["audio_codec"]) == ("audio", mime, codec), name
        assert 1900 <= media["duration_ms"] <= 2100, name
        assert len(media["waveform"]) == 64 and max(media["waveform"]) == 255, name
        assert media.get("width") is None and not media["thumbnail"]

        # What others get is a copy that plays as sound.
        assert (await attach(api, alice, chat, media["id"])).status == 201
        status, served, headers = await download(api, bob, f"{MEDIA}/download/{media['id']}")
        assert status == 200 and headers["Content-Type"] == served_mime, (name, headers)
        copy = tmp_path / "served"
        copy.write_bytes(served)
        with av.open(str(copy)) as played:
            assert not played.streams.video and played.streams.audio
            assert 1.9 <= played.duration / 1_000_000 <= 2.1

        # The same bytes sent again are known: audio at once.
        again = (await api.upload(bob, data, filename=name)).body
        assert (again["kind"], again["mime"], again["status"]) == ("audio", mime, "ready")


async def test_iphone_heic_and_avif_photos_are_shown_upright_and_served_as_clean_jpegs(
    server: Server, phone_media: dict[str, bytes]
):
    api = server.api
    alice, bob = await api.register(), await api.register()
    chat = await channel_with(api, alice, bob)
    for name, mime in (("IMG_0001.HEIC", "image/heic"), ("IMG_0002.avif", "image/avif")):
        data = phone_media[name]
        assert b"SampleCam" in data
        uploaded = (await api.upload(alice, data, filename=name)).body
        assert (uploaded["kind"], uploaded["mime"]) == ("image", mime)
        media = await processed(api, alice, uploaded["id"])
        assert media["status"] == "ready", (name, media)
        assert (media["width"], media["height"]) == (600, 800) and media["placeholder"] and media["thumbnail"]

        assert (await attach(api, alice, chat, media["id"])).status == 201
        for who in (alice, bob):
            status, served, headers = await download(api, who, f"{MEDIA}/download/{media['id']}")
            assert status == 200 and headers["Content-Type"] == "image/jpeg", (name, headers)
            assert b"SampleCam" not in served
            with Image.open(io.BytesIO(served)) as image:
                assert (image.format, image.size) == ("JPEG", (600, 800)) and not image.getexif()
        status, thumb, headers = await download(api, bob, f"{MEDIA}/thumbnail/{media['id']}?size=large")
        assert status == 200 and headers["Content-Type"] == "image/webp"
        with Image.open(io.BytesIO(thumb)) as image:
            assert image.size == (600, 800) and not image.getexif()


async def test_oversized_broken_and_crafted_heic_and_avif_fail_with_a_reason(
    server_factory: ServerFactory, phone_media: dict[str, bytes]
):
    limited = await server_factory(SUP_MEDIA_MAX_IMAGE_PIXELS="1000000")
    api = limited.api
    alice, bob = await api.register(), await api.register()
    chat = await channel_with(api, alice, bob)
    grid, heic, avif = phone_media["grid.heic"], phone_media["small.heic"], phone_media["small.avif"]
    bad = {
        "big.heic": (grid, "1200x900 (1080000 pixels), over the limit of 1000000 pixels"),
        "claims.heic": (samples.claim_image_size(heic, 30000, 30000), "over the limit of 1000000 pixels"),
        "small-header.heic": (samples.claim_image_size(grid, 64, 48), "a grid of 1200x900"),
        "truncated.heic": (grid[: len(grid) * 2 // 3], "truncated or corrupt"),
        "corrupt.heic": (samples.corrupt(heic), "truncated or corrupt"),
        "truncated.avif": (avif[: len(avif) * 2 // 3], "truncated or corrupt"),
        "claims.avif": (samples.claim_image_size(avif, 5000, 5000), "over the limit of 1000000 pixels"),
    }
    ids = {}
    for name, (data, _) in bad.items():
        reply = await api.upload(alice, data, filename=name)
        assert reply.status == 201, (name, reply.body)
        assert reply.body["kind"] == "image"
        ids[name] = reply.body["id"]
    for name, (_, reason) in bad.items():
        result = await processed(api, alice, ids[name])
        assert result["status"] == "failed" and reason in result["failure"], (name, result)
        assert not result["thumbnail"]
        assert (await attach(api, alice, chat, ids[name])).status == 422
    # The server goes on: a photo within the limit is still processed.
    fine = (await api.upload(alice, phone_media["fine.heic"])).body
    assert (await processed(api, alice, fine["id"]))["status"] == "ready"
    assert (await api.get("/health")).status == 200


async def test_encrypted_attachments_are_opaque_and_stay_in_encrypted_chats(api: Api):
    alice, bob = await api.register(), await api.register()
    await api.publish_keys(bob)
    photo = samples.jpeg(64, 64)
    sealed = (await api.upload(alice, photo, encrypted=True, filename="x.jpg")).body
    # a JPEG's bytes, but the server neither sniffs nor processes what the client sealed
    assert (sealed["kind"], sealed["mime"], sealed["status"], sealed["encrypted"]) == (
        "file",
        "application/octet-stream",
        "ready",
        True,
    )
    plain = (await api.upload(alice, photo)).body
    direct = await api.post(
        "/api/v1/chats", json={"type": "direct", "member_ids": [bob.user_id]}, token=alice.access_token
    )
    envelope = {"recipients": [{"device_id": bob.device_id, "ciphertext": base64.b64encode(b"sealed").decode()}]}

    async def share(chat_id: str, media_id: str, **extra: Any) -> Reply:
        return await send(api, alice, chat_id, kind="media", media_id=media_id, **extra)

    assert (await share(direct.body["id"], plain["id"], **envelope)).status == 422
    ok = await share(direct.body["id"], sealed["id"], **envelope)
    assert ok.status == 201
    status, body, headers = await download(api, bob, f"{MEDIA}/download/{sealed['id']}")
    assert status == 200 and body == photo and headers["Content-Type"] == "application/octet-stream"
    assert "attachment" in headers["Content-Disposition"]
    channel = await channel_with(api, alice, bob)
    assert (await share(channel, sealed["id"], body="look")).status == 422
    assert (await api.get(f"{MEDIA}/thumbnail/{sealed['id']}", token=alice.access_token)).status == 404


async def test_active_content_and_lying_names_are_served_as_downloads(api: Api):
    alice = await api.register()
    page = b"<!DOCTYPE html><html><script>alert(document.cookie)</script></html>"
    html = (await api.upload(alice, page, filename="cute-cat.jpg")).body
    assert (html["kind"], html["mime"]) == ("file", "text/html")
    status, _, headers = await download(api, alice, f"{MEDIA}/download/{html['id']}")
    assert status == 200 and headers["Content-Type"] == "text/html"
    assert headers["Content-Disposition"].startswith("attachment") and "sandbox" in headers["Content-Security-Policy"]
    svg = (await api.upload(alice, b'<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>', filename="a.png")).body
    assert svg["mime"] == "image/svg+xml" and svg["kind"] == "file"
    elf = (await api.upload(alice, samples.ELF_HEADER + os.urandom(2000), filename="photo.jpg")).body
    assert (elf["kind"], elf["mime"], elf["status"]) == ("file", "application/octet-stream", "ready")
    sneaky = (await api.upload(alice, png_bytes(), filename="../../etc/passwd")).body
    assert sneaky["filename"] == "passwd"
    windows = (await api.upload(alice, png_bytes(), filename="..\\..\\boot.ini")).body
    assert windows["filename"] == "boot.ini"


async def test_others_never_get_an_original_that_may_carry_metadata(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    chat = await channel_with(api, alice, bob)
    gif = (await api.upload(alice, samples.animated_gif())).body
    broken = (await api.upload(alice, samples.png(64, 64))).body
    for media in (gif, broken):
        assert (await attach(api, alice, chat, media["id"])).status == 201
        assert (await processed(api, alice, media["id"]))["status"] == "ready"
    status, _, headers = await download(api, bob, f"{MEDIA}/download/{gif['id']}")
    assert status == 200 and headers["Content-Type"] == "image/webp"  # no re-encoded GIF: the thumbnail
    assert (await download(api, alice, f"{MEDIA}/download/{gif['id']}"))[2]["Content-Type"] == "image/gif"
    # A file attached while pending whose processing then failed (clients attach at once).
    await server.db.execute(
        "UPDATE media SET status = 'failed', failure = 'broken', served_key = NULL WHERE id = $1", broken["id"]
    )
    refused = await api.get(f"{MEDIA}/download/{broken['id']}", token=bob.access_token)
    assert refused.status == 409 and refused.code == "media_failed"
    assert (await download(api, alice, f"{MEDIA}/download/{broken['id']}"))[0] == 200  # the uploader's own file


async def test_broken_and_hostile_files_fail_with_a_reason_and_the_scheduler_goes_on(server: Server, tmp_path: Path):
    api = server.api
    alice = await api.register()
    clip = samples.video(tmp_path / "v.mp4", size=(64, 48), frames=10).read_bytes()
    bad = {
        "truncated.jpg": samples.jpeg(640, 480)[:2000],
        "truncated.png": samples.png(400, 300)[:500],
        "bomb.png": samples.png_bomb(),
        "corrupt.mp4": samples.corrupt(clip),
        "forever.mp4": samples.claim_duration(clip, 100 * 3600),
    }
    ids = {}
    for name, data in bad.items():
        reply = await api.upload(alice, data, filename=name)
        assert reply.status == 201, (name, reply.body)
        ids[name] = reply.body["id"]
    for name, media_id in ids.items():
        result = await processed(api, alice, media_id)
        assert result["status"] == "failed" and result["failure"], (name, result)
        assert not result["thumbnail"]
    # and a good file after all of that still gets processed
    fine = (await api.upload(alice, png_bytes())).body
    assert (await processed(api, alice, fine["id"]))["status"] == "ready"
    # a failed file cannot go into a message
    chat = await plain_group(api, alice)
    assert (await attach(api, alice, chat, ids["bomb.png"])).status == 422


async def test_bad_uploads_are_refused_with_clear_errors(server: Server):
    api = server.api
    alice = await api.register()
    empty = await api.upload(alice, b"")
    assert empty.status == 422
    wrong_type = await api.post(f"{MEDIA}/upload", json={"file": "x"}, token=alice.access_token)
    assert wrong_type.status == 415
    for params in ({"purpose": "wallpaper"}, {"encrypted": "maybe"}, {"surprise": "1"}):
        assert (await api.upload(alice, png_bytes(), **params)).status == 422, params
    not_image = await api.upload(alice, b"just some text", purpose="avatar")
    assert not_image.status == 422
    sealed_avatar = await api.upload(alice, png_bytes(), purpose="avatar", encrypted=True)
    assert sealed_avatar.status == 422
    broken = await api.post(
        f"{MEDIA}/upload",
        data=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',  # never closed
        token=alice.access_token,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert 400 <= broken.status < 500
    no_file = await api.post(
        f"{MEDIA}/upload",
        data=b'--xyz\r\nContent-Disposition: form-data; name="other"\r\n\r\nabc\r\n--xyz--\r\n',
        token=alice.access_token,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert no_file.status == 422
    assert (await api.upload(Account("x", "x", "x", "x", "nope", "x"), png_bytes())).status == 401
    for bad_id in ("not-a-uuid", str(uuid.uuid4()), "../../../etc/passwd"):
        assert (await api.get(f"{MEDIA}/{bad_id}", token=alice.access_token)).status == 404
        assert (await download(api, alice, f"{MEDIA}/download/{bad_id}"))[0] == 404


async def test_a_huge_declared_length_is_refused_before_reading(server: Server):
    alice = await server.api.register()
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {MEDIA}/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.access_token}\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {10 * 1024**3}\r\n\r\n".encode()
        + b"\xff\xd8\xff" * 100
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), timeout=10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"file_too_large" in head


async def test_limits_stop_the_stream_and_leave_nothing_behind(server_factory: ServerFactory):
    limited = await server_factory(SUP_MEDIA_MAX_IMAGE_BYTES="50000", SUP_MEDIA_QUOTA_BYTES="300000")
    api = limited.api
    alice = await api.register()
    blobs = Path(limited.config.data_dir) / "blobs"

    def stored_files() -> list[Path]:
        return [p for p in blobs.rglob("*") if p.is_file()]

    big_image = samples.jpeg(10, 10) + os.urandom(60_000)  # sniffed as an image: the image limit applies
    refused = await api.upload(alice, big_image)
    assert refused.status == 413 and refused.code == "file_too_large"
    assert stored_files() == []
    assert (await api.upload(alice, os.urandom(200_000))).status == 201  # any other file: within quota
    over = await api.upload(alice, os.urandom(150_000))
    assert over.status == 413 and over.code == "quota_exceeded"
    assert len(stored_files()) == 1
    chunked = await api.post(f"{MEDIA}/uploads", json={"size": 200_000}, token=alice.access_token)
    assert chunked.status == 413


async def test_chunks_out_of_range_or_of_the_wrong_size(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    upload = (await api.post(f"{MEDIA}/uploads", json={"size": 10}, token=alice.access_token)).body["upload_id"]

    async def put(who: Account, index: str, body: bytes) -> Reply:
        return await api.put_chunk(who, upload, index, body)

    assert (await put(alice, "1", b"0123456789")).status == 416
    assert (await put(alice, "-1", b"0123456789")).status == 422
    assert (await put(alice, "x", b"0123456789")).status == 422
    assert (await put(alice, "0", b"012")).status == 422
    assert (await put(bob, "0", b"0123456789")).status == 404  # not his upload
    for body in ({"size": 0}, {"size": -5}, {"size": "ten"}, {"size": 10, "purpose": "x"}):
        assert (await api.post(f"{MEDIA}/uploads", json=body, token=alice.access_token)).status == 422
    assert (await api.request("DELETE", f"{MEDIA}/uploads/{upload}", token=alice.access_token)).status == 204
    assert (await put(alice, "0", b"0123456789")).status == 404


async def test_delete_and_cleanup_of_orphans_and_stale_uploads(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    kept = (await api.upload(alice, png_bytes(10, 10, (1, 2, 3)))).body
    orphan = (await api.upload(alice, png_bytes(10, 10, (4, 5, 6)))).body
    gone = (await api.upload(alice, png_bytes(10, 10, (7, 8, 9)))).body
    sticker = (await api.upload(alice, png_bytes(12, 12), purpose="sticker")).body
    await processed(api, alice, kept["id"])
    await processed(api, alice, orphan["id"])
    assert (await attach(api, alice, await plain_group(api, alice, bob), kept["id"])).status == 201
    assert (await api.delete(f"{MEDIA}/{gone['id']}", token=bob.access_token)).status == 404
    assert (await api.delete(f"{MEDIA}/{gone['id']}", token=alice.access_token)).status == 204
    assert (await api.get(f"{MEDIA}/{gone['id']}", token=alice.access_token)).status == 404
    stale = (await api.post(f"{MEDIA}/uploads", json={"size": 10}, token=alice.access_token)).body["upload_id"]

    hours = max(server.config.media.orphan_hours, server.config.media.upload_expiry_hours) + 1
    server.clock.advance(hours * 3600)
    try:
        await server.app[SERVICES].media.cleanup()
    finally:
        server.clock.advance(-hours * 3600)
    assert (await api.get(f"{MEDIA}/{kept['id']}", token=alice.access_token)).status == 200
    assert (await api.get(f"{MEDIA}/{orphan['id']}", token=alice.access_token)).status == 404
    assert (await api.get(f"{MEDIA}/{sticker['id']}", token=alice.access_token)).status == 200  # kept for later
    assert (await api.get(f"{MEDIA}/uploads/{stale}", token=alice.access_token)).status == 404


async def test_malicious_headers_names_and_indexes_get_4xx_not_500(server: Server):
    api = server.api
    alice = await api.register()
    media = (await api.upload(alice, os.urandom(1000))).body
    path = f"{MEDIA}/download/{media['id']}"
    for query in ("expires=9999999999&signature=%C3%A9", "expires=1&signature=" + "a" * 64, "signature=" + "0" * 64):
        status = (await download(api, None, f"{path}?{query}"))[0]
        assert status in (403, 422), (query, status)
    for header in ("bytes=1" + "0" * 4400 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000):
        assert (await download(api, alice, path, Range=header))[0] == 200, header[:20]
    upload = (await api.post(f"{MEDIA}/uploads", json={"size": 10}, token=alice.access_token)).body["upload_id"]
    for index in ("%C2%B2", "%E2%91%A0", "%D9%A0"):  # superscript two, circled one, Arabic-Indic zero
        reply = await api.put_chunk(alice, upload, index, b"0123456789")
        assert reply.status == 422, index
    headers = {"Content-Type": "multipart/form-data; boundary=xyz"}
    for part_headers in (
        b'Content-Disposition: form-data; name="file"; filename="a\r\n b.png"',  # folded
        b'Content-Disposition: form-data; name="file"; filename="' + b"a" * 10_000 + b'.png"',
    ):
        body = b"--xyz\r\n" + part_headers + b"\r\n\r\nabc\r\n--xyz--\r\n"
        reply = await api.post(f"{MEDIA}/upload", data=body, token=alice.access_token, headers=headers)
        assert 400 <= reply.status < 500, reply.status
    latin1 = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="caf\xe9.bin"\r\n\r\nabc\r\n--xyz--\r\n'
    reply = await api.post(f"{MEDIA}/upload", data=latin1, token=alice.access_token, headers=headers)
    assert reply.status == 201 and reply.body["filename"].startswith("caf"), reply.body
    spoof = (await api.upload(alice, png_bytes(), filename="\u202egpj.exe")).body
    assert spoof["filename"] == "gpj.exe"


async def test_concurrent_uploads_keep_the_quota_and_leave_no_unnamed_blobs(server_factory: ServerFactory):
    limited = await server_factory(SUP_MEDIA_QUOTA_BYTES="300000")
    api = limited.api
    alice = await api.register()
    replies = await asyncio.gather(*(api.upload(alice, os.urandom(120_000)) for _ in range(6)))
    assert [r.status for r in replies].count(201) == 2
    assert all(r.status == 413 for r in replies if r.status != 201)
    starts = await asyncio.gather(
        *(api.post(f"{MEDIA}/uploads", json={"size": 30_000}, token=alice.access_token) for _ in range(6))
    )
    assert sum(r.status == 201 for r in starts) == 2  # 240 000 stored + 2 x 30 000 reserved
    # The losers' bytes are released: gone once the release delay has passed.
    limited.clock.advance(3600)
    try:
        blobs = Path(limited.config.data_dir) / "blobs"
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            limited.app[SCHEDULER].wake()
            stored = [p.relative_to(blobs) for p in blobs.rglob("*") if p.is_file()]
            files = [p for p in stored if p.parts[0] not in ("parts", "tmp")]
            if len(files) == 2:
                break
            assert asyncio.get_running_loop().time() < deadline, files
            await asyncio.sleep(0.1)
    finally:
        limited.clock.advance(-3600)


async def test_my_files_and_my_quota(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    ids = [(await api.upload(alice, os.urandom(1000 + i))).body["id"] for i in range(3)]
    await api.upload(bob, os.urandom(500))
    first = await api.get(MEDIA, token=alice.access_token, params={"limit": "2"})
    assert first.status == 200 and [m["id"] for m in first.body["items"]] == ids[:2]
    assert first.body["used_bytes"] == 3003 and first.body["quota_bytes"] == server.config.media.quota_bytes
    rest = await api.get(MEDIA, token=alice.access_token, params={"after": first.body["next_cursor"]})
    assert [m["id"] for m in rest.body["items"]] == ids[2:] and rest.body["next_cursor"] is None
    assert (await api.get(MEDIA, token=alice.access_token, params={"limit": "0"})).status == 422


async def test_files_of_deleted_messages_and_chats_are_cleaned_up(server: Server):
    api = server.api
    alice, bob = await api.register(), await api.register()
    chat = await channel_with(api, alice, bob)
    other = await channel_with(api, alice, bob)
    alone = (await api.upload(alice, os.urandom(700))).body
    shared = (await api.upload(alice, os.urandom(701))).body
    in_chat = (await api.upload(alice, os.urandom(702))).body
    message = (await attach(api, alice, chat, alone["id"])).body
    await attach(api, alice, chat, shared["id"])
    await attach(api, alice, other, shared["id"])  # also used in another chat
    await attach(api, alice, other, in_chat["id"])
    gone = await api.delete(f"/api/v1/messages/{message['id']}", token=alice.access_token)
    assert gone.status == 204
    assert (await api.delete(f"/api/v1/chats/{other}", token=alice.access_token)).status == 204

    hours = server.config.media.orphan_hours + 1
    server.clock.advance(hours * 3600)
    try:
        await server.app[SERVICES].media.cleanup()
    finally:
        server.clock.advance(-hours * 3600)
    status = {m["id"]: (await api.get(f"{MEDIA}/{m['id']}", token=alice.access_token)).status
              for m in (alone, shared, in_chat)}  # fmt: skip
    # alone: its only message deleted; in_chat: its chat deleted; shared: still in a message of `chat`
    assert status == {alone["id"]: 404, shared["id"]: 200, in_chat["id"]: 404}


async def test_two_processes_share_files_on_postgres_and_s3(fresh_postgres, moto_s3: MotoS3, tmp_path: Path):
    """The scale path: several processes, one Postgres, one S3 bucket; any process serves any file."""
    await require_postgres()
    database_url = await fresh_postgres.create()
    shared = {
        "SUP_SECRET_KEY": "media-tests-shared-secret-0123456789abcdef",
        **moto_s3.env(f"s3://sup-{uuid.uuid4().hex[:12]}/media"),
        "SUP_JOBS_POLL_INTERVAL_SECONDS": "0.5",
    }
    async with two_processes(tmp_path, database_url, **shared) as (api_a, api_b):
        alice, bob = await api_a.register(), await api_b.register()
        photo = samples.jpeg(640, 480, orientation=6) + os.urandom(8)
        media = (await api_a.upload(alice, photo)).body
        ready = await processed(api_b, alice, media["id"])  # processed by either, seen from both
        assert ready["status"] == "ready" and (ready["width"], ready["height"]) == (480, 640)
        chat = await channel_with(api_a, alice, bob)
        assert (await attach(api_a, alice, chat, media["id"])).status == 201
        status, served, _ = await download(api_b, bob, f"{MEDIA}/download/{media['id']}")
        assert status == 200 and served[:2] == b"\xff\xd8"
        assert (await download(api_a, bob, f"{MEDIA}/download/{media['id']}"))[1] == served
        # A resumable upload started on one process and finished on the other.
        started = await api_a.post(f"{MEDIA}/uploads", json={"size": 20}, token=alice.access_token)
        upload = started.body["upload_id"]
        assert (await api_b.put_chunk(alice, upload, 0, b"0123456789abcdefghij")).status == 200
        done = await api_a.post(f"{MEDIA}/uploads/{upload}/complete", token=alice.access_token)
        assert done.status == 201 and done.body["size"] == 20


async def test_a_file_is_declared_stuck_only_when_no_job_is_left_to_finish_it(server: Server):
    api = server.api
    alice = await api.register()
    waiting, lost = [(await api.upload(alice, png_bytes(20, 20, (i, 1, 2)))).body["id"] for i in (3, 4)]
    for media_id in (waiting, lost):
        await processed(api, alice, media_id)
    old = server.clock.now_ms() - 7 * 3_600_000
    await server.db.execute(
        "UPDATE media SET status = 'pending', created_at = $1 WHERE id IN ($2, $3)", old, waiting, lost
    )
    # `waiting` still has a queued job (due much later); `lost` has none left.
    media = server.app[SERVICES].media
    await server.app[SCHEDULER].enqueue(
        "media.process", waiting.encode(), dedupe_key=f"media:{waiting}", run_at=server.clock.now_ms() + 86_400_000
    )
    await media.cleanup()
    statuses = {m: (await api.get(f"{MEDIA}/{m}", token=alice.access_token)).body for m in (waiting, lost)}
    assert statuses[waiting]["status"] == "pending"
    assert statuses[lost]["status"] == "failed" and statuses[lost]["failure"] == "Processing did not finish."


async def test_someone_elses_failed_upload_looks_like_no_file_at_all(server: Server):
    """Naming another user's failed file (as a message's media, a sticker or an avatar) must not tell
    that it exists, nor why it failed."""
    api = server.api
    alice, mallory = await api.register(), await api.register()
    failed = (await api.upload(alice, samples.png_bomb(), filename="secret-plans.png")).body
    assert (await processed(api, alice, failed["id"]))["status"] == "failed"
    unknown = str(uuid.uuid4())
    chat = await plain_group(api, mallory)
    answers = []
    for media_id in (failed["id"], unknown):
        sent = await attach(api, mallory, chat, media_id)
        avatar = await api.patch(
            f"/api/v1/users/{mallory.user_id}", json={"avatar_media_id": media_id}, token=mallory.access_token
        )
        answers.append([(r.status, r.body.get("detail")) for r in (sent, avatar)])
    assert answers[0] == answers[1]  # the failed file and an id that never existed: the same answer
    assert "could not be processed" not in str(answers)
