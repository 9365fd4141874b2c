"""End-to-end encrypted attachments between real clients through a real server.

The sender encrypts each file under a fresh key and uploads an opaque blob; the key and
digest travel inside the encrypted message, so every recipient device gets the exact bytes
and the server (and its disk) only ever holds ciphertext.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sup.client.client import Attachment, Client, ClientError, ReceivedMessage
from sup.client.crypto import DecryptError
from sup.client.http import ApiError
from tests import media_samples as samples
from tests.conftest import Server
from tests.people import People, receive

MiB = 1024 * 1024


async def attachment_of(device: Client, sent: dict[str, Any]) -> Attachment:
    """The one attachment of the message `sent`, as the device received and decrypted it."""
    (got,) = await receive(device, 1)
    assert isinstance(got, ReceivedMessage), got
    assert got.message_id == sent["id"] and got.encrypted
    (attachment,) = got.attachments
    return attachment


def blob_files(server: Server) -> list[Path]:
    return [p for p in Path(server.config.data_dir, "blobs").rglob("*") if p.is_file()]


async def test_a_photo_in_an_encrypted_direct_chat(people: People, server: Server):
    alice, bob = await people.register(), await people.register()
    alice_tablet, bob_phone = await people.another_device(alice), await people.another_device(bob)
    eve = await people.register()
    chat = await alice.direct_chat(bob.user_id)
    photo = samples.jpeg(320, 240)

    sent = await alice.send_file(chat["id"], photo, name="holiday.jpg", mime="image/jpeg", text="look")
    assert sent["kind"] == "media" and sent["media_id"] and sent["body"] is None
    for device in (alice_tablet, bob, bob_phone):
        attachment = await attachment_of(device, sent)
        assert (attachment.media_id, attachment.name, attachment.mime) == (
            sent["media_id"],
            "holiday.jpg",
            "image/jpeg",
        )
        assert attachment.size == len(photo) and len(attachment.key) == 32
        assert await device.download(attachment) == photo

    # the server holds an opaque blob: no name, no type, not the photo, never processed
    media = await bob.http.media(sent["media_id"])
    assert media["encrypted"] is True and (media["kind"], media["mime"]) == ("file", "application/octet-stream")
    assert media["status"] == "ready" and media["thumbnail"] is False and "holiday" not in media["filename"]
    stored = await bob.http.download_media(sent["media_id"])
    assert len(stored) == media["size"] and hashlib.sha256(stored).hexdigest() == media["sha256"]
    assert stored != photo and photo[:64] not in stored and not stored.startswith(b"\xff\xd8")
    assert await bob.http.download_media(sent["media_id"], start=10, end=30) == stored[10:30]
    assert await bob.http.download_media(sent["media_id"], start=len(stored) - 5) == stored[-5:]
    with pytest.raises(ApiError) as no_thumbnail:
        await bob.http.media_thumbnail(sent["media_id"])
    assert no_thumbnail.value.code == "not_found"
    signed = await bob_phone.http.media_url(sent["media_id"])
    async with aiohttp.ClientSession() as anonymous, anonymous.get(signed["url"]) as response:
        assert response.status == 200 and await response.read() == stored

    # only the chat's members may fetch it
    with pytest.raises(ApiError) as hidden:
        await eve.http.download_media(sent["media_id"])
    assert hidden.value.status == 404

    # an encrypted chat refuses a plaintext upload, and a plaintext attachment
    plain = await alice.http.upload_media(photo, filename="leak.jpg")
    devices = {d.device_id: b"opaque" for d in (alice_tablet, bob, bob_phone)}
    with pytest.raises(ApiError) as refused:
        await alice.http.send_message(chat["id"], "c1", recipients=devices, kind="media", media_id=plain["id"])
    assert refused.value.status == 422 and refused.value.body["field"] == "media_id"
    with pytest.raises(ClientError, match="encrypted attachments only"):
        await alice.send(chat["id"], attachments=[Attachment(plain["id"], b"", b"", len(photo))])
    await alice.http.delete_media(plain["id"])
    with pytest.raises(ApiError):
        await alice.http.media(plain["id"])


async def test_a_photo_in_an_encrypted_group(people: People):
    members = [await people.register() for _ in range(4)]
    second = await people.another_device(members[2])
    owner = members[0]
    group = await owner.create_group("photos", [m.user_id for m in members[1:]])
    assert group["encrypted"] is True
    photo = samples.jpeg(200, 150, gps=False)

    sent = await owner.send_file(group["id"], photo, name="cat.jpg", mime="image/jpeg")
    for device in [*members[1:], second]:
        attachment = await attachment_of(device, sent)
        assert attachment.name == "cat.jpg" and await device.download(attachment) == photo

    # and back, from a member's second device (its own sender key goes out first)
    reply = os.urandom(5000)
    answered = await second.send_file(group["id"], reply, name="notes.bin")
    for device in members:
        assert await device.download(await attachment_of(device, answered)) == reply
    assert photo not in await owner.http.download_media(sent["media_id"])


async def test_a_swapped_or_damaged_blob_is_refused(people: People, server: Server):
    alice, bob = await people.register(), await people.register()
    chat = await alice.direct_chat(bob.user_id)
    photo = samples.jpeg(64, 64)
    sent = await alice.send_file(chat["id"], photo, name="a.jpg")
    attachment = await attachment_of(bob, sent)
    assert await bob.download(attachment) == photo

    # a wrong digest, a wrong key, a wrong size: each refused with the reason
    with pytest.raises(DecryptError, match="digest mismatch"):
        await bob.download(dataclasses.replace(attachment, digest=bytes(32)))
    with pytest.raises(DecryptError, match="authentication failed"):
        await bob.download(dataclasses.replace(attachment, key=bytes(32)))
    with pytest.raises(DecryptError, match="size mismatch"):
        await bob.download(dataclasses.replace(attachment, size=attachment.size + 1))

    # the storage changes one byte of the blob
    stored = await bob.http.download_media(sent["media_id"])
    (path,) = [p for p in blob_files(server) if p.stat().st_size == len(stored) and p.read_bytes() == stored]
    damaged = bytearray(stored)
    damaged[40] ^= 0x01
    path.write_bytes(bytes(damaged))
    with pytest.raises(DecryptError, match="digest mismatch"):
        await bob.download(attachment)
    # ... and a server that also rewrites the digest (it cannot: it travels encrypted) still fails the tag
    with pytest.raises(DecryptError, match="authentication failed"):
        await bob.download(dataclasses.replace(attachment, digest=hashlib.sha256(damaged).digest()))


async def test_a_large_attachment_goes_through_the_resumable_upload(people: People, server: Server, tmp_path):
    alice, bob = await people.register(), await people.register()
    chat = await alice.direct_chat(bob.user_id)
    data = os.urandom(20 * MiB)
    chunk = server.config.media.chunk_bytes
    puts: list[int] = []
    real_exchange = alice.http.exchange

    async def losing_one_answer(method: str, path: str, **kw: Any):
        if method == "PUT" and "/chunks/" in path:
            index = int(path.rsplit("/", 1)[1])
            puts.append(index)
            reply = await real_exchange(method, path, **kw)
            if index == 1 and puts.count(1) == 1:
                raise aiohttp.ServerDisconnectedError()  # the chunk arrived, its answer did not
            return reply
        return await real_exchange(method, path, **kw)

    alice.http.exchange = losing_one_answer  # type: ignore[method-assign]
    sent = await alice.send_file(chat["id"], data, name="big.bin")
    alice.http.exchange = real_exchange  # type: ignore[method-assign]
    chunks = -(-(len(data) + 30) // chunk)  # the blob is 30 bytes longer: header, nonce, tag
    assert chunks > 1 and sorted(puts) == list(range(chunks))  # chunk 1 was not sent again

    attachment = await attachment_of(bob, sent)
    assert attachment.size == len(data)
    assert await bob.download(attachment) == data
    media = await bob.http.media(sent["media_id"])
    assert media["size"] == len(data) + 30 and media["encrypted"] is True

    # an upload cut off by a restart resumes by its id, from a file on disk, sending only what is missing
    path = tmp_path / "resume.bin"
    path.write_bytes(data[: chunk + 1000])
    started = await alice.http.request(
        "POST", "/media/uploads", json={"size": chunk + 1000, "encrypted": True}, idempotent=False
    )
    await alice.http.exchange(
        "PUT", f"/media/uploads/{started['upload_id']}/chunks/0", body=data[:chunk], content_length=chunk
    )
    puts.clear()
    alice.http.exchange = losing_one_answer  # type: ignore[method-assign]
    resumed = await alice.http.upload_media_resumable(path, encrypted=True, upload_id=started["upload_id"])
    alice.http.exchange = real_exchange  # type: ignore[method-assign]
    assert puts == [1]  # not chunk 0, which had arrived; nor chunk 1 again, whose answer was lost
    assert await alice.http.download_media(resumed["id"]) == data[: chunk + 1000]

    # a small file from disk streams in one request
    small = tmp_path / "small.bin"
    small.write_bytes(data[:300_000])
    uploaded = await alice.http.upload_media(small, filename="small.bin")
    assert uploaded["size"] == 300_000 and uploaded["filename"] == "small.bin"
    assert await alice.http.download_media(uploaded["id"]) == data[:300_000]


async def test_a_file_in_a_plaintext_channel(people: People):
    alice, bob = await people.register(), await people.register()
    channel = await alice.http.create_channel("news", [bob.user_id])
    document = b"%PDF-1.4\n" + os.urandom(2000)
    sent = await alice.send_file(channel["id"], document, name="report.pdf", text="the report")
    assert sent["kind"] == "media" and sent["body"] == "the report"
    (got,) = await receive(bob, 1)
    assert isinstance(got, ReceivedMessage) and not got.encrypted and got.text == "the report"
    (attachment,) = got.attachments
    assert not attachment.encrypted and attachment.media_id == sent["media_id"]
    assert await bob.download(attachment) == document
