"""Processing of uploaded media: thumbnails, clean copies, probing, waveforms, as durable jobs.

Nothing parses a file in the server process: images go to a limited child process
(Pillow), audio and video to another (FFmpeg), each with memory, time and no network.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sup.blobs.store import BlobNotFound, BlobStore, file_chunks
from sup.clock import Clock
from sup.config import MediaConfig
from sup.db.accounts import DeviceStore
from sup.db.database import Database, Row
from sup.db.media import BLOB_COLUMNS, MediaStore
from sup.domain.events import EventWriter, encode
from sup.domain.files import MediaFiles, media_from_row
from sup.jobs.scheduler import Scheduler
from sup.media import MediaError
from sup.media.av_probe import probe_media
from sup.media.image_child import ImageResult, process_image_isolated

log = logging.getLogger("sup.media")

PROCESS_JOB = "media.process"
PROCESS_KEY_PREFIX = "media:"  # + media id: a file is queued for processing once


@dataclass(slots=True, eq=False)
class MediaProcessing:
    db: Database
    media: MediaStore
    devices: DeviceStore
    blobs: BlobStore
    scheduler: Scheduler
    files: MediaFiles
    events: EventWriter
    clock: Clock
    config: MediaConfig
    scratch_dir: Path

    def __post_init__(self) -> None:
        self.scheduler.register(PROCESS_JOB, self._process_job, timeout=self.config.probe_timeout_seconds + 120)

    # -- processing --------------------------------------------------------------------------

    async def _process_job(self, payload: bytes) -> None:
        media_id = payload.decode()
        row = await self.media.get(self.db, media_id)
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
            c = self.config
            # Stickers are small by nature: anything bigger is refused before a pixel is decoded.
            sticker = row["purpose"] == "sticker"
            if sticker and row["size"] > c.max_sticker_bytes:
                raise MediaError(f"a sticker is at most {c.max_sticker_bytes} bytes; this one is {row['size']}")
            data = await self.blobs.read_all(row["blob_key"])
            # Decoded in a limited child process: a tiny file can need gigabytes and seconds of CPU.
            result = await process_image_isolated(
                data,
                max_pixels=min(c.max_image_pixels, c.max_sticker_pixels) if sticker else c.max_image_pixels,
                sizes=(320, 1280),
                timeout=c.probe_timeout_seconds,
                max_frames=min(c.max_animation_frames, c.max_sticker_frames) if sticker else c.max_animation_frames,
                max_animation_pixels=c.max_animation_pixels,
            )
            info = {"placeholder": result.placeholder, "animated": result.animated, "frames": result.frames}
            return {
                **await self._store_image(result),
                "status": "ready",
                "width": result.width,
                "height": result.height,
                "info": json.dumps(info),
            }
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as scratch:
            path = os.path.join(scratch, "media")
            await self._copy_to(row["blob_key"], path)
            # The same child also remuxes the file without its tags (location, dates, device):
            # that copy is what others get.
            clean = os.path.join(scratch, "served")
            probe = await probe_media(
                path,
                kind=row["kind"],
                timeout=self.config.probe_timeout_seconds,
                memory_limit=self.config.probe_memory_bytes,
                max_duration=self.config.max_duration_seconds,
                remux_to=clean,
            )
            if not probe.ok:
                raise MediaError(probe.reason or "the media could not be read")
            served = await self.blobs.put_stream(file_chunks(clean))
        info: dict[str, Any] = {"container": probe.container, "audio_codec": probe.audio_codec}
        changes: dict[str, Any] = {
            "status": "ready",
            "duration_ms": round(probe.duration * 1000) if probe.duration is not None else None,
            "served_key": served.key,
            "served_mime": probe.remux_mime,
        }
        # What FFmpeg found beats what the first bytes suggested: an MP4 or 3GP voice note is audio.
        if probe.kind != row["kind"] or probe.mime not in (None, row["mime"]):
            changes.update(kind=probe.kind, mime=probe.mime or row["mime"])
        if probe.kind == "video":
            info["video_codec"] = probe.video_codec
            changes.update(width=probe.width, height=probe.height)
            if probe.poster:
                try:
                    poster = await process_image_isolated(
                        probe.poster, max_pixels=self.config.max_image_pixels, sizes=(320, 1280)
                    )
                except MediaError:
                    await self.files.release([served.key])  # the file fails: its clean copy has no owner
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
            small = await self.blobs.put_bytes(thumbs[0].data)
            large = await self.blobs.put_bytes(thumbs[-1].data) if len(thumbs) > 1 else small
            stored.update(thumb_small_key=small.key, thumb_large_key=large.key, thumb_mime=thumbs[0].mime)
        if keep_sanitized and result.sanitized is not None:
            stored.update(
                served_key=(await self.blobs.put_bytes(result.sanitized)).key, served_mime=result.sanitized_mime
            )
        return stored

    async def _copy_to(self, key: str, path: str) -> None:
        """FFmpeg reads a local file: copy the blob out, in bounded chunks, off the event loop."""
        fd = await asyncio.to_thread(os.open, path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for chunk in self.blobs.read_range(key, 0, None):
                await asyncio.to_thread(os.write, fd, chunk)
        finally:
            os.close(fd)

    async def _finish(self, row: Row, changes: dict[str, Any]) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            updated = await self.media.set_processed(tx, row["id"], changes, now)
            if updated:
                media = media_from_row(await self.media.get(tx, row["id"]))
                devices = await self.devices.active_ids_of(tx, [row["owner_id"]])
                await self.events.append(tx, "media.processed", devices, encode({"media": media}), now)
        if not updated:  # deleted while it was processed: what processing stored has no owner
            await self.files.release([changes[c] for c in BLOB_COLUMNS if changes.get(c)])

    async def fail_stuck(self) -> None:
        """A processing job that failed for good (not a MediaError: a crash or a timeout) leaves its
        file pending; after a generous wait, say so rather than leave it spinning."""
        stuck_before = self.clock.now_ms() - 6 * 3_600_000
        for row in await self.media.stuck(self.db, stuck_before, 1000, PROCESS_KEY_PREFIX):
            await self._finish(row, {"status": "failed", "failure": "Processing did not finish."})
