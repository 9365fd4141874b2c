"""The rules for using an uploaded file: in a message, as a sticker, as an avatar, in a story.

Checked in the same transaction as the message or profile change that uses the file, so
a file is never attached to something it does not fit (an opaque encrypted blob in a
channel, a photo of someone else's as my avatar), and an attached file stops being an
orphan that cleanup would remove.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sup.config import MediaConfig
from sup.db.database import Queryable, Row
from sup.db.media import MediaStore
from sup.db.stickers import StickerStore
from sup.errors import Code, DomainError
from sup.ids import is_uuid

STICKER_MIMES = ("image/webp", "image/png")


def _unusable(field: str, detail: str) -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, detail, field=field)


@dataclass(slots=True, eq=False)
class MediaAttachments:
    media: MediaStore
    stickers: StickerStore
    config: MediaConfig

    async def _find(self, tx: Queryable, user_id: str, media_id: str, field: str, *, others_visible: bool) -> Row:
        """The file, if this user may use it; someone else's file they cannot see does not exist for them.

        Only the owner learns why a file failed: to anyone else a failure would tell that the id
        exists, and what it held.
        """
        row = await self.media.get(tx, media_id) if is_uuid(media_id) else None
        if row is not None and row["owner_id"] != user_id and not others_visible:
            row = None
        if row is None:
            raise _unusable(field, f"{field} names no uploaded file.")
        if row["status"] == "failed":
            if row["owner_id"] != user_id:
                raise _unusable(field, f"{field} names no uploaded file.")
            raise _unusable(field, f"That file could not be processed: {row['failure']}")
        return row

    async def for_message(self, tx: Queryable, user_id: str, media_id: str, *, encrypted_chat: bool, now: int) -> None:
        """My own upload, or one I can see in a message (forwarding); opaque only in encrypted chats."""
        visible = is_uuid(media_id) and await self.media.visible_through_message(tx, media_id, user_id)
        row = await self._find(tx, user_id, media_id, "media_id", others_visible=visible)
        if bool(row["encrypted"]) != encrypted_chat:
            raise _unusable(
                "media_id",
                "End-to-end encrypted chats take client-encrypted uploads (encrypted=true), other chats plain ones.",
            )
        await self.media.mark_attached(tx, media_id, now)

    async def as_sticker(self, tx: Queryable, user_id: str, sticker_id: str, now: int) -> None:
        """A message names a sticker (not a file): one still in a published pack, whoever made it."""
        row = await self.stickers.sendable(tx, sticker_id) if is_uuid(sticker_id) else None
        if row is None:
            raise _unusable(
                "sticker_id", "sticker_id names no sticker of a published pack (a draft pack's cannot be sent)."
            )
        await self.media.mark_attached(tx, row["media_id"], now)

    async def as_sticker_image(self, tx: Queryable, user_id: str, media_id: str, field: str, now: int) -> Row:
        """My upload as a sticker's image (or a pack's cover): a small PNG or WebP, animated only as WebP.

        Processing refused bigger ones already; the limits are checked again for files processed
        before they were set.
        """
        row = await self._find(tx, user_id, media_id, field, others_visible=False)
        c = self.config
        if row["purpose"] != "sticker" or row["kind"] != "image" or row["encrypted"]:
            raise _unusable(field, f"{field} names an image uploaded with purpose=sticker.")
        if row["status"] == "pending":
            raise DomainError(
                Code.MEDIA_NOT_READY, "The image is still being processed; add it when it is ready.", field=field
            )
        info = json.loads(row["info"]) if row["info"] else {}
        frames = int(info.get("frames") or (2 if info.get("animated") else 1))
        if row["mime"] not in STICKER_MIMES or (frames > 1 and row["mime"] != "image/webp"):
            raise _unusable(field, "A sticker is a PNG or WebP image; an animated one is an animated WebP.")
        if row["size"] > c.max_sticker_bytes:
            raise _unusable(field, f"A sticker image is at most {c.max_sticker_bytes} bytes.")
        if (row["width"] or 0) * (row["height"] or 0) > c.max_sticker_pixels:
            raise _unusable(field, f"A sticker image has at most {c.max_sticker_pixels} pixels.")
        if frames > c.max_sticker_frames:
            raise _unusable(field, f"An animated sticker has at most {c.max_sticker_frames} frames.")
        await self.media.mark_attached(tx, media_id, now)
        return row

    async def for_story(self, tx: Queryable, user_id: str, media_id: str, now: int) -> Row:
        """My own photo or video, uploaded without end-to-end encryption (the server shows it to the audience)."""
        row = await self._find(tx, user_id, media_id, "media_id", others_visible=False)
        if row["purpose"] != "attachment" or row["encrypted"] or row["kind"] not in ("image", "video"):
            raise _unusable(
                "media_id", "A story is a photo or video uploaded without end-to-end encryption (purpose=attachment)."
            )
        await self.media.mark_attached(tx, media_id, now)
        return row

    async def message_going(self, tx: Queryable, message_id: str) -> None:
        """A message is deleted for everyone: its file goes too, unless something else uses it."""
        await self.media.release_message_media(tx, message_id)

    async def chat_going(self, tx: Queryable, chat_id: str) -> None:
        """A chat is deleted: the files of its messages and its avatar go, unless used elsewhere."""
        await self.media.release_chat_media(tx, chat_id)

    async def as_avatar(self, tx: Queryable, user_id: str, media_id: str, now: int) -> None:
        row = await self._find(tx, user_id, media_id, "avatar_media_id", others_visible=False)
        if row["kind"] != "image" or row["encrypted"]:
            raise _unusable("avatar_media_id", "An avatar is an image uploaded without end-to-end encryption.")
        await self.media.mark_attached(tx, media_id, now)
