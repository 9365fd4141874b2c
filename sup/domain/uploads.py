"""Uploads: whole or in resumable chunks, streamed straight into the blob store.

The type is sniffed from the first bytes and the size limit for that type applies from
then on, so an oversized upload stops as soon as it passes the limit, with nothing left
behind. Client-encrypted files are opaque: stored as they came and never processed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

from sup.blobs.store import MAX_PARTS, BlobStore, BlobTooLarge, MissingParts, StoredBlob
from sup.clock import Clock
from sup.config import MediaConfig
from sup.db.database import Database, Queryable, Row
from sup.db.media import PROCESSED_COLUMNS, MediaStore
from sup.domain.files import Media, MediaFiles, Purpose, clean_filename, media_from_row
from sup.domain.limits import Budget
from sup.domain.processing import PROCESS_JOB, PROCESS_KEY_PREFIX
from sup.errors import Code, DomainError, RateLimited
from sup.ids import is_uuid, uuid7
from sup.jobs.scheduler import Scheduler
from sup.media.limits import SNIFF_BYTES
from sup.media.sniff import OCTET_STREAM, Sniffed, sniff

log = logging.getLogger("sup.media")


@dataclass(frozen=True, slots=True)
class UploadSession:
    upload_id: str
    size: int
    chunk_size: int
    chunk_count: int
    received: list[int]
    expires_at: int


@dataclass(frozen=True, slots=True)
class _Arrived:
    """Stored bytes and what their uploader said of them: what becomes a media row."""

    owner_id: str
    stored: StoredBlob
    sniffed: Sniffed
    filename: str | None
    purpose: Purpose
    encrypted: bool
    upload_id: str | None = None  # a resumable upload's: its size reservation becomes the file's


@dataclass(slots=True, eq=False)
class Uploads:
    db: Database
    media: MediaStore
    blobs: BlobStore
    scheduler: Scheduler
    files: MediaFiles
    clock: Clock
    config: MediaConfig
    upload_budget: Budget  # per owner

    # -- limits ------------------------------------------------------------------------------

    def limit_for(self, kind: str, encrypted: bool) -> int:
        if encrypted:
            return self.config.max_file_bytes
        return {
            "image": self.config.max_image_bytes,
            "video": self.config.max_video_bytes,
            "audio": self.config.max_audio_bytes,
        }.get(kind, self.config.max_file_bytes)

    @property
    def largest_upload(self) -> int:
        c = self.config
        return max(c.max_image_bytes, c.max_video_bytes, c.max_audio_bytes, c.max_file_bytes)

    async def _quota_left(self, owner_id: str) -> int:
        if not self.config.quota_bytes:
            return self.largest_upload
        return max(0, self.config.quota_bytes - await self.media.used_bytes(self.db, owner_id))

    async def _check_quota(self, tx: Queryable, owner_id: str, size: int) -> None:
        if self.config.quota_bytes and await self.media.used_bytes(tx, owner_id) + size > self.config.quota_bytes:
            raise DomainError(Code.QUOTA_EXCEEDED, "That would go over your storage quota; delete something first.")

    async def _limit(self, owner_id: str) -> None:
        if wait := await self.upload_budget.spend(f"uploads:{owner_id}"):
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
            stored = await self.blobs.put_stream(intake.stream(), max_size=self.largest_upload)
        except BlobTooLarge:
            raise intake.too_large() from None
        return await self._create(_Arrived(owner_id, stored, intake.sniffed, filename, purpose, encrypted))

    async def _create(self, new: _Arrived) -> Media:
        """The row for stored bytes; if it cannot be written, the bytes are released (never left unnamed)."""
        try:
            media = await self._record(new)
        except BaseException:
            try:
                await asyncio.shield(self.files.release([new.stored.key]))
            except Exception:  # the database is what failed: the orphan sweep of blobs is an operator's job
                log.warning("could not release blob %s after a failed upload", new.stored.key, exc_info=True)
            raise
        if not await self.blobs.exists(new.stored.key):
            # Deduplicated onto a blob that a release job deleted in the same instant: say so.
            async with self.db.transaction() as tx:
                await self.media.delete(tx, media.id)
            raise DomainError(Code.UNAVAILABLE, "The upload met a cleanup of the same content; send it again.")
        return media

    async def _record(self, new: _Arrived) -> Media:
        if new.stored.size == 0:
            raise DomainError(Code.VALIDATION_FAILED, "The file is empty.", field="file")
        if new.purpose != "attachment" and (new.encrypted or new.sniffed.kind != "image"):
            raise DomainError(
                Code.VALIDATION_FAILED,
                f"A {new.purpose} is an image uploaded without end-to-end encryption.",
                field="file",
            )
        processable = not new.encrypted and new.sniffed.kind in ("image", "video", "audio")
        now = self.clock.now_ms()
        media_id = uuid7()
        row = {
            "id": media_id,
            "owner_id": new.owner_id,
            "purpose": new.purpose,
            "encrypted": new.encrypted,
            "kind": new.sniffed.kind,
            "mime": new.sniffed.mime,
            "filename": clean_filename(new.filename, f"{new.sniffed.kind}.{new.sniffed.extension}"),
            "size": new.stored.size,
            "sha256": new.stored.sha256,
            "blob_key": new.stored.key,
            "status": "pending" if processable else "ready",
            "created_at": now,
            "updated_at": now,
        }
        async with self.db.transaction() as tx:
            await self.media.lock_owner(tx, new.owner_id)  # concurrent uploads of one user: one quota check at a time
            if new.upload_id is not None:
                await self.media.delete_upload(tx, new.upload_id)  # its reservation becomes the file's size
            await self._check_quota(tx, new.owner_id, new.stored.size)
            sticker = new.purpose == "sticker"
            twin = await self.media.processed_twin(tx, new.stored.key, sticker=sticker) if processable else None
            if twin is not None:  # the same bytes were processed before: the same results, no new job
                row.update({column: twin[column] for column in PROCESSED_COLUMNS})
                processable = False
            await self.media.insert(tx, row)
            if processable:
                dedupe_key = PROCESS_KEY_PREFIX + media_id
                await self.scheduler.enqueue(PROCESS_JOB, media_id.encode(), dedupe_key=dedupe_key, tx=tx)
        if processable:
            self.scheduler.wake()
        return media_from_row(await self.media.get(self.db, media_id))

    # -- resumable upload --------------------------------------------------------------------

    async def start_upload(
        self, owner_id: str, *, filename: str | None, size: int, purpose: Purpose, encrypted: bool
    ) -> UploadSession:
        if size < 1:
            raise DomainError(Code.VALIDATION_FAILED, "size is at least 1 byte.", field="size")
        await self._limit(owner_id)
        await self.check_declared_size(owner_id, size)
        chunk = self.config.chunk_bytes
        count = math.ceil(size / chunk)
        if count > MAX_PARTS:
            raise DomainError(Code.FILE_TOO_LARGE, f"A resumable upload has at most {MAX_PARTS} chunks.")
        now = self.clock.now_ms()
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
            "expires_at": now + self.config.upload_expiry_hours * 3_600_000,
        }
        async with self.db.transaction() as tx:
            await self.media.lock_owner(tx, owner_id)
            await self._check_quota(tx, owner_id, size)
            await self.media.insert_upload(tx, upload)
        return UploadSession(upload["id"], size, chunk, count, [], upload["expires_at"])

    async def _my_upload(self, owner_id: str, upload_id: str) -> Row:
        row = await self.media.get_upload(self.db, upload_id) if is_uuid(upload_id) else None
        if row is None or row["owner_id"] != owner_id or row["expires_at"] < self.clock.now_ms():
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
            got = await self.blobs.put_part(upload_id, index, chunks, max_size=expected)
        except BlobTooLarge:
            raise DomainError(Code.FILE_TOO_LARGE, f"Chunk {index} is {expected} bytes; more came.") from None
        if got != expected:  # a short part is stored but never counted as received
            raise DomainError(Code.VALIDATION_FAILED, f"Chunk {index} is {expected} bytes; {got} came.")
        return await self._session(upload)

    async def _session(self, upload: Row) -> UploadSession:
        parts = await self.blobs.list_parts(upload["id"])
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
            stored = await self.blobs.complete_parts(upload_id, upload["chunk_count"], max_size=upload["size"])
        except (MissingParts, BlobTooLarge):
            raise DomainError(Code.UPLOAD_INCOMPLETE, "The chunks changed while completing; check and retry.") from None
        head = b"".join([part async for part in self.blobs.read_range(stored.key, 0, SNIFF_BYTES)])
        sniffed = OCTET_STREAM if upload["encrypted"] else sniff(head)
        if stored.size > self.limit_for(sniffed.kind, bool(upload["encrypted"])):
            await self.files.release([stored.key])
            async with self.db.transaction() as tx:
                await self.media.delete_upload(tx, upload_id)
            raise DomainError(
                Code.FILE_TOO_LARGE, f"A {sniffed.kind} is at most {self.limit_for(sniffed.kind, False)} bytes."
            )
        return await self._create(
            _Arrived(
                owner_id, stored, sniffed, upload["filename"], upload["purpose"], bool(upload["encrypted"]), upload_id
            )
        )

    async def abort_upload(self, owner_id: str, upload_id: str) -> None:
        await self._my_upload(owner_id, upload_id)
        await self.blobs.abort_parts(upload_id)
        async with self.db.transaction() as tx:
            await self.media.delete_upload(tx, upload_id)

    async def expire_abandoned(self) -> None:
        """Expired resumable uploads, and stored parts no upload owns any more."""
        now = self.clock.now_ms()
        for upload_id in await self.media.expired_uploads(self.db, now, 1000):
            await self.blobs.abort_parts(upload_id)
            async with self.db.transaction() as tx:
                await self.media.delete_upload(tx, upload_id)
        stale_before = now / 1000 - self.config.upload_expiry_hours * 3600
        for upload_id in await self.blobs.stale_parts(stale_before):
            if is_uuid(upload_id) and await self.media.get_upload(self.db, upload_id) is None:
                await self.blobs.abort_parts(upload_id)


class _Intake:
    """Counts an upload as it streams; after the first bytes it knows the type and so the limit."""

    def __init__(self, chunks: AsyncIterable[bytes], service: Uploads, encrypted: bool, quota: int) -> None:
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
