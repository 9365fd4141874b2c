"""Media: one service over uploads (uploads.py), stored files (files.py) and processing (processing.py).

The transport layer talks to this facade; each part keeps to its own job and is built once here.
"""

from __future__ import annotations

from collections.abc import AsyncIterable
from pathlib import Path

from sup.blobs.store import BlobStore
from sup.clock import Clock
from sup.config import MediaConfig
from sup.db.accounts import DeviceStore
from sup.db.database import Database
from sup.db.media import MediaStore
from sup.domain.events import EventWriter
from sup.domain.files import Download, Media, MediaFiles, MediaPage, Purpose, UrlSigner, Variant
from sup.domain.limits import Budget
from sup.domain.processing import MediaProcessing
from sup.domain.uploads import Uploads, UploadSession
from sup.jobs.scheduler import Scheduler

__all__ = ["Download", "Media", "MediaPage", "MediaService", "UploadSession", "UrlSigner"]


class MediaService:
    def __init__(
        self,
        db: Database,
        media: MediaStore,
        devices: DeviceStore,
        blobs: BlobStore,
        scheduler: Scheduler,
        events: EventWriter,
        clock: Clock,
        config: MediaConfig,
        signer: UrlSigner,
        scratch_dir: Path,
        upload_budget: Budget,
    ) -> None:
        self.files = MediaFiles(db, media, blobs, scheduler, clock, config, signer)
        self.uploads = Uploads(db, media, blobs, scheduler, self.files, clock, config, upload_budget)
        self.processing = MediaProcessing(
            db, media, devices, blobs, scheduler, self.files, events, clock, config, scratch_dir
        )
        scheduler.every("media.cleanup", 3600, self.cleanup, timeout=600)

    async def cleanup(self) -> None:
        """Hourly: expired resumable uploads, uploads never attached, parts nobody owns, stuck processing."""
        await self.uploads.expire_abandoned()
        await self.files.remove_orphans()
        await self.processing.fail_stuck()

    # -- uploads -----------------------------------------------------------------------------

    async def check_declared_size(self, owner_id: str, size: int | None) -> None:
        await self.uploads.check_declared_size(owner_id, size)

    async def upload(
        self, owner_id: str, chunks: AsyncIterable[bytes], *, filename: str | None, purpose: Purpose, encrypted: bool
    ) -> Media:
        return await self.uploads.upload(owner_id, chunks, filename=filename, purpose=purpose, encrypted=encrypted)

    async def start_upload(
        self, owner_id: str, *, filename: str | None, size: int, purpose: Purpose, encrypted: bool
    ) -> UploadSession:
        return await self.uploads.start_upload(
            owner_id, filename=filename, size=size, purpose=purpose, encrypted=encrypted
        )

    async def put_chunk(
        self, owner_id: str, upload_id: str, index: int, chunks: AsyncIterable[bytes], length: int | None
    ) -> UploadSession:
        return await self.uploads.put_chunk(owner_id, upload_id, index, chunks, length)

    async def upload_status(self, owner_id: str, upload_id: str) -> UploadSession:
        return await self.uploads.upload_status(owner_id, upload_id)

    async def complete_upload(self, owner_id: str, upload_id: str) -> Media:
        return await self.uploads.complete_upload(owner_id, upload_id)

    async def abort_upload(self, owner_id: str, upload_id: str) -> None:
        await self.uploads.abort_upload(owner_id, upload_id)

    # -- files -------------------------------------------------------------------------------

    async def list_mine(self, owner_id: str, after: str | None, limit: int) -> MediaPage:
        return await self.files.list_mine(owner_id, after, limit)

    async def get(self, user_id: str, media_id: str) -> Media:
        return await self.files.get(user_id, media_id)

    async def download(self, user_id: str | None, media_id: str, variant: Variant) -> Download:
        return await self.files.download(user_id, media_id, variant)

    async def signed_url(self, user_id: str, media_id: str, variant: Variant, base_url: str) -> tuple[str, int]:
        return await self.files.signed_url(user_id, media_id, variant, base_url)

    def signature_valid(self, media_id: str, variant: str, expires: int, signature: str) -> bool:
        return self.files.signature_valid(media_id, variant, expires, signature)

    async def direct_origin(self) -> str | None:
        return await self.files.direct_origin()

    async def delete(self, user_id: str, media_id: str) -> None:
        await self.files.delete(user_id, media_id)
