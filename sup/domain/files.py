"""Stored files: who may see which, how they are served, and how their blobs are released.

A file I cannot see does not exist for me (404, as for an unknown id). Others never get an
original that may carry location or device tags: only the clean copy processing made.
Blobs are shared by identical uploads, so one is deleted only when no file names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sup.blobs.store import BlobStore, content_disposition
from sup.clock import Clock
from sup.config import MediaConfig
from sup.db.database import Database, Row, from_row
from sup.db.media import BLOB_COLUMNS, MediaStore
from sup.errors import Code, DomainError
from sup.ids import is_uuid
from sup.jobs.scheduler import Scheduler
from sup.media.sniff import is_active_content

Purpose = Literal["attachment", "avatar", "sticker"]
Variant = Literal["original", "small", "large"]
RELEASE_JOB = "media.release-blobs"
# A released blob is deleted this much later, if still unused: an upload deduplicated onto it
# in the meantime (bytes stored, row not yet written) then keeps it.
RELEASE_DELAY_MS = 10 * 60 * 1000
FILENAME_MAX = 255
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


@dataclass(frozen=True, slots=True)
class Media:
    id: str
    owner_id: str
    purpose: str
    encrypted: bool
    kind: str
    mime: str
    filename: str
    size: int
    sha256: str
    status: str
    failure: str | None
    width: int | None
    height: int | None
    duration_ms: int | None
    placeholder: str | None
    waveform: list[int] | None
    video_codec: str | None
    audio_codec: str | None
    thumbnail: bool
    created_at: int


def media_from_row(row: Row) -> Media:
    info = json.loads(row["info"]) if row["info"] else {}
    return from_row(
        Media,
        row,
        encrypted=bool(row["encrypted"]),
        placeholder=info.get("placeholder"),
        waveform=info.get("waveform"),
        video_codec=info.get("video_codec"),
        audio_codec=info.get("audio_codec"),
        thumbnail=row["thumb_small_key"] is not None,
    )


@dataclass(frozen=True, slots=True)
class MediaPage:
    items: list[Media]
    next_cursor: str | None
    used_bytes: int  # files plus resumable uploads in progress
    quota_bytes: int  # 0: no quota


@dataclass(frozen=True, slots=True)
class Download:
    """One stored file to serve: the HTTP layer adds ranges, caching and safety headers."""

    key: str
    mime: str
    filename: str
    size: int
    etag: str
    inline: bool  # shown in the page (images, audio, video) rather than saved
    blobs: BlobStore

    def read(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end)."""
        return self.blobs.read_range(self.key, start, end)

    @property
    def disposition(self) -> str:
        """The Content-Disposition: shown in the page or saved, under its (safely quoted) name."""
        return content_disposition(self.filename, "inline" if self.inline else "attachment")


def clean_filename(name: str | None, fallback: str) -> str:
    """Only the last path component, without control or path characters: a name, never a path.

    Also without what could disguise it: format characters such as a right-to-left override
    (U+202E before "gpj.exe" shows it as "exe.jpg"), and undecodable bytes (lone surrogates).
    """
    name = (name or "").encode("utf-8", "replace").decode("utf-8")
    name = "".join(
        ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch) not in ("Cf", "Cc", "Cs")
    )
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE_NAME.sub("_", name).strip(" .")
    return name[:FILENAME_MAX] or fallback


class UrlSigner:
    """HMAC-signed, expiring download URLs for blobs on disk (S3 presigns its own)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def signature(self, media_id: str, variant: str, expires: int) -> str:
        message = f"{media_id}\n{variant}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def valid(self, media_id: str, variant: str, expires: int, signature: str, now_s: float) -> bool:
        expected = self.signature(media_id, variant, expires).encode()
        return expires >= now_s and hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


def not_found() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such file.")


@dataclass(slots=True, eq=False)
class MediaFiles:
    db: Database
    media: MediaStore
    blobs: BlobStore
    scheduler: Scheduler
    clock: Clock
    config: MediaConfig
    signer: UrlSigner

    def __post_init__(self) -> None:
        self.scheduler.register(RELEASE_JOB, self._release_job)

    # -- reading -----------------------------------------------------------------------------

    async def _visible(self, user_id: str, media_id: str) -> Row:
        """The file, if this user may see it; otherwise 404, as if it did not exist."""
        row = await self.media.get(self.db, media_id) if is_uuid(media_id) else None
        if row is None:
            raise not_found()
        if row["owner_id"] == user_id or row["purpose"] == "sticker":
            return row
        if await self.media.visible_through_message(self.db, media_id, user_id):
            return row
        if await self.media.visible_as_avatar(self.db, media_id, user_id):
            return row
        if await self.media.visible_through_story(self.db, media_id, user_id, self.clock.now_ms()) is not None:
            return row  # only while the story lives, and only to its audience
        raise not_found()

    async def _link_seconds(self, row: Row, user_id: str) -> int:
        """How long a signed URL may work: a file seen only through a story, no longer than the story."""
        ttl = self.config.signed_url_seconds
        media_id = row["id"]
        if (
            row["owner_id"] == user_id
            or row["purpose"] == "sticker"
            or await self.media.visible_through_message(self.db, media_id, user_id)
            or await self.media.visible_as_avatar(self.db, media_id, user_id)
        ):
            return ttl
        now = self.clock.now_ms()
        until = await self.media.visible_through_story(self.db, media_id, user_id, now)
        return ttl if until is None else max(1, min(ttl, (until - now) // 1000))

    async def list_mine(self, owner_id: str, after: str | None, limit: int) -> MediaPage:
        """My files, oldest first, and how much of my quota they use."""
        rows = await self.media.page(self.db, owner_id, after, limit + 1)
        items = [media_from_row(r) for r in rows[:limit]]
        return MediaPage(
            items=items,
            next_cursor=items[-1].id if len(rows) > limit else None,
            used_bytes=await self.media.used_bytes(self.db, owner_id),
            quota_bytes=self.config.quota_bytes,
        )

    async def get(self, user_id: str, media_id: str) -> Media:
        return media_from_row(await self._visible(user_id, media_id))

    async def download(self, user_id: str | None, media_id: str, variant: Variant) -> Download:
        """user_id None: the caller presented a valid signed URL instead of a token."""
        if user_id is None:
            row = await self.media.get(self.db, media_id) if is_uuid(media_id) else None
            if row is None:
                raise not_found()
        else:
            row = await self._visible(user_id, media_id)
        served = self._served(row, variant, user_id)
        if served.size < 0:  # a derived file: its size is the blob's
            served = dataclasses.replace(served, size=await self.blobs.size(served.key))
        return served

    def _served(self, row: Row, variant: Variant, user_id: str | None) -> Download:
        if variant != "original":
            key = row["thumb_small_key"] if variant == "small" else row["thumb_large_key"]
            if key is None:
                if row["status"] == "pending":
                    raise DomainError(Code.MEDIA_NOT_READY, "The thumbnail is still being made; try again shortly.")
                raise DomainError(Code.NOT_FOUND, "This file has no thumbnail.")
            name = Path(row["filename"]).stem + "." + row["thumb_mime"].split("/")[-1]
            return Download(key, row["thumb_mime"], name, -1, key, True, self.blobs)
        if row["encrypted"]:
            return Download(
                row["blob_key"],
                "application/octet-stream",
                row["filename"],
                row["size"],
                row["blob_key"],
                False,
                self.blobs,
            )
        processed_kind = row["kind"] in ("image", "video", "audio")
        if processed_kind and row["served_key"] is None and user_id != row["owner_id"]:
            # Others never get an original that may carry EXIF/GPS or location tags: only a clean copy.
            if row["status"] == "pending":
                raise DomainError(Code.MEDIA_NOT_READY, "The file is still being processed; try again shortly.")
            if row["status"] == "failed" or (row["kind"] == "image" and row["thumb_large_key"] is None):
                raise DomainError(Code.MEDIA_FAILED, f"The file could not be processed: {row['failure']}")
            if row["kind"] == "image":  # formats without a re-encoded copy (GIF, animated AVIF): the largest thumbnail
                name = Path(row["filename"]).stem + "." + row["thumb_mime"].split("/")[-1]
                key = row["thumb_large_key"]
                return Download(key, row["thumb_mime"], name, -1, key, True, self.blobs)
        if row["served_key"] is not None:
            return Download(
                row["served_key"], row["served_mime"], row["filename"], -1, row["served_key"], True, self.blobs
            )
        inline = row["kind"] in ("image", "video", "audio") and not is_active_content(row["mime"])
        return Download(row["blob_key"], row["mime"], row["filename"], row["size"], row["blob_key"], inline, self.blobs)

    async def signed_url(self, user_id: str, media_id: str, variant: Variant, base_url: str) -> tuple[str, int]:
        """A URL that works without a token until it expires (for <img> and <video> tags)."""
        row = await self._visible(user_id, media_id)
        served = self._served(row, variant, user_id)
        ttl = await self._link_seconds(row, user_id)
        expires = int(self.clock.now()) + ttl
        presigned = await self.blobs.signed_url(
            served.key, expires_in=ttl, filename=served.filename, content_type=served.mime
        )
        if presigned is not None:
            return presigned, expires
        signature = self.signer.signature(media_id, variant, expires)
        query = f"variant={variant}&expires={expires}&signature={signature}"
        return f"{base_url}/api/v1/media/download/{media_id}?{query}", expires

    def signature_valid(self, media_id: str, variant: str, expires: int, signature: str) -> bool:
        return self.signer.valid(media_id, variant, expires, signature, self.clock.now())

    async def direct_origin(self) -> str | None:
        """The origin (`scheme://host[:port]`) signed URLs point at when the blob store serves files itself
        (S3's presigned URLs), or None when SUP serves them: a web page must allow it for images and video."""
        url = await self.blobs.signed_url("0" * 32, expires_in=60, filename="origin", content_type="image/png")
        if url is None:
            return None
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    # -- deleting ----------------------------------------------------------------------------

    async def delete(self, user_id: str, media_id: str) -> None:
        row = await self.media.get(self.db, media_id) if is_uuid(media_id) else None
        if row is None or row["owner_id"] != user_id:
            raise not_found()
        async with self.db.transaction() as tx:
            gone = await self.media.delete(tx, media_id)
        if gone is not None:
            await self.release([gone[c] for c in BLOB_COLUMNS if gone[c] is not None])

    async def release(self, keys: Sequence[str]) -> None:
        """Delete these blobs a little later, each only if no file names it by then."""
        if keys:
            await self.scheduler.enqueue(
                RELEASE_JOB, json.dumps(sorted(set(keys))).encode(), run_at=self.clock.now_ms() + RELEASE_DELAY_MS
            )

    async def _release_job(self, payload: bytes) -> None:
        for key in json.loads(payload):
            if not await self.media.blob_in_use(self.db, key):
                await self.blobs.delete(key)

    async def remove_orphans(self) -> None:
        """Uploads that no message, avatar or sticker took within `media.orphan_hours`."""
        older_than = self.clock.now_ms() - self.config.orphan_hours * 3_600_000
        for row in await self.media.orphans(self.db, older_than, 1000):
            async with self.db.transaction() as tx:
                gone = await self.media.delete(tx, row["id"])
            if gone is not None:
                await self.release([gone[c] for c in BLOB_COLUMNS if gone[c] is not None])
