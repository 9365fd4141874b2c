"""SQL for media rows and resumable uploads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sup.db.accounts import hold_user_row
from sup.db.database import Queryable, Row, changed_one, insert_row, keyset_page, update_row
from sup.db.stories import visible_to

_COLUMNS = (
    "id, owner_id, purpose, encrypted, kind, mime, filename, size, sha256, blob_key, status, failure, width, height,"
    " duration_ms, info, served_key, served_mime, thumb_small_key, thumb_large_key, thumb_mime, attached_at,"
    " created_at, updated_at"
)
# Every column that names a blob: a blob may be deleted only when none of them does.
BLOB_COLUMNS = ("blob_key", "served_key", "thumb_small_key", "thumb_large_key")
# What processing fills in: the same bytes always give the same values. Kind and type too: an
# MP4 sniffed as video is audio when FFmpeg finds no picture in it.
PROCESSED_COLUMNS = (
    "kind",
    "mime",
    "status",
    "failure",
    "width",
    "height",
    "duration_ms",
    "info",
    "served_key",
    "served_mime",
    "thumb_small_key",
    "thumb_large_key",
    "thumb_mime",
)
_PROCESSED = set(PROCESSED_COLUMNS)


class MediaStore:
    async def insert(self, tx: Queryable, media: dict[str, Any]) -> None:
        await insert_row(tx, "media", media)

    async def get(self, db: Queryable, media_id: str) -> Row | None:
        return await db.fetchrow(f"SELECT {_COLUMNS} FROM media WHERE id = $1", media_id)

    async def set_processed(self, tx: Queryable, media_id: str, changes: dict[str, Any], now: int) -> bool:
        """Record processing results; False if the media was deleted meanwhile."""
        assert set(changes) <= _PROCESSED, changes
        return await update_row(tx, "media", media_id, changes, now)

    async def lock_owner(self, tx: Queryable, owner_id: str) -> None:
        """Hold the user's row until commit: one quota check and insert at a time per user."""
        await hold_user_row(tx, owner_id)

    async def processed_twin(self, db: Queryable, blob_key: str, *, sticker: bool = False) -> Row | None:
        """Another unencrypted file of the same bytes whose processing is over, under the same limits
        (stickers have stricter ones: a photo refused as a sticker is not refused as a photo)."""
        return await db.fetchrow(
            f"SELECT {_COLUMNS} FROM media WHERE blob_key = $1 AND NOT encrypted AND status <> 'pending'"
            " AND (purpose = 'sticker') = $2 LIMIT 1",
            blob_key,
            sticker,
        )

    async def page(self, db: Queryable, owner_id: str, after: str | None, limit: int) -> list[Row]:
        return await keyset_page(db, f"SELECT {_COLUMNS} FROM media WHERE owner_id = $1", "id", owner_id, after, limit)

    async def release_message_media(self, tx: Queryable, message_id: str) -> None:
        """The message is being deleted for everyone: its file becomes unused, unless used elsewhere."""
        await self._unreference(
            tx,
            "m.id = (SELECT media_id FROM messages WHERE id = $1)"
            " AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.media_id = m.id AND o.id <> $1 AND o.deleted_at IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.avatar_media_id = m.id)",
            message_id,
        )

    async def release_chat_media(self, tx: Queryable, chat_id: str) -> None:
        """The chat is being deleted: its messages' files and its avatar become unused, unless used elsewhere."""
        await self._unreference(
            tx,
            "m.id IN (SELECT media_id FROM messages WHERE chat_id = $1 AND media_id IS NOT NULL"
            " UNION SELECT avatar_media_id FROM chats WHERE id = $1 AND avatar_media_id IS NOT NULL)"
            " AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.media_id = m.id AND o.chat_id <> $1"
            " AND o.deleted_at IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.avatar_media_id = m.id AND c.id <> $1)",
            chat_id,
        )

    async def _unreference(self, tx: Queryable, where: str, *args: object) -> None:
        """Files chosen by `where` (over `media m`) that no user has as avatar become orphans again.

        The orphan sweep then deletes them: the bytes of a deleted message or chat do not stay
        in someone's quota for ever. Stickers are kept for later use.
        """
        await tx.execute(
            "UPDATE media SET attached_at = NULL WHERE id IN (SELECT m.id FROM media m"
            f" WHERE m.purpose <> 'sticker' AND {where}"
            " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.avatar_media_id = m.id))",
            *args,
        )

    async def mark_attached(self, tx: Queryable, media_id: str, now: int) -> None:
        await tx.execute("UPDATE media SET attached_at = $2 WHERE id = $1 AND attached_at IS NULL", media_id, now)

    async def delete(self, tx: Queryable, media_id: str) -> Row | None:
        return await tx.fetchrow(f"DELETE FROM media WHERE id = $1 RETURNING {_COLUMNS}", media_id)

    async def used_bytes(self, db: Queryable, owner_id: str) -> int:
        used = await db.fetchval("SELECT COALESCE(SUM(size), 0) FROM media WHERE owner_id = $1", owner_id)
        reserved = await db.fetchval("SELECT COALESCE(SUM(size), 0) FROM media_uploads WHERE owner_id = $1", owner_id)
        return int(used) + int(reserved)

    async def blob_in_use(self, db: Queryable, key: str) -> bool:
        """Whether a file names the blob, or a data export (whose zip a user may have uploaded as a file)."""
        where = " OR ".join(f"{column} = $1" for column in BLOB_COLUMNS)
        return await db.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM media WHERE {where})"
            " OR EXISTS (SELECT 1 FROM account_exports WHERE blob_key = $1)",
            key,
        )

    async def orphans(self, db: Queryable, created_before: int, limit: int) -> Sequence[Row]:
        """Uploads never attached to anything, old enough that no client is still about to send them.

        Stickers are kept: people upload them to use later, and they count against the quota.
        """
        return await db.fetch(
            f"SELECT {_COLUMNS} FROM media WHERE attached_at IS NULL AND purpose <> 'sticker' AND created_at < $1"
            " ORDER BY created_at LIMIT $2",
            created_before,
            limit,
        )

    async def stuck(self, db: Queryable, created_before: int, limit: int, job_key_prefix: str) -> Sequence[Row]:
        """Pending for long with no job left to finish it (it failed for good, or was lost).

        A file's processing job has the dedupe key `job_key_prefix` + its id.
        """
        return await db.fetch(
            "SELECT id, owner_id FROM media m WHERE status = 'pending' AND created_at < $1"
            " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.dedupe_key = $3 || CAST(m.id AS TEXT)"
            " AND j.state IN ('queued', 'running')) LIMIT $2",
            created_before,
            limit,
            job_key_prefix,
        )

    # -- what may see a file -----------------------------------------------------------------

    async def visible_through_message(self, db: Queryable, media_id: str, user_id: str) -> bool:
        """A message in a chat the user is a member of uses it (and was not deleted for everyone)."""
        return await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM messages m JOIN chat_members c ON c.chat_id = m.chat_id AND c.user_id = $2"
            " WHERE (m.media_id = $1 OR m.sticker_id = $1) AND m.deleted_at IS NULL)",
            media_id,
            user_id,
        )

    async def visible_as_avatar(self, db: Queryable, media_id: str, user_id: str) -> bool:
        """A user's avatar is public to signed-in users; a chat's avatar to its members, and a public
        chat's to anyone signed in (search shows it to people who may join)."""
        return await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE avatar_media_id = $1)"
            " OR EXISTS (SELECT 1 FROM chats h JOIN chat_members c ON c.chat_id = h.id AND c.user_id = $2"
            " WHERE h.avatar_media_id = $1)"
            " OR EXISTS (SELECT 1 FROM chats WHERE avatar_media_id = $1 AND visibility = 'public')",
            media_id,
            user_id,
        )

    async def visible_through_story(self, db: Queryable, media_id: str, user_id: str, now: int) -> int | None:
        """Until when (ms) a live story shows this file to the user; None if none does."""
        return await db.fetchval(
            f"SELECT MAX(s.expires_at) FROM stories s WHERE s.media_id = $1 AND {visible_to('s', '$2', '$3')}",
            media_id,
            user_id,
            now,
        )

    async def delete_if_unused(self, tx: Queryable, media_id: str) -> Row | None:
        """Delete a file nothing uses any more (no message, avatar, story or sticker); the row if it went."""
        return await tx.fetchrow(
            "DELETE FROM media WHERE id = $1"
            " AND NOT EXISTS (SELECT 1 FROM messages o WHERE o.media_id = $1 AND o.deleted_at IS NULL)"
            " AND NOT EXISTS (SELECT 1 FROM users u WHERE u.avatar_media_id = $1)"
            " AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.avatar_media_id = $1)"
            " AND NOT EXISTS (SELECT 1 FROM stories s WHERE s.media_id = $1)"
            " AND NOT EXISTS (SELECT 1 FROM stickers k WHERE k.media_id = $1)"
            " AND NOT EXISTS (SELECT 1 FROM sticker_packs p WHERE p.cover_media_id = $1)"
            f" RETURNING {_COLUMNS}",
            media_id,
        )

    # -- resumable uploads -------------------------------------------------------------------

    async def insert_upload(self, tx: Queryable, upload: dict[str, Any]) -> None:
        await insert_row(tx, "media_uploads", upload)

    async def get_upload(self, db: Queryable, upload_id: str) -> Row | None:
        return await db.fetchrow(
            "SELECT id, owner_id, purpose, encrypted, filename, size, chunk_size, chunk_count, created_at, expires_at"
            " FROM media_uploads WHERE id = $1",
            upload_id,
        )

    async def delete_upload(self, tx: Queryable, upload_id: str) -> bool:
        return await changed_one(tx, "DELETE FROM media_uploads WHERE id = $1", upload_id)

    async def expired_uploads(self, db: Queryable, now: int, limit: int) -> list[str]:
        rows = await db.fetch("SELECT id FROM media_uploads WHERE expires_at < $1 LIMIT $2", now, limit)
        return [row["id"] for row in rows]
