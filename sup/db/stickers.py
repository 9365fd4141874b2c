"""SQL for sticker packs, their stickers, and which packs each user installed (in their order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sup.db.accounts import hold_user_row
from sup.db.database import Queryable, Row, changed_one, fetch_in, insert_row, update_row

_PACK_COLUMNS = "p.id, p.owner_id, p.title, p.slug, p.cover_media_id, p.published_at, p.created_at, p.updated_at"
_PACKS = f"SELECT {_PACK_COLUMNS} FROM sticker_packs p"
_STICKER_COLUMNS = (
    "k.id, k.pack_id, k.media_id, k.emoji, k.position, k.removed_at, k.created_at, m.mime, m.width, m.height, m.info"
)


class StickerStore:
    # -- packs -------------------------------------------------------------------------------

    async def insert_pack(
        self, tx: Queryable, *, id: str, owner_id: str, title: str, slug: str, cover_media_id: str | None, now: int
    ) -> bool:
        """False if the slug is taken (draw another)."""
        pack = {
            "id": id,
            "owner_id": owner_id,
            "title": title,
            "slug": slug,
            "cover_media_id": cover_media_id,
            "published_at": None,
            "created_at": now,
            "updated_at": now,
        }
        return await insert_row(tx, "sticker_packs", pack, "ON CONFLICT (slug) DO NOTHING")

    async def get_pack(self, db: Queryable, pack_id: str) -> Row | None:
        return await db.fetchrow(f"{_PACKS} WHERE p.id = $1", pack_id)

    async def pack_by_slug(self, db: Queryable, slug: str) -> Row | None:
        return await db.fetchrow(f"{_PACKS} WHERE p.slug = $1", slug)

    async def packs_of(self, db: Queryable, owner_id: str) -> list[Row]:
        return list(await db.fetch(f"{_PACKS} WHERE p.owner_id = $1 ORDER BY p.created_at, p.id", owner_id))

    async def count_packs(self, db: Queryable, owner_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM sticker_packs WHERE owner_id = $1", owner_id)

    async def lock_user(self, tx: Queryable, user_id: str) -> None:
        """Hold the user's row until commit: one count-then-insert at a time per user."""
        await hold_user_row(tx, user_id)

    async def lock_pack(self, tx: Queryable, pack_id: str) -> Row | None:
        """The pack, its row held until commit (stickers are counted and placed one at a time)."""
        await tx.execute("UPDATE sticker_packs SET updated_at = updated_at WHERE id = $1", pack_id)
        return await self.get_pack(tx, pack_id)

    async def update_pack(self, tx: Queryable, pack_id: str, changes: dict[str, Any], now: int) -> None:
        assert set(changes) <= {"title", "cover_media_id"}, changes
        await update_row(tx, "sticker_packs", pack_id, changes, now)

    async def publish(self, tx: Queryable, pack_id: str, now: int) -> bool:
        """False if it was published already."""
        return await changed_one(
            tx,
            "UPDATE sticker_packs SET published_at = $2, updated_at = $2 WHERE id = $1 AND published_at IS NULL",
            pack_id,
            now,
        )

    # -- stickers ----------------------------------------------------------------------------

    async def stickers_of(self, db: Queryable, pack_ids: Sequence[str]) -> list[Row]:
        """The stickers in these packs (not those taken out), in their order."""
        return await fetch_in(
            db,
            f"SELECT {_STICKER_COLUMNS} FROM stickers k JOIN media m ON m.id = k.media_id"
            " WHERE k.pack_id IN ($ids) AND k.removed_at IS NULL ORDER BY k.pack_id, k.position",
            pack_ids,
        )

    async def count_stickers(self, db: Queryable, pack_id: str) -> int:
        return await db.fetchval("SELECT COUNT(*) FROM stickers WHERE pack_id = $1 AND removed_at IS NULL", pack_id)

    async def insert_sticker(
        self, tx: Queryable, *, id: str, pack_id: str, media_id: str, emoji: str, now: int
    ) -> None:
        await tx.execute(
            "INSERT INTO stickers (id, pack_id, media_id, emoji, position, removed_at, created_at)"
            " VALUES ($1, $2, $3, $4, (SELECT COALESCE(MAX(position), 0) + 1 FROM stickers WHERE pack_id = $2),"
            " NULL, $5)",
            id,
            pack_id,
            media_id,
            emoji,
            now,
        )

    async def get_sticker(self, db: Queryable, sticker_id: str) -> Row | None:
        """A sticker with its file's facts and whether its pack is published (taken-out ones too)."""
        return await db.fetchrow(
            f"SELECT {_STICKER_COLUMNS}, p.published_at, p.owner_id FROM stickers k"
            " JOIN media m ON m.id = k.media_id JOIN sticker_packs p ON p.id = k.pack_id WHERE k.id = $1",
            sticker_id,
        )

    async def sendable(self, db: Queryable, sticker_id: str) -> Row | None:
        """The sticker, if a message may name it: in its pack still, and the pack is published."""
        return await db.fetchrow(
            "SELECT k.id, k.media_id FROM stickers k JOIN sticker_packs p ON p.id = k.pack_id"
            " WHERE k.id = $1 AND k.removed_at IS NULL AND p.published_at IS NOT NULL",
            sticker_id,
        )

    async def take_out(self, tx: Queryable, pack_id: str, sticker_id: str, now: int, *, keep: bool) -> bool:
        """Take a sticker out of its pack: kept as removed (`keep`, messages may name it) or deleted."""
        if keep:
            return await changed_one(
                tx,
                "UPDATE stickers SET removed_at = $3 WHERE id = $1 AND pack_id = $2 AND removed_at IS NULL",
                sticker_id,
                pack_id,
                now,
            )
        return await changed_one(tx, "DELETE FROM stickers WHERE id = $1 AND pack_id = $2", sticker_id, pack_id)

    # -- installed packs ---------------------------------------------------------------------

    async def installed(self, db: Queryable, user_id: str) -> list[Row]:
        """The packs a user installed, in the user's order."""
        return list(
            await db.fetch(
                f"SELECT {_PACK_COLUMNS} FROM user_sticker_packs i JOIN sticker_packs p ON p.id = i.pack_id"
                " WHERE i.user_id = $1 ORDER BY i.position, i.installed_at",
                user_id,
            )
        )

    async def installed_ids(self, db: Queryable, user_id: str) -> list[str]:
        rows = await db.fetch(
            "SELECT pack_id FROM user_sticker_packs WHERE user_id = $1 ORDER BY position, installed_at", user_id
        )
        return [r["pack_id"] for r in rows]

    async def install(self, tx: Queryable, user_id: str, pack_id: str, now: int) -> bool:
        """Add the pack after the others; False if it was installed already."""
        return await changed_one(
            tx,
            "INSERT INTO user_sticker_packs (user_id, pack_id, position, installed_at) VALUES ($1, $2,"
            " (SELECT COALESCE(MAX(position), 0) + 1 FROM user_sticker_packs WHERE user_id = $1), $3)"
            " ON CONFLICT (user_id, pack_id) DO NOTHING",
            user_id,
            pack_id,
            now,
        )

    async def uninstall(self, tx: Queryable, user_id: str, pack_id: str) -> bool:
        return await changed_one(
            tx, "DELETE FROM user_sticker_packs WHERE user_id = $1 AND pack_id = $2", user_id, pack_id
        )

    async def set_order(self, tx: Queryable, user_id: str, pack_ids: Sequence[str]) -> None:
        for position, pack_id in enumerate(pack_ids, start=1):
            await tx.execute(
                "UPDATE user_sticker_packs SET position = $3 WHERE user_id = $1 AND pack_id = $2",
                user_id,
                pack_id,
                position,
            )
