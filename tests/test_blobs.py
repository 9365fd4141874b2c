"""One behavioural suite for the blob store, run against local disk and against S3 (moto's server)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from sup.blobs.disk import DiskBlobStore
from sup.blobs.s3 import S3BlobStore
from sup.blobs.store import (
    MAX_PARTS,
    BlobError,
    BlobNotFound,
    BlobSettings,
    BlobStore,
    BlobTooLarge,
    InvalidBlobId,
    MissingParts,
    open_blob_store,
)
from tests.s3server import ACCESS_KEY, REGION, SECRET_KEY, MotoS3

MiB = 1024 * 1024


def s3_settings(moto: MotoS3, bucket: str, **extra) -> BlobSettings:
    return BlobSettings(
        url=f"s3://{bucket}/sup/test",
        s3_endpoint_url=moto.endpoint_url,
        s3_region=REGION,
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        s3_addressing_style="path",
        **extra,
    )


@pytest.fixture(params=["disk", "s3"])
async def store(request, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "disk":
        opened = await open_blob_store(BlobSettings(), data_dir=tmp_path)
    else:
        moto = request.getfixturevalue("moto_s3")
        bucket = f"sup-test-{uuid.uuid4().hex[:12]}"
        opened = await open_blob_store(s3_settings(moto, bucket, s3_create_bucket=True))
    try:
        yield opened
    finally:
        await opened.close()


async def leftovers(store: BlobStore) -> list[str]:
    """Everything the store holds: files on disk; objects and unfinished multipart uploads in S3."""
    if isinstance(store, DiskBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3BlobStore)
    client = store._client
    keys = []
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
        keys += [item["Key"] for item in page.get("Contents", [])]
    uploads = await client.list_multipart_uploads(Bucket=store.bucket)
    keys += [f"unfinished multipart upload of {u['Key']}" for u in uploads.get("Uploads", [])]
    return sorted(keys)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def stream(data: bytes, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk):
        yield data[start : start + chunk]


def mib_chunk(index: int) -> bytes:
    """A MiB of random-looking bytes, the same every time for the same index."""
    return random.Random(index).randbytes(MiB)


async def lazy_mibs(count: int) -> AsyncIterator[bytes]:
    for index in range(count):
        yield mib_chunk(index)
        await asyncio.sleep(0)


async def read(store: BlobStore, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read_range(key, start, end)])


async def each_raises(error: type[Exception], *attempts: Callable[[], Awaitable[object]]) -> None:
    """Every attempt on its own: one that raises must not hide another that does not."""
    for attempt in attempts:
        with pytest.raises(error):
            await attempt()


# -- storing and reading


async def test_put_read_size_exists_delete(store: BlobStore) -> None:
    data = b"hello, blob" * 1000
    blob = await store.put_stream(stream(data, 1000))
    assert blob.key == blob.sha256 == sha(data)
    assert blob.size == len(data)
    assert await store.exists(blob.key)
    assert await store.size(blob.key) == len(data)
    assert await store.read_all(blob.key) == data
    assert await read(store, blob.key) == data

    await store.delete(blob.key)
    assert not await store.exists(blob.key)
    await store.delete(blob.key)  # idempotent
    assert await leftovers(store) == []


async def test_put_bytes_and_empty_blob(store: BlobStore) -> None:
    thumb = await store.put_bytes(b"\x89PNG tiny")
    assert await store.read_all(thumb.key) == b"\x89PNG tiny"
    empty = await store.put_bytes(b"")
    assert (empty.key, empty.size) == (sha(b""), 0)
    assert await store.read_all(empty.key) == b""
    assert await read(store, empty.key) == b""


async def test_missing_blob(store: BlobStore) -> None:
    key = sha(b"never stored")
    assert not await store.exists(key)
    await each_raises(
        BlobNotFound,
        lambda: store.size(key),
        lambda: store.read_all(key),
        lambda: read(store, key),
        lambda: read(store, key, 5, 5),
    )
    await store.delete(key)


async def test_identical_content_is_stored_once(store: BlobStore) -> None:
    data = b"same bytes" * 5000
    first = await store.put_stream(stream(data, 777))
    second = await store.put_bytes(data)
    assert first == second
    assert len(await leftovers(store)) == 1


async def test_identical_large_content_is_stored_once(store: BlobStore) -> None:
    first = await store.put_stream(lazy_mibs(9))
    second = await store.put_stream(lazy_mibs(9))
    assert first == second
    assert len(await leftovers(store)) == 1


RANGE_DATA = bytes(range(256)) * 4  # 1024 bytes


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(0, 1, id="first byte"),
        pytest.param(500, 501, id="middle byte"),
        pytest.param(1023, 1024, id="last byte"),
        pytest.param(100, 900, id="middle"),
        pytest.param(1000, None, id="open-ended"),
        pytest.param(0, None, id="whole"),
        pytest.param(0, 1024, id="whole, explicit end"),
        pytest.param(1000, 5000, id="end past the blob"),
        pytest.param(1024, None, id="start at the end"),
        pytest.param(4000, None, id="start past the end"),
        pytest.param(7, 7, id="empty"),
    ],
)
async def test_range_reads(store: BlobStore, start: int, end: int | None) -> None:
    blob = await store.put_bytes(RANGE_DATA)
    assert await read(store, blob.key, start, end) == RANGE_DATA[start:end]


async def test_range_reads_stream_in_bounded_chunks(store: BlobStore) -> None:
    blob = await store.put_stream(lazy_mibs(3))
    chunks = [chunk async for chunk in store.read_range(blob.key, 1, 3 * MiB - 1)]
    assert len(chunks) > 3
    assert max(map(len, chunks)) <= MiB
    assert b"".join(chunks) == b"".join(mib_chunk(i) for i in range(3))[1:-1]


async def test_invalid_range(store: BlobStore) -> None:
    blob = await store.put_bytes(b"abc")
    with pytest.raises(ValueError):
        await read(store, blob.key, -1, None)
    with pytest.raises(ValueError):
        await read(store, blob.key, 2, 1)


async def test_large_stream(store: BlobStore) -> None:
    """40 MiB made lazily: several S3 parts plus a short last one, hashed on the way."""
    count = 40

    def expected_hash() -> str:
        hasher = hashlib.sha256()
        for index in range(count):
            hasher.update(mib_chunk(index))
        return hasher.hexdigest()

    expected = await asyncio.to_thread(expected_hash)
    blob = await store.put_stream(lazy_mibs(count), max_size=count * MiB)
    assert blob.sha256 == expected
    assert blob.size == await store.size(blob.key) == count * MiB
    # Across the boundary of the first 8 MiB part: the parts were joined in order.
    got = await read(store, blob.key, 8 * MiB - 10, 8 * MiB + 10)
    assert got == mib_chunk(7)[-10:] + mib_chunk(8)[:10]
    assert await read(store, blob.key, count * MiB - 3) == mib_chunk(count - 1)[-3:]
    assert len(await leftovers(store)) == 1


async def test_s3_copy_of_a_large_temporary_object_is_multipart(store: BlobStore) -> None:
    if not isinstance(store, S3BlobStore):
        pytest.skip("S3 only: CopyObject stops at 5 GiB")
    store.copy_limit = 10 * MiB
    store.copy_part_size = 5 * MiB
    data = b"".join(mib_chunk(i) for i in range(12))
    blob = await store.put_stream(stream(data, MiB))
    assert blob.sha256 == sha(data)
    assert await store.read_all(blob.key) == data
    assert len(await leftovers(store)) == 1


# -- nothing left behind


@pytest.mark.parametrize("megabytes", [0, 12], ids=["small", "multipart"])
async def test_too_large_keeps_nothing(store: BlobStore, megabytes: int) -> None:
    consumed = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal consumed
        for index in range(100):
            consumed += 1
            yield mib_chunk(index) if megabytes else b"x" * 10

    limit = megabytes * MiB - 1 if megabytes else 55
    with pytest.raises(BlobTooLarge) as raised:
        await store.put_stream(chunks(), max_size=limit)
    assert raised.value.max_size == limit
    assert consumed == (megabytes or 6)  # stopped at the chunk that crossed the limit, not at the end
    assert await leftovers(store) == []


async def test_exactly_max_size_is_allowed(store: BlobStore) -> None:
    blob = await store.put_stream(stream(b"x" * 100, 30), max_size=100)
    assert blob.size == 100


@pytest.mark.parametrize("megabytes", [1, 9], ids=["small", "multipart"])
async def test_failing_stream_keeps_nothing(store: BlobStore, megabytes: int) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in lazy_mibs(megabytes):
            yield chunk
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(chunks())
    assert await leftovers(store) == []


@pytest.mark.parametrize("megabytes", [1, 9], ids=["small", "multipart"])
async def test_cancelled_stream_keeps_nothing(store: BlobStore, megabytes: int) -> None:
    halfway = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in lazy_mibs(megabytes):
            yield chunk
        halfway.set()
        await asyncio.Event().wait()
        yield b"never"

    task = asyncio.create_task(store.put_stream(chunks()))
    await asyncio.wait_for(halfway.wait(), 30)
    if isinstance(store, S3BlobStore) and megabytes > 8:
        assert await leftovers(store), "a multipart upload should be under way"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await leftovers(store) == []


async def test_cancelled_part_keeps_the_previous_copy(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    await store.put_part(upload, 0, stream(b"old"), max_size=MiB)
    started = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"new"
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(store.put_part(upload, 0, chunks(), max_size=MiB))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await store.list_parts(upload) == {0: 3}
    assert (await store.complete_parts(upload, 1)).sha256 == sha(b"old")


# -- resumable uploads


async def test_parts_in_any_order(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    pieces = [b"a" * 1000, b"b" * 10, mib_chunk(0) + mib_chunk(1)]
    for index in (2, 0, 1):
        size = await store.put_part(upload, index, stream(pieces[index], 4096), max_size=4 * MiB)
        assert size == len(pieces[index])
    assert await store.list_parts(upload) == {0: 1000, 1: 10, 2: 2 * MiB}

    blob = await store.complete_parts(upload, 3, max_size=10 * MiB)
    whole = b"".join(pieces)
    assert (blob.key, blob.size) == (sha(whole), len(whole))
    assert await store.read_all(blob.key) == whole
    assert await store.list_parts(upload) == {}
    assert len(await leftovers(store)) == 1


async def test_parts_assembled_past_one_s3_part(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    for index in range(3):
        await store.put_part(upload, index, lazy_mibs(4), max_size=4 * MiB)
    blob = await store.complete_parts(upload, 3)
    assert blob.sha256 == sha(b"".join(mib_chunk(i) for i in range(4)) * 3)
    assert len(await leftovers(store)) == 1


async def test_large_parts_are_joined_in_place_on_s3(store: BlobStore, monkeypatch) -> None:
    """Parts of at least 5 MiB: S3 joins them itself (UploadPartCopy); disk joins them as always."""
    upload = str(uuid.uuid4())
    pieces = [os.urandom(5 * MiB), os.urandom(6 * MiB), b"tail"]
    for index in (1, 2, 0):
        await store.put_part(upload, index, stream(pieces[index], MiB), max_size=8 * MiB)
    if isinstance(store, S3BlobStore):

        async def no_streaming(*args, **kwargs):
            raise AssertionError("the parts went through SUP instead of being copied inside S3")

        monkeypatch.setattr(store, "put_stream", no_streaming)
    blob = await store.complete_parts(upload, 3)
    monkeypatch.undo()
    whole = b"".join(pieces)
    assert (blob.key, blob.size) == (sha(whole), len(whole))
    assert await store.read_all(blob.key) == whole
    assert await store.list_parts(upload) == {}
    assert len(await leftovers(store)) == 1
    again = str(uuid.uuid4())  # the same content again: found by its hash, nothing copied twice
    for index, piece in enumerate(pieces):
        await store.put_part(again, index, stream(piece, MiB), max_size=8 * MiB)
    assert (await store.complete_parts(again, 3)).key == blob.key
    assert len(await leftovers(store)) == 1


async def test_a_part_swapped_while_joining_cannot_poison_a_hash_on_s3(store: BlobStore, monkeypatch) -> None:
    """The content stored under a hash is always the content hashed: others are deduplicated onto it."""
    if not isinstance(store, S3BlobStore):
        pytest.skip("S3 only: the in-place join")
    upload = str(uuid.uuid4())
    for index in range(2):
        await store.put_part(upload, index, stream(os.urandom(5 * MiB), MiB), max_size=8 * MiB)
    reading = store._read_parts

    async def read_then_swap(*args, **kwargs):
        async for chunk in reading(*args, **kwargs):
            yield chunk
        await store.put_part(upload, 1, stream(b"evil" * MiB, MiB), max_size=8 * MiB)

    monkeypatch.setattr(store, "_read_parts", read_then_swap)
    streamed = []
    put_stream = store.put_stream

    async def counted(*args, **kwargs):
        streamed.append(1)
        return await put_stream(*args, **kwargs)

    monkeypatch.setattr(store, "put_stream", counted)
    blob = await store.complete_parts(upload, 2)
    assert streamed == [1]  # the in-place join noticed the swap and gave way to streaming
    assert sha(await store.read_all(blob.key)) == blob.key  # stored under the hash of what it holds
    assert not [k for k in await leftovers(store) if "unfinished" in k]


async def test_reputting_a_part_replaces_it(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    await store.put_part(upload, 0, stream(b"first"), max_size=100)
    await store.put_part(upload, 1, stream(b"dropped connection, partial"), max_size=100)
    await store.put_part(upload, 1, stream(b"second"), max_size=100)
    assert await store.list_parts(upload) == {0: 5, 1: 6}
    blob = await store.complete_parts(upload, 2)
    assert await store.read_all(blob.key) == b"firstsecond"


async def test_complete_with_a_missing_part(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    await store.put_part(upload, 0, stream(b"zero"), max_size=100)
    await store.put_part(upload, 2, stream(b"two"), max_size=100)
    with pytest.raises(MissingParts) as raised:
        await store.complete_parts(upload, 3)
    assert raised.value.missing == [1]
    assert "1" in str(raised.value)
    # The client can still send the missing part and finish.
    assert await store.list_parts(upload) == {0: 4, 2: 3}
    await store.put_part(upload, 1, stream(b"one"), max_size=100)
    assert await store.read_all((await store.complete_parts(upload, 3)).key) == b"zeroonetwo"


async def test_complete_of_an_unknown_upload(store: BlobStore) -> None:
    with pytest.raises(MissingParts) as raised:
        await store.complete_parts(str(uuid.uuid4()), 2)
    assert raised.value.missing == [0, 1]


async def test_part_too_large(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    with pytest.raises(BlobTooLarge):
        await store.put_part(upload, 0, stream(b"x" * 101, 10), max_size=100)
    assert await store.list_parts(upload) == {}
    assert await leftovers(store) == []


async def test_assembled_blob_too_large_keeps_the_parts(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    for index in range(3):
        await store.put_part(upload, index, stream(b"x" * 50), max_size=100)
    with pytest.raises(BlobTooLarge):
        await store.complete_parts(upload, 3, max_size=120)
    assert await store.list_parts(upload) == {0: 50, 1: 50, 2: 50}
    assert len(await leftovers(store)) == 3


async def test_abort(store: BlobStore) -> None:
    upload = str(uuid.uuid4())
    for index in range(3):
        await store.put_part(upload, index, stream(b"part"), max_size=100)
    await store.abort_parts(upload)
    assert await store.list_parts(upload) == {}
    assert await leftovers(store) == []
    await store.abort_parts(upload)  # idempotent
    await store.abort_parts(str(uuid.uuid4()))


async def test_stale_parts(store: BlobStore) -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    await store.put_part(old, 0, stream(b"old"), max_size=100)
    # S3 keeps LastModified to the second: leave a full second on either side of the cutoff.
    await asyncio.sleep(1.1)
    cutoff = time.time()
    await asyncio.sleep(1.1)
    await store.put_part(new, 0, stream(b"new"), max_size=100)
    assert await store.stale_parts(cutoff) == [old]
    assert await store.stale_parts(time.time() - 3600) == []
    assert sorted(await store.stale_parts(time.time() + 60)) == sorted([old, new])
    # An old upload that just received a part is not stale.
    await store.put_part(old, 1, stream(b"late"), max_size=100)
    assert await store.stale_parts(cutoff) == []


# -- validation


BAD_IDS = ["../x", "", "a" * 65, "..", "ab/cd", "ABCDEF", "abc\x00", "abc\n", " abc", "%2e%2e"]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_invalid_keys_and_upload_ids(store: BlobStore, bad: str) -> None:
    await each_raises(
        InvalidBlobId,
        lambda: store.size(bad),
        lambda: store.exists(bad),
        lambda: store.read_all(bad),
        lambda: read(store, bad),
        lambda: store.delete(bad),
        lambda: store.signed_url(bad, expires_in=60, filename="x", content_type="text/plain"),
        lambda: store.put_part(bad, 0, stream(b"x"), max_size=10),
        lambda: store.list_parts(bad),
        lambda: store.complete_parts(bad, 1),
        lambda: store.abort_parts(bad),
    )
    assert await leftovers(store) == []


@pytest.mark.parametrize("index", [-1, MAX_PARTS, True])
async def test_invalid_part_index(store: BlobStore, index: int) -> None:
    with pytest.raises(InvalidBlobId):
        await store.put_part(str(uuid.uuid4()), index, stream(b"x"), max_size=10)


@pytest.mark.parametrize("count", [0, -1, MAX_PARTS + 1])
async def test_invalid_part_count(store: BlobStore, count: int) -> None:
    with pytest.raises(InvalidBlobId):
        await store.complete_parts(str(uuid.uuid4()), count)


# -- signed URLs


async def test_signed_url(store: BlobStore) -> None:
    data = b"%PDF-1.7 pretend" * 100
    blob = await store.put_bytes(data)
    filename = 'Résumé "2024"; final.pdf'
    url = await store.signed_url(blob.key, expires_in=300, filename=filename, content_type="application/pdf")
    if isinstance(store, DiskBlobStore):
        assert url is None
        return
    assert url is not None
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        assert await response.read() == data
        assert response.headers["Content-Type"] == "application/pdf"
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert "filename*=UTF-8''" + quote(filename, safe="") in disposition
    assert 'filename="R_sum_ _2024_; final.pdf"' in disposition  # ASCII fallback for old clients


# -- opening


async def test_default_location_is_under_the_data_dir(tmp_path: Path) -> None:
    store = await open_blob_store(BlobSettings(), data_dir=tmp_path / "data")
    try:
        assert isinstance(store, DiskBlobStore)
        assert store.root == (tmp_path / "data" / "blobs").resolve()
        assert store.root.stat().st_mode & 0o777 == 0o700
        blob = await store.put_bytes(b"x")
        assert (store.root / blob.key[:2] / blob.key[2:4] / blob.key).read_bytes() == b"x"
    finally:
        await store.close()


async def test_abandoned_temp_files_are_swept_at_open(tmp_path: Path) -> None:
    tmp = tmp_path / "blobs" / "tmp"
    tmp.mkdir(parents=True)
    (tmp / "old.tmp").write_bytes(b"crashed mid-write")
    (tmp / "fresh.tmp").write_bytes(b"another process, writing now")
    long_ago = time.time() - 86400
    os.utime(tmp / "old.tmp", (long_ago, long_ago))
    store = await open_blob_store(BlobSettings(url=(tmp_path / "blobs").as_uri()))
    await store.close()
    assert sorted(p.name for p in tmp.iterdir()) == ["fresh.tmp"]


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "file://somehost/blobs", "s3:///no-bucket", "s3://bucket?prefix"]
)
async def test_bad_urls(url: str) -> None:
    with pytest.raises(BlobError):
        await open_blob_store(BlobSettings(url=url))


async def test_s3_missing_bucket_fails_at_open(moto_s3: MotoS3) -> None:
    with pytest.raises(BlobError, match="not usable"):
        await open_blob_store(s3_settings(moto_s3, f"absent-{uuid.uuid4().hex[:8]}"))


async def test_s3_part_size_below_the_s3_minimum(moto_s3: MotoS3) -> None:
    with pytest.raises(BlobError, match="5 MiB"):
        await open_blob_store(s3_settings(moto_s3, "any", s3_part_size=MiB))
