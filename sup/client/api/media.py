"""The media endpoints of the REST API (docs/api.md): uploads (whole or resumable), downloads, sticker packs.

Media travels as raw bytes (application/octet-stream); large uploads go in resumable chunks (uploads.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from sup.client import uploads
from sup.client.transport import Transport, given
from sup.client.transport import segment as _p
from sup.client.uploads import RESUMABLE_ABOVE, MediaSource


class MediaApi(Transport):
    """Uploads and downloads, and the sticker packs made of uploads."""

    # -- media -------------------------------------------------------------------------------

    async def upload_media(
        self,
        source: MediaSource,
        *,
        filename: str = "",
        purpose: str = "attachment",
        encrypted: bool = False,
        resumable: bool | None = None,
    ) -> dict[str, Any]:
        """Upload a file (bytes, or a file path streamed from disk); the server's media object.

        Files above RESUMABLE_ABOVE (or with `resumable=True`) go through `upload_media_resumable`,
        so a dropped connection costs one chunk. `encrypted=True` marks a client-encrypted blob:
        stored opaque, never processed, and the only kind an end-to-end encrypted chat accepts.
        The filename reaches the server in the clear: leave it empty for an encrypted upload.
        """
        size = await uploads.source_size(source)
        if resumable is None:
            resumable = size > RESUMABLE_ABOVE
        if resumable:
            return await self.upload_media_resumable(source, filename=filename, purpose=purpose, encrypted=encrypted)
        return await uploads.upload_whole(self, source, size, filename=filename, purpose=purpose, encrypted=encrypted)

    async def upload_media_resumable(
        self,
        source: MediaSource,
        *,
        filename: str = "",
        purpose: str = "attachment",
        encrypted: bool = False,
        upload_id: str | None = None,
        on_started: Callable[[str], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Upload in chunks (POST /media/uploads, PUT each chunk, then complete); the media object.

        After a network error that outlasts a chunk's own retries it asks the server which chunks
        arrived and sends only the others, up to RESUME_ROUNDS times. To continue an upload after a
        restart, keep the id given to `on_started` and pass it back as `upload_id` with the same source.
        """
        return await uploads.upload_in_chunks(
            self,
            source,
            filename=filename,
            purpose=purpose,
            encrypted=encrypted,
            upload_id=upload_id,
            on_started=on_started,
        )

    async def upload_status(self, upload_id: str) -> dict[str, Any]:
        """GET /media/uploads/{id}: `{"upload_id", "size", "chunk_size", "chunk_count", "received", ...}`."""
        return await uploads.status(self, upload_id)

    async def abort_upload(self, upload_id: str) -> None:
        """DELETE /media/uploads/{id}: give up a resumable upload; the server drops its chunks."""
        await self.request("DELETE", f"/media/uploads/{_p(upload_id)}")

    async def download_media(
        self, media_id: str, *, start: int | None = None, end: int | None = None, variant: str = "original"
    ) -> bytes:
        """GET /media/download/{id}: the stored bytes, or bytes [start, end) of them.

        An encrypted attachment comes back exactly as uploaded (decrypt it with its key); a
        processed image comes back as served (metadata stripped). `variant` "small"/"large"
        picks a thumbnail. ApiError `range_not_satisfiable` (416) when `start` is past the end.
        """
        headers = {}
        if start is not None or end is not None:
            first = start or 0
            if end is not None and end <= first:
                return b""
            headers["Range"] = f"bytes={first}-{'' if end is None else end - 1}"
        reply = await self.exchange(
            "GET", f"/media/download/{_p(media_id)}", headers=headers, params={"variant": variant}
        )
        if headers and reply.status != 206:  # the server sent the whole file after all
            return reply.raw[start or 0 : end]
        return reply.raw

    async def media_thumbnail(self, media_id: str, *, size: str = "small") -> bytes:
        """GET /media/thumbnail/{id}: a processed image's (or video's) thumbnail, "small" or "large".

        ApiError `media_not_ready` while processing; `not_found` for files without one (encrypted ones).
        """
        return (await self.exchange("GET", f"/media/thumbnail/{_p(media_id)}", params={"size": size})).raw

    async def media(self, media_id: str) -> dict[str, Any]:
        """GET /media/{id}: size, kind, mime, sha256, processing status, dimensions, ..."""
        return await self.request("GET", f"/media/{_p(media_id)}")

    async def media_url(self, media_id: str, *, variant: str = "original") -> dict[str, Any]:
        """GET /media/{id}/url: `{"url", "expires_at"}`, a download link that needs no token until it expires."""
        return await self.request("GET", f"/media/{_p(media_id)}/url", params={"variant": variant})

    async def delete_media(self, media_id: str) -> None:
        """DELETE /media/{id}: delete one of my uploads."""
        await self.request("DELETE", f"/media/{_p(media_id)}")

    # -- sticker packs -----------------------------------------------------------------------

    async def create_sticker_pack(self, title: str, *, cover_media_id: str | None = None) -> dict[str, Any]:
        """POST /stickers/packs: a draft pack; add stickers, then `publish_sticker_pack`."""
        body = {"title": title, **given(cover_media_id=cover_media_id)}
        return await self.request("POST", "/stickers/packs", json=body)

    async def update_sticker_pack(self, pack_id: str, **fields: Any) -> dict[str, Any]:
        """PATCH /stickers/packs/{id} with `title` and/or `cover_media_id`."""
        return await self.request("PATCH", f"/stickers/packs/{_p(pack_id)}", json=fields)

    async def add_sticker(self, pack_id: str, media_id: str, emoji: str) -> dict[str, Any]:
        """POST /stickers/packs/{id}/stickers: my processed upload (purpose "sticker") standing for `emoji`."""
        return await self.request(
            "POST", f"/stickers/packs/{_p(pack_id)}/stickers", json={"media_id": media_id, "emoji": emoji}
        )

    async def remove_sticker(self, pack_id: str, sticker_id: str) -> None:
        await self.request("DELETE", f"/stickers/packs/{_p(pack_id)}/stickers/{_p(sticker_id)}")

    async def publish_sticker_pack(self, pack_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/stickers/packs/{_p(pack_id)}/publish")

    async def sticker_pack(self, pack_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/stickers/packs/{_p(pack_id)}")

    async def sticker_pack_by_slug(self, slug: str) -> dict[str, Any]:
        """GET /stickers/packs/by-slug/{slug}: a pack from its share link."""
        return await self.request("GET", f"/stickers/packs/by-slug/{_p(slug)}")

    async def my_sticker_packs(self) -> list[dict[str, Any]]:
        """GET /stickers/packs: the packs I made, drafts included."""
        return (await self.request("GET", "/stickers/packs"))["packs"]

    async def installed_sticker_packs(self) -> list[dict[str, Any]]:
        """GET /stickers/installed: the packs I installed, in my order."""
        return (await self.request("GET", "/stickers/installed"))["packs"]

    async def install_sticker_pack(self, pack_id: str) -> list[dict[str, Any]]:
        """POST /stickers/installed; ApiError `conflict` if it is installed already. My packs, in order."""
        return (await self.request("POST", "/stickers/installed", json={"pack_id": pack_id}))["packs"]

    async def uninstall_sticker_pack(self, pack_id: str) -> None:
        await self.request("DELETE", f"/stickers/installed/{_p(pack_id)}")

    async def reorder_sticker_packs(self, pack_ids: Iterable[str]) -> list[dict[str, Any]]:
        """PUT /stickers/installed: every installed pack, once, in the new order."""
        return (await self.request("PUT", "/stickers/installed", json={"pack_ids": list(pack_ids)}))["packs"]

    async def sticker(self, sticker_id: str) -> dict[str, Any]:
        """GET /stickers/{id}: the sticker a message names (its `media_id` is the image)."""
        return await self.request("GET", f"/stickers/{_p(sticker_id)}")
