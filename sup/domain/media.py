"""Media: uploads (whole or in resumable chunks), who may download what, processing, cleanup.

Bytes stream straight into the blob store; the type is sniffed from the first bytes and
the size limit for that type applies from then on, so an oversized upload stops as soon
as it passes the limit, with nothing left behind. Processing (thumbnails, probing,
waveforms) runs as durable jobs; FFmpeg only ever parses in a limited child process.
Client-encrypted files are opaque: stored and served as they came, never processed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import math
import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sup.blobs.store import MAX_PARTS, BlobNotFound, BlobStore, BlobTooLarge, MissingParts, StoredBlob
from sup.bus.ratelimit import RateLimiter
from sup.clock import Clock
from sup.config import MediaConfig
from sup.db.accounts import DeviceStore
from sup.db.database import Database, Queryable, Row
from sup.db.media import BLOB_COLUMNS, PROCESSED_COLUMNS, MediaStore
from sup.domain.events import Announcer, EventWriter, encode
from sup.errors import Code, DomainError, RateLimited
from sup.ids import is_uuid, uuid7
from sup.jobs.scheduler import Scheduler
from sup.media import MediaError
from sup.media.av_probe import probe_media
from sup.media.image_child import ImageResult, process_image_isolated
from sup.media.limits import SNIFF_BYTES
from sup.media.sniff import OCTET_STREAM, Sniffed, is_active_content, sniff

log = logging.getLogger("sup.media")

Purpose = Literal["attachment", "avatar", "sticker"]
Variant = Literal["original", "small", "large"]
PROCESS_JOB = "media.process"
RELEASE_JOB = "media.release-blobs"
PROCESS_KEY_PREFIX = "media:"  # + media id: a file is queued for processing once
# A released blob is deleted this much later, if still unused: an upload deduplicated onto it
# in the meantime (bytes stored, row not yet written) then keeps it.
RELEASE_DELAY_MS = 10 * 60 * 1000
FILENAME_MAX = 255
_HIDDEN = ("Cf", "Cc", "Cs")  # format (bidi overrides, zero-width), control, surrogate
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
    return Media(
        id=row["id"],
        owner_id=row["owner_id"],
        purpose=row["purpose"],
        encrypted=bool(row["encrypted"]),
        kind=row["kind"],
        mime=row["mime"],
        filename=row["filename"],
        size=row["size"],
        sha256=row["sha256"],
        status=row["status"],
        failure=row["failure"],
        width=row["width"],
        height=row["height"],
        duration_ms=row["duration_ms"],
        placeholder=info.get("placeholder"),
        waveform=info.get("waveform"),
        video_codec=info.get("video_codec"),
        audio_codec=info.get("audio_codec"),
        thumbnail=row["thumb_small_key"] is not None,
        created_at=row["created_at"],
    )


@dataclass(frozen=True, slots=True)
class MediaPage:
    items: list[Media]
    next_cursor: str | None
    used_bytes: int  # files plus resumable uploads in progress
    quota_bytes: int  # 0: no quota


@dataclass(frozen=True, slots=True)
class UploadSession:
    upload_id: str
    size: int
    chunk_size: int
    chunk_count: int
    received: list[int]
    expires_at: int


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


def _not_found() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such file.")


class MediaService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        scheduler: Scheduler,
        events: EventWriter,
        announcer: Announcer,
        clock: Clock,
        config: MediaConfig,
        signer: UrlSigner,
        scratch_dir: Path,
        limiter: RateLimiter | None = None,
        uploads_per_minute: int = 60,
    ) -> None:
        self._db = db
        self._blobs = blobs
        self._scheduler = scheduler
        self._events = events
        self._announcer = announcer
        self._clock = clock
        self._config = config
        self._signer = signer
        self._scratch = scratch_dir
        self._limiter = limiter
        self._uploads_per_minute = uploads_per_minute
        self._media = MediaStore()
        self._devices = DeviceStore()
        scheduler.register(PROCESS_JOB, self._process_job, timeout=config.probe_timeout_seconds + 120)
        scheduler.register(RELEASE_JOB, self._release_job)
        scheduler.every("media.cleanup", 3600, self.cleanup, timeout=600)

    # -- limits ------------------------------------------------------------------------------

    def limit_for(self, kind: str, encrypted: bool) -> int:
        if encrypted:
            return self._config.max_file_bytes
        return {
            "image": self._config.max_image_bytes,
            "video": self._config.max_video_bytes,
            "audio": self._config.max_audio_bytes,
        }.get(kind, self._config.max_file_bytes)

    @property
    def largest_upload(self) -> int:
        c = self._config
        return max(c.max_image_bytes, c.max_video_bytes, c.max_audio_bytes, c.max_file_bytes)

    async def _quota_left(self, owner_id: str) -> int:
        if not self._config.quota_bytes:
            return self.largest_upload
        return max(0, self._config.quota_bytes - await self._media.used_bytes(self._db, owner_id))

    async def _check_quota(self, tx: Queryable, owner_id: str, size: int) -> None:
        if self._config.quota_bytes and await self._media.used_bytes(tx, owner_id) + size > self._config.quota_bytes:
            raise DomainError(Code.QUOTA_EXCEEDED, "That would go over your storage quota; delete something first.")

    async def _limit(self, owner_id: str) -> None:
        if self._limiter is not None:
            wait = await self._limiter.hit(f"uploads:{owner_id}", self._uploads_per_minute)
            if wait > 0:
                raise RateLimited(wait, "Too many uploads; try again later.")

    async def check_declared_size(self, owner_id: str, size: int | None) -> None:
        """Refuse before reading a byte when the declared size cannot fit."""
        if size is None:
            return
        if size > self.largest_upload:
            raise DomainError(Code.FILE_TOO_LARGE, f"Files are at most {self.largest_upload} bytes.")
        if size > await self._quota_left(owner_id):
            raise DomainError(Code.QUOTA_EXCEEDED, "That would go over your storage quota; delete something first.")

    # -- whole-file upload -------------------------------------------------------------------

    async def upload(
        self,
        owner_id: str,
        chunks: AsyncIterable[bytes],
        *,
        filename: str | None,
        purpose: Purpose,
        encrypted: bool,
    ) -> Media:
        await self._limit(owner_id)
        quota = await self._quota_left(owner_id)
        intake = _Intake(chunks, self, encrypted, quota)
        try:
            stored = await self._blobs.put_stream(intake.stream(), max_size=self.largest_upload)
        except BlobTooLarge:
            raise intake.too_large() from None
        return await self._create(owner_id, stored, intake.sniffed, filename, purpose, encrypted)

    async def _create(
        self,
        owner_id: str,
        stored: StoredBlob,
        sniffed: Sniffed,
        filename: str | None,
        purpose: Purpose,
        encrypted: bool,
        upload_id: str | None = None,
    ) -> Media:
        """The row for stored bytes; if it cannot be written, the bytes are released (never left unnamed)."""
        try:
            media = await self._record(owner_id, stored, sniffed, filename, purpose, encrypted, upload_id)
        except BaseException:
            try:
                await asyncio.shield(self._release([stored.key]))
            except Exception:  # the database is what failed: the orphan sweep of blobs is an operator's job
                log.warning("could not release blob %s after a failed upload", stored.key, exc_info=True)
            raise
        if not await self._blobs.exists(stored.key):
            # Deduplicated onto a blob that a release job deleted in the same instant: say so.
            async with self._db.transaction() as tx:
                await self._media.delete(tx, media.id)
            raise DomainError(Code.UNAVAILABLE, "The upload met a cleanup of the same content; send it again.")
        return media

    async def _record(
        self,
        owner_id: str,
        stored: StoredBlob,
        sniffed: Sniffed,
        filename: str | None,
        purpose: Purpose,
        encrypted: bool,
        upload_id: str | None,
    ) -> Media:
        if stored.size == 0:
            raise DomainError(Code.VALIDATION_FAILED, "The file is empty.", field="file")
        if purpose != "attachment" and (encrypted or sniffed.kind != "image"):
            raise DomainError(
                Code.VALIDATION_FAILED, f"A {purpose} is an image uploaded without end-to-end encryption.", field="file"
            )
        processable = not encrypted and sniffed.kind in ("image", "video", "audio")
        now = self._clock.now_ms()
        media_id = uuid7()
        row = {
            "id": media_id,
            "owner_id": owner_id,
            "purpose": purpose,
            "encrypted": encrypted,
            "kind": sniffed.kind,
            "mime": sniffed.mime,
            "filename": clean_filename(filename, f"{sniffed.kind}.{sniffed.extension}"),
            "size": stored.size,
            "sha256": stored.sha256,
            "blob_key": stored.key,
            "status": "pending" if processable else "ready",
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.transaction() as tx:
            await self._media.lock_owner(tx, owner_id)  # concurrent uploads of one user: one quota check at a time
            if upload_id is not None:
                await self._media.delete_upload(tx, upload_id)  # its reservation becomes the file's size
            await self._check_quota(tx, owner_id, stored.size)
            twin = await self._media.processed_twin(tx, stored.key) if processable else None
            if twin is not None:  # the same bytes were processed before: the same results, no new job
                row.update({column: twin[column] for column in PROCESSED_COLUMNS})
                processable = False
            await self._media.insert(tx, row)
            if processable:
                dedupe_key = PROCESS_KEY_PREFIX + media_id
                await self._scheduler.enqueue(PROCESS_JOB, media_id.encode(), dedupe_key=dedupe_key, tx=tx)
        if processable:
            self._scheduler.wake()
        return media_from_row(await self._media.get(self._db, media_id))

    # -- resumable upload --------------------------------------------------------------------

    async def start_upload(
        self, owner_id: str, *, filename: str | None, size: int, purpose: Purpose, encrypted: bool
    ) -> UploadSession:
        if size < 1:
            raise DomainError(Code.VALIDATION_FAILED, "size is at least 1 byte.", field="size")
        await self._limit(owner_id)
        await self.check_declared_size(owner_id, size)
        chunk = self._config.chunk_bytes
        count = math.ceil(size / chunk)
        if count > MAX_PARTS:
            raise DomainError(Code.FILE_TOO_LARGE, f"A resumable upload has at most {MAX_PARTS} chunks.")
        now = self._clock.now_ms()
        upload = {
            "id": uuid7(),
            "owner_id": owner_id,
            "purpose": purpose,
            "encrypted": encrypted,
            "filename": clean_filename(filename, "file"),
            "size": size,
            "chunk_size": chunk,
            "chunk_count": count,
            "created_at": now,
            "expires_at": now + self._config.upload_expiry_hours * 3_600_000,
        }
        async with self._db.transaction() as tx:
            await self._media.lock_owner(tx, owner_id)
            await self._check_quota(tx, owner_id, size)
            await self._media.insert_upload(tx, upload)
        return UploadSession(upload["id"], size, chunk, count, [], upload["expires_at"])

    async def _my_upload(self, owner_id: str, upload_id: str) -> Row:
        row = await self._media.get_upload(self._db, upload_id) if is_uuid(upload_id) else None
        if row is None or row["owner_id"] != owner_id or row["expires_at"] < self._clock.now_ms():
            raise DomainError(Code.NOT_FOUND, "No such upload (it may have expired).")
        return row

    @staticmethod
    def chunk_length(upload: Row, index: int) -> int:
        if index == upload["chunk_count"] - 1:
            return upload["size"] - upload["chunk_size"] * (upload["chunk_count"] - 1)
        return upload["chunk_size"]

    async def put_chunk(
        self, owner_id: str, upload_id: str, index: int, chunks: AsyncIterable[bytes], length: int | None
    ) -> UploadSession:
        upload = await self._my_upload(owner_id, upload_id)
        if not 0 <= index < upload["chunk_count"]:
            raise DomainError(
                Code.RANGE_NOT_SATISFIABLE,
                f"Chunk {index} is out of range: this upload has chunks 0 to {upload['chunk_count'] - 1}.",
            )
        expected = self.chunk_length(upload, index)
        if length is None:
            raise DomainError(Code.LENGTH_REQUIRED, "Send the chunk with a Content-Length.")
        if length != expected:
            raise DomainError(Code.VALIDATION_FAILED, f"Chunk {index} is {expected} bytes, not {length}.")
        try:
            got = await self._blobs.put_part(upload_id, index, chunks, max_size=expected)
        except BlobTooLarge:
            raise DomainError(Code.FILE_TOO_LARGE, f"Chunk {index} is {expected} bytes; more came.") from None
        if got != expected:  # a short part is stored but never counted as received
            raise DomainError(Code.VALIDATION_FAILED, f"Chunk {index} is {expected} bytes; {got} came.")
        return await self._session(upload)

    async def _session(self, upload: Row) -> UploadSession:
        parts = await self._blobs.list_parts(upload["id"])
        received = sorted(i for i, size in parts.items() if size == self.chunk_length(upload, i))
        return UploadSession(
            upload["id"], upload["size"], upload["chunk_size"], upload["chunk_count"], received, upload["expires_at"]
        )

    async def upload_status(self, owner_id: str, upload_id: str) -> UploadSession:
        return await self._session(await self._my_upload(owner_id, upload_id))

    async def complete_upload(self, owner_id: str, upload_id: str) -> Media:
        upload = await self._my_upload(owner_id, upload_id)
        session = await self._session(upload)
        if missing := sorted(set(range(upload["chunk_count"])) - set(session.received)):
            raise DomainError(
                Code.UPLOAD_INCOMPLETE, f"{len(missing)} chunk(s) are missing.", missing_chunks=missing[:1000]
            )
        try:
            stored = await self._blobs.complete_parts(upload_id, upload["chunk_count"], max_size=upload["size"])
        except (MissingParts, BlobTooLarge):
            raise DomainError(Code.UPLOAD_INCOMPLETE, "The chunks changed while completing; check and retry.") from None
        head = b"".join([part async for part in self._blobs.read_range(stored.key, 0, SNIFF_BYTES)])
        sniffed = OCTET_STREAM if upload["encrypted"] else sniff(head)
        if stored.size > self.limit_for(sniffed.kind, bool(upload["encrypted"])):
            await self._release([stored.key])
            async with self._db.transaction() as tx:
                await self._media.delete_upload(tx, upload_id)
            raise DomainError(
                Code.FILE_TOO_LARGE, f"A {sniffed.kind} is at most {self.limit_for(sniffed.kind, False)} bytes."
            )
        return await self._create(
            owner_id, stored, sniffed, upload["filename"], upload["purpose"], bool(upload["encrypted"]), upload_id
        )

    async def abort_upload(self, owner_id: str, upload_id: str) -> None:
        await self._my_upload(owner_id, upload_id)
        await self._blobs.abort_parts(upload_id)
        async with self._db.transaction() as tx:
            await self._media.delete_upload(tx, upload_id)

    # -- reading -----------------------------------------------------------------------------

    async def _visible(self, user_id: str, media_id: str) -> Row:
        """The file, if this user may see it; otherwise 404, as if it did not exist."""
        row = await self._media.get(self._db, media_id) if is_uuid(media_id) else None
        if row is None:
            raise _not_found()
        if row["owner_id"] == user_id or row["purpose"] == "sticker":
            return row
        if await self._media.visible_through_message(self._db, media_id, user_id):
            return row
        if await self._media.visible_as_avatar(self._db, media_id, user_id):
            return row
        raise _not_found()

    async def list_mine(self, owner_id: str, after: str | None, limit: int) -> MediaPage:
        """My files, oldest first, and how much of my quota they use."""
        rows = await self._media.page(self._db, owner_id, after, limit + 1)
        items = [media_from_row(r) for r in rows[:limit]]
        return MediaPage(
            items=items,
            next_cursor=items[-1].id if len(rows) > limit else None,
            used_bytes=await self._media.used_bytes(self._db, owner_id),
            quota_bytes=self._config.quota_bytes,
        )

    async def get(self, user_id: str, media_id: str) -> Media:
        return media_from_row(await self._visible(user_id, media_id))

    async def download(self, user_id: str | None, media_id: str, variant: Variant) -> Download:
        """user_id None: the caller presented a valid signed URL instead of a token."""
        if user_id is None:
            row = await self._media.get(self._db, media_id) if is_uuid(media_id) else None
            if row is None:
                raise _not_found()
        else:
            row = await self._visible(user_id, media_id)
        served = self._served(row, variant, user_id)
        if served.size < 0:  # a derived file: its size is the blob's
            served = dataclasses.replace(served, size=await self._blobs.size(served.key))
        return served

    def _served(self, row: Row, variant: Variant, user_id: str | None) -> Download:
        if variant != "original":
            key = row["thumb_small_key"] if variant == "small" else row["thumb_large_key"]
            if key is None:
                if row["status"] == "pending":
                    raise DomainError(Code.MEDIA_NOT_READY, "The thumbnail is still being made; try again shortly.")
                raise DomainError(Code.NOT_FOUND, "This file has no thumbnail.")
            name = Path(row["filename"]).stem + "." + row["thumb_mime"].split("/")[-1]
            return Download(key, row["thumb_mime"], name, -1, key, True, self._blobs)
        if row["encrypted"]:
            return Download(
                row["blob_key"],
                "application/octet-stream",
                row["filename"],
                row["size"],
                row["blob_key"],
                False,
                self._blobs,
            )
        processed_kind = row["kind"] in ("image", "video", "audio")
        if processed_kind and row["served_key"] is None and user_id != row["owner_id"]:
            # Others never get an original that may carry EXIF/GPS or location tags: only a clean copy.
            if row["status"] == "pending":
                raise DomainError(Code.MEDIA_NOT_READY, "The file is still being processed; try again shortly.")
            if row["status"] == "failed" or (row["kind"] == "image" and row["thumb_large_key"] is None):
                raise DomainError(Code.MEDIA_FAILED, f"The file could not be processed: {row['failure']}")
            if row["kind"] == "image":  # formats without a re-encoded copy (GIF, AVIF): the largest thumbnail
                name = Path(row["filename"]).stem + "." + row["thumb_mime"].split("/")[-1]
                key = row["thumb_large_key"]
                return Download(key, row["thumb_mime"], name, -1, key, True, self._blobs)
        if row["served_key"] is not None:
            return Download(
                row["served_key"], row["served_mime"], row["filename"], -1, row["served_key"], True, self._blobs
            )
        inline = row["kind"] in ("image", "video", "audio") and not is_active_content(row["mime"])
        return Download(
            row["blob_key"], row["mime"], row["filename"], row["size"], row["blob_key"], inline, self._blobs
        )

    async def signed_url(self, user_id: str, media_id: str, variant: Variant, base_url: str) -> tuple[str, int]:
        """A URL that works without a token until it expires (for <img> and <video> tags)."""
        row = await self._visible(user_id, media_id)
        served = self._served(row, variant, user_id)
        ttl = self._config.signed_url_seconds
        expires = int(self._clock.now()) + ttl
        presigned = await self._blobs.signed_url(
            served.key, expires_in=ttl, filename=served.filename, content_type=served.mime
        )
        if presigned is not None:
            return presigned, expires
        signature = self._signer.signature(media_id, variant, expires)
        query = f"variant={variant}&expires={expires}&signature={signature}"
        return f"{base_url}/api/v1/media/download/{media_id}?{query}", expires

    def signature_valid(self, media_id: str, variant: str, expires: int, signature: str) -> bool:
        return self._signer.valid(media_id, variant, expires, signature, self._clock.now())

    # -- deleting ----------------------------------------------------------------------------

    async def delete(self, user_id: str, media_id: str) -> None:
        row = await self._media.get(self._db, media_id) if is_uuid(media_id) else None
        if row is None or row["owner_id"] != user_id:
            raise _not_found()
        async with self._db.transaction() as tx:
            gone = await self._media.delete(tx, media_id)
        if gone is not None:
            await self._release([gone[c] for c in BLOB_COLUMNS if gone[c] is not None])

    async def _release(self, keys: Sequence[str]) -> None:
        """Delete these blobs a little later, each only if no file names it by then."""
        if keys:
            await self._scheduler.enqueue(
                RELEASE_JOB, json.dumps(sorted(set(keys))).encode(), run_at=self._clock.now_ms() + RELEASE_DELAY_MS
            )

    async def _release_job(self, payload: bytes) -> None:
        for key in json.loads(payload):
            if not await self._media.blob_in_use(self._db, key):
                await self._blobs.delete(key)

    # -- processing --------------------------------------------------------------------------

    async def _process_job(self, payload: bytes) -> None:
        media_id = payload.decode()
        row = await self._media.get(self._db, media_id)
        if row is None or row["status"] != "pending":
            return  # deleted meanwhile, or already done (jobs may run twice)
        try:
            changes = await self._process(row)
        except MediaError as exc:
            changes = {"status": "failed", "failure": str(exc)[:500]}
        except BlobNotFound:
            changes = {"status": "failed", "failure": "The stored file is missing."}
        await self._finish(row, changes)
        if changes["status"] == "failed":
            log.info("media %s failed processing: %s", media_id, changes["failure"])

    async def _process(self, row: Row) -> dict[str, Any]:
        if row["kind"] == "image":
            data = await self._blobs.read_all(row["blob_key"])
            # Decoded in a limited child process: a tiny file can need gigabytes and seconds of CPU.
            result = await process_image_isolated(
                data,
                max_pixels=self._config.max_image_pixels,
                sizes=(320, 1280),
                timeout=self._config.probe_timeout_seconds,
            )
            return {
                **await self._store_image(result),
                "status": "ready",
                "width": result.width,
                "height": result.height,
                "info": json.dumps({"placeholder": result.placeholder, "animated": result.animated}),
            }
        with tempfile.TemporaryDirectory(dir=self._scratch) as scratch:
            path = os.path.join(scratch, "media")
            await self._copy_to(row["blob_key"], path)
            # The same child also remuxes the file without its tags (location, dates, device):
            # that copy is what others get.
            clean = os.path.join(scratch, "served")
            probe = await probe_media(
                path,
                kind=row["kind"],
                timeout=self._config.probe_timeout_seconds,
                memory_limit=self._config.probe_memory_bytes,
                max_duration=self._config.max_duration_seconds,
                remux_to=clean,
            )
            if not probe.ok:
                raise MediaError(probe.reason or "the media could not be read")
            served = await self._blobs.put_stream(_file_chunks(clean))
        info: dict[str, Any] = {"container": probe.container, "audio_codec": probe.audio_codec}
        changes: dict[str, Any] = {
            "status": "ready",
            "duration_ms": round(probe.duration * 1000) if probe.duration is not None else None,
            "served_key": served.key,
            "served_mime": probe.remux_mime,
        }
        if row["kind"] == "video":
            info["video_codec"] = probe.video_codec
            changes.update(width=probe.width, height=probe.height)
            if probe.poster:
                try:
                    poster = await process_image_isolated(
                        probe.poster, max_pixels=self._config.max_image_pixels, sizes=(320, 1280)
                    )
                except MediaError:
                    await self._release([served.key])  # the file fails: its clean copy has no owner
                    raise
                changes.update(await self._store_image(poster, keep_sanitized=False))
                info["placeholder"] = poster.placeholder
        else:
            info.update(waveform=list(probe.waveform or ()), sample_rate=probe.sample_rate, channels=probe.channels)
        changes["info"] = json.dumps(info)
        return changes

    async def _store_image(self, result: ImageResult, *, keep_sanitized: bool = True) -> dict[str, Any]:
        stored: dict[str, Any] = {}
        thumbs = sorted(result.thumbnails, key=lambda t: max(t.width, t.height))
        if thumbs:
            small = await self._blobs.put_bytes(thumbs[0].data)
            large = await self._blobs.put_bytes(thumbs[-1].data) if len(thumbs) > 1 else small
            stored.update(thumb_small_key=small.key, thumb_large_key=large.key, thumb_mime=thumbs[0].mime)
        if keep_sanitized and result.sanitized is not None:
            stored.update(served_key=(await self._blobs.put_bytes(result.sanitized)).key, served_mime=result.mime)
        return stored

    async def _copy_to(self, key: str, path: str) -> None:
        """FFmpeg reads a local file: copy the blob out, in bounded chunks, off the event loop."""
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for chunk in self._blobs.read_range(key, 0, None):
                await asyncio.to_thread(os.write, fd, chunk)
        finally:
            os.close(fd)

    async def _finish(self, row: Row, changes: dict[str, Any]) -> None:
        now = self._clock.now_ms()
        async with self._db.transaction() as tx:
            updated = await self._media.set_processed(tx, row["id"], changes, now)
            if updated:
                media = media_from_row(await self._media.get(tx, row["id"]))
                devices = await self._devices.active_ids_of(tx, [row["owner_id"]])
                deliveries = await self._events.append(tx, "media.processed", devices, encode({"media": media}), now)
        if not updated:  # deleted while it was processed: what processing stored has no owner
            await self._release([changes[c] for c in BLOB_COLUMNS if changes.get(c)])
            return
        await self._announcer.announce(deliveries)

    # -- cleanup -----------------------------------------------------------------------------

    async def cleanup(self) -> None:
        """Hourly: expired resumable uploads, uploads never attached, parts nobody owns."""
        now = self._clock.now_ms()
        for upload_id in await self._media.expired_uploads(self._db, now, 1000):
            await self._blobs.abort_parts(upload_id)
            async with self._db.transaction() as tx:
                await self._media.delete_upload(tx, upload_id)
        stale_before = now / 1000 - self._config.upload_expiry_hours * 3600
        for upload_id in await self._blobs.stale_parts(stale_before):
            if is_uuid(upload_id) and await self._media.get_upload(self._db, upload_id) is None:
                await self._blobs.abort_parts(upload_id)
        for row in await self._media.orphans(self._db, now - self._config.orphan_hours * 3_600_000, 1000):
            async with self._db.transaction() as tx:
                gone = await self._media.delete(tx, row["id"])
            if gone is not None:
                await self._release([gone[c] for c in BLOB_COLUMNS if gone[c] is not None])
        # A processing job that failed for good (not a MediaError: a crash or a timeout) leaves
        # its file pending; after a generous wait, say so rather than leave it spinning.
        stuck_before = now - 6 * 3_600_000
        for row in await self._media.stuck(self._db, stuck_before, 1000, PROCESS_KEY_PREFIX):
            await self._finish(row, {"status": "failed", "failure": "Processing did not finish."})


async def _file_chunks(path: str, size: int = 1024 * 1024) -> AsyncIterator[bytes]:
    """A local file in bounded chunks, read off the event loop."""
    with open(path, "rb") as file:  # noqa: ASYNC230 (opening is instant; the reads go to a thread)
        while chunk := await asyncio.to_thread(file.read, size):
            yield chunk


class _Intake:
    """Counts an upload as it streams; after the first bytes it knows the type and so the limit."""

    def __init__(self, chunks: AsyncIterable[bytes], service: MediaService, encrypted: bool, quota: int) -> None:
        self._chunks = chunks
        self._service = service
        self._encrypted = encrypted
        self._quota = quota
        self.sniffed: Sniffed = OCTET_STREAM
        self._limit = 0
        self._over_quota = False

    def too_large(self) -> DomainError:
        if self._over_quota:
            return DomainError(Code.QUOTA_EXCEEDED, "That would go over your storage quota; delete something first.")
        kind = "file" if self._encrypted else self.sniffed.kind
        return DomainError(Code.FILE_TOO_LARGE, f"A {kind} upload is at most {self._limit} bytes.")

    async def stream(self) -> AsyncIterator[bytes]:
        head = b""
        source = aiter(self._chunks)
        async for chunk in source:
            head += chunk
            if len(head) >= SNIFF_BYTES:
                break
        self.sniffed = OCTET_STREAM if self._encrypted else sniff(head[:SNIFF_BYTES])
        kind_limit = self._service.limit_for(self.sniffed.kind, self._encrypted)
        self._limit = min(kind_limit, self._quota)
        self._over_quota = self._quota < kind_limit
        seen = len(head)
        if seen > self._limit:
            raise self.too_large()
        if head:
            yield head
        async for chunk in source:
            seen += len(chunk)
            if seen > self._limit:
                raise self.too_large()
            yield chunk
