"""The blob store: file contents, content addressed, on local disk or S3.

A blob's key is the hex SHA-256 of its bytes, so an identical upload is stored once and
a key can never point at different contents. Writes are all-or-nothing: a stream that
fails, is cancelled or grows past its limit leaves nothing behind, and a reader never
sees half a blob.

Resumable uploads arrive as numbered parts (any order, each replaceable) under an
upload id the caller generates; `complete_parts` streams them in order into one blob.

The backend is chosen by URL scheme: `file:///path` (the default, `<data_dir>/blobs`)
or `s3://bucket/optional/prefix` (needs the s3 extra). Which blobs are still referenced
is the database's business; this layer only stores bytes.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote, unquote, urlsplit

import msgspec

MiB = 1024 * 1024

# Keys are hex digests and upload ids are UUIDs: a strict alphabet means neither can ever
# name a path outside the store (no `/`, no `.`), on disk or as an S3 key.
_ID = re.compile(r"[0-9a-f-]{1,64}")
# Parts are numbered densely from 0; the bound keeps part file names fixed-width.
MAX_PARTS = 100_000
# How much a reader gets at a time, from a file or an S3 response.
READ_CHUNK = 256 * 1024


def part_name(index: int) -> str:
    """A part's file name or key suffix: fixed-width, so listing order is index order."""
    return f"{index:05d}"


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """`data` as a stream of one chunk: `put_bytes` is `put_stream` of it."""
    yield data


async def file_chunks(path: str | os.PathLike[str], size: int = MiB) -> AsyncIterator[bytes]:
    """A local file as a stream for `put_stream`: opened, read `size` bytes at a time and closed off the event loop."""
    reader = await asyncio.to_thread(open, path, "rb")
    try:
        while chunk := await asyncio.to_thread(reader.read, size):
            yield chunk
    finally:
        await asyncio.to_thread(reader.close)


class BlobError(Exception):
    """The blob store could not do what was asked."""


class BlobNotFound(BlobError):
    """No blob (or no upload) with that key."""


class BlobTooLarge(BlobError):
    """A stream grew past its `max_size`; nothing of it was kept."""

    def __init__(self, max_size: int) -> None:
        super().__init__(f"larger than the limit of {max_size} bytes")
        self.max_size = max_size


class InvalidBlobId(BlobError, ValueError):
    """A key, upload id or part index is malformed (and might escape the store)."""


class MissingParts(BlobError):
    """`complete_parts` was asked to assemble parts that were never stored."""

    def __init__(self, upload_id: str, missing: list[int]) -> None:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        super().__init__(f"upload {upload_id}: {len(missing)} part(s) missing: {shown}")
        self.upload_id = upload_id
        self.missing = missing


@dataclass(frozen=True, slots=True)
class StoredBlob:
    key: str
    size: int
    sha256: str


class BlobStore(Protocol):
    """What both backends implement. Every method may raise InvalidBlobId for a bad key or id."""

    async def put_stream(self, chunks: AsyncIterable[bytes], *, max_size: int | None = None) -> StoredBlob:
        """Store a stream as a blob; BlobTooLarge as soon as it passes max_size; on any failure keep nothing."""

    async def put_bytes(self, data: bytes) -> StoredBlob:
        """Store a small blob held in memory (e.g. a generated thumbnail)."""

    async def size(self, key: str) -> int:
        """The blob's size in bytes; BlobNotFound if there is none."""

    async def exists(self, key: str) -> bool:
        """Whether the blob is stored."""

    def read_range(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) of the blob, end exclusive (None: to the end), in bounded chunks.

        An end past the blob is clamped, as is a start past it (nothing is yielded).
        BlobNotFound is raised on the first iteration.
        """

    async def read_all(self, key: str) -> bytes:
        """The whole blob in memory: only for small ones (thumbnails, avatars)."""

    async def delete(self, key: str) -> None:
        """Remove the blob; deleting a missing blob is not an error."""

    async def put_part(self, upload_id: str, index: int, chunks: AsyncIterable[bytes], *, max_size: int) -> int:
        """Store part `index` of an upload atomically, replacing an earlier one; return its size."""

    async def list_parts(self, upload_id: str) -> dict[int, int]:
        """Stored parts of an upload: index to size (empty for an unknown upload)."""

    async def complete_parts(self, upload_id: str, count: int, *, max_size: int | None = None) -> StoredBlob:
        """Assemble parts 0..count-1 in order into a blob, then drop the parts; MissingParts if any is absent."""

    async def abort_parts(self, upload_id: str) -> None:
        """Drop every part of an upload (idempotent)."""

    async def stale_parts(self, older_than_epoch_seconds: float) -> list[str]:
        """Upload ids whose parts were all last written before the given time (for periodic cleanup)."""

    async def signed_url(self, key: str, *, expires_in: int, filename: str, content_type: str) -> str | None:
        """A URL a client can GET the blob from directly, or None when the HTTP layer must serve it."""

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""


class BlobSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The `[blobs]` settings (the config module mirrors these)."""

    url: str = ""  # file:///path, s3://bucket/prefix; empty: file://<data_dir>/blobs
    s3_endpoint_url: str = ""  # empty: AWS; set for MinIO, Ceph, R2, ...
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""  # empty: botocore's usual chain (env, profile, instance role)
    s3_secret_access_key: str = ""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_create_bucket: bool = False
    s3_part_size: int = 8 * MiB  # S3 refuses parts under 5 MiB (except the last)


async def open_blob_store(settings: BlobSettings, *, data_dir: str | Path = ".") -> BlobStore:
    """Open the backend named by the URL scheme."""
    url = settings.url or default_url(data_dir)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise BlobError(f"blobs.url: settings go in their own keys, not in the URL (got {url!r})")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BlobError(f"blobs.url: a file URL has no host, use file:///absolute/path (got {url!r})")
        from sup.blobs.disk import DiskBlobStore

        return await DiskBlobStore.open(Path(unquote(parts.path)))
    if parts.scheme == "s3":
        if not parts.netloc:
            raise BlobError(f"blobs.url: name the bucket, s3://bucket/optional/prefix (got {url!r})")
        if settings.s3_part_size < 5 * MiB:
            raise BlobError("blobs.s3_part_size: S3 needs at least 5 MiB per part")
        try:
            from sup.blobs.s3 import S3BlobStore
        except ImportError as exc:
            raise BlobError("S3 blob storage needs aiobotocore: pip install 'sup-messenger[s3]'") from exc
        prefix = parts.path.strip("/")
        return await S3BlobStore.open(
            bucket=parts.netloc,
            prefix=f"{prefix}/" if prefix else "",
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key or None,
            addressing_style=settings.s3_addressing_style,
            create_bucket=settings.s3_create_bucket,
            part_size=settings.s3_part_size,
        )
    raise BlobError(f"blobs.url: unsupported scheme {parts.scheme!r}; use file:// or s3://")


def default_url(data_dir: str | Path) -> str:
    """Where blobs go when no URL is set: `<data_dir>/blobs`."""
    return Path(os.path.abspath(data_dir), "blobs").as_uri()


def check_id(value: str, what: str = "key") -> str:
    """Return `value` if it is a well-formed key or upload id, else raise InvalidBlobId."""
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise InvalidBlobId(f"invalid {what}: {value!r:.80}")
    return value


def check_index(index: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < MAX_PARTS:
        raise InvalidBlobId(f"invalid part index: {index!r} (0 to {MAX_PARTS - 1})")
    return index


def check_count(count: int) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PARTS:
        raise InvalidBlobId(f"invalid part count: {count!r} (1 to {MAX_PARTS})")
    return count


async def part_sizes(store: BlobStore, upload_id: str, count: int) -> list[int]:
    """The sizes of parts 0 to count - 1 of an upload, for completing it; MissingParts names any not there."""
    check_count(count)
    stored = await store.list_parts(upload_id)
    missing = [i for i in range(count) if i not in stored]
    if missing:
        raise MissingParts(upload_id, missing)
    return [stored[i] for i in range(count)]


def check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end < start):
        raise ValueError(f"invalid byte range [{start}, {end})")


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """`attachment` (or `inline`) with the name in RFC 6266 form, plus a plain-ASCII fallback for old clients."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in filename) or "download"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"
