"""Sticker packs: made by a user, published for everyone, installed by each user in their own order.

A draft pack is its owner's alone (404 to others); once published, anyone signed in may see it,
by id or by its share link's slug, install it, and send its stickers. Messages name a sticker
(`sticker_id`), never a file: the sticker says which image and which emoji it stands for.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from sup.clock import Clock
from sup.config import StickersConfig
from sup.db.accounts import DeviceStore
from sup.db.database import Database, Queryable, Row, Transaction, from_row
from sup.db.stickers import StickerStore
from sup.domain.accounts import check_text
from sup.domain.attachments import MediaAttachments
from sup.domain.events import EventWriter, encode
from sup.domain.messages import check_reaction
from sup.errors import Code, DomainError
from sup.ids import is_uuid, uuid7

TITLE_MAX = 64
_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
UNSET = msgspec.UNSET


class Sticker(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    pack_id: str
    media_id: str  # the image: GET /api/v1/media/download/{media_id} (thumbnails too)
    emoji: str  # what it stands for
    mime: str  # image/webp or image/png
    animated: bool
    width: int | None
    height: int | None


class StickerPack(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner_id: str | None  # None once its maker's account is gone
    title: str
    slug: str  # the share link: GET /api/v1/stickers/packs/by-slug/{slug}
    cover_media_id: str | None
    published: bool
    published_at: int | None
    created_at: int
    updated_at: int
    installed: bool  # by me
    stickers: list[Sticker]


class StickerPacks(msgspec.Struct, frozen=True, kw_only=True):
    packs: list[StickerPack]


def _no_pack() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such sticker pack.")


def sticker_from_row(row: Row) -> Sticker:
    info = json.loads(row["info"]) if row["info"] else {}
    return from_row(Sticker, row, animated=bool(info.get("animated")))


@dataclass(slots=True, eq=False)
class StickerService:
    db: Database
    stickers: StickerStore
    devices: DeviceStore
    attachments: MediaAttachments
    events: EventWriter
    clock: Clock
    config: StickersConfig

    # -- making a pack -----------------------------------------------------------------------

    async def create_pack(self, owner_id: str, *, title: str, cover_media_id: str | None) -> StickerPack:
        """A draft pack: only I see it until I publish it."""
        title = _check_title(title)
        now = self.clock.now_ms()
        pack_id = uuid7(now)
        async with self.db.transaction() as tx:
            await self.stickers.lock_user(tx, owner_id)
            if await self.stickers.count_packs(tx, owner_id) >= self.config.max_packs:
                raise DomainError(Code.CONFLICT, f"You have made {self.config.max_packs} packs already.")
            if cover_media_id is not None:
                await self.attachments.as_sticker_image(tx, owner_id, cover_media_id, "cover_media_id", now)
            while not await self.stickers.insert_pack(
                tx,
                id=pack_id,
                owner_id=owner_id,
                title=title,
                slug=secrets.token_urlsafe(6),  # 48 random bits, 8 characters: short enough to type
                cover_media_id=cover_media_id,
                now=now,
            ):
                pass  # the slug was taken: draw another
            return await self._present(tx, owner_id, await self.stickers.get_pack(tx, pack_id))

    async def update_pack(
        self,
        owner_id: str,
        pack_id: str,
        *,
        title: str | msgspec.UnsetType = UNSET,
        cover_media_id: str | msgspec.UnsetType | None = UNSET,
    ) -> StickerPack:
        now = self.clock.now_ms()
        changes: dict[str, object] = {}
        if title is not UNSET:
            changes["title"] = _check_title(title)
        async with self.db.transaction() as tx:
            pack = await self._own_pack(tx, owner_id, pack_id)
            if cover_media_id is not UNSET:
                if cover_media_id is not None:
                    await self.attachments.as_sticker_image(tx, owner_id, cover_media_id, "cover_media_id", now)
                changes["cover_media_id"] = cover_media_id
            await self.stickers.update_pack(tx, pack["id"], changes, now)
            return await self._present(tx, owner_id, await self.stickers.get_pack(tx, pack["id"]))

    async def add_sticker(self, owner_id: str, pack_id: str, *, media_id: str, emoji: str) -> Sticker:
        """Add my uploaded image (purpose=sticker, processed) to my pack, standing for an emoji."""
        emoji = check_reaction(emoji)
        now = self.clock.now_ms()
        sticker_id = uuid7(now)
        async with self.db.transaction() as tx:
            pack = await self._own_pack(tx, owner_id, pack_id, lock=True)
            if await self.stickers.count_stickers(tx, pack["id"]) >= self.config.max_pack_stickers:
                raise DomainError(Code.CONFLICT, f"A pack holds at most {self.config.max_pack_stickers} stickers.")
            await self.attachments.as_sticker_image(tx, owner_id, media_id, "media_id", now)
            await self.stickers.insert_sticker(
                tx, id=sticker_id, pack_id=pack["id"], media_id=media_id, emoji=emoji, now=now
            )
            await self.stickers.update_pack(tx, pack["id"], {}, now)
            return sticker_from_row(await self.stickers.get_sticker(tx, sticker_id))

    async def remove_sticker(self, owner_id: str, pack_id: str, sticker_id: str) -> None:
        """Take a sticker out of my pack. From a published pack it is kept aside, so messages that
        sent it still show it; it can no longer be sent."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            pack = await self._own_pack(tx, owner_id, pack_id, lock=True)
            keep = pack["published_at"] is not None
            if not is_uuid(sticker_id) or not await self.stickers.take_out(tx, pack["id"], sticker_id, now, keep=keep):
                raise DomainError(Code.NOT_FOUND, "No such sticker in this pack.")
            await self.stickers.update_pack(tx, pack["id"], {}, now)

    async def publish(self, owner_id: str, pack_id: str) -> StickerPack:
        """Make my pack visible to everyone (for good): its stickers may then be sent."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            pack = await self._own_pack(tx, owner_id, pack_id, lock=True)
            if pack["published_at"] is not None:
                raise DomainError(Code.CONFLICT, "This pack is published already.")
            if not await self.stickers.count_stickers(tx, pack["id"]):
                raise DomainError(Code.CONFLICT, "Add a sticker before publishing the pack.")
            await self.stickers.publish(tx, pack["id"], now)
            return await self._present(tx, owner_id, await self.stickers.get_pack(tx, pack["id"]))

    # -- reading -----------------------------------------------------------------------------

    async def get_pack(self, viewer_id: str, pack_id: str) -> StickerPack:
        pack = await self.stickers.get_pack(self.db, pack_id) if is_uuid(pack_id) else None
        return await self._present(self.db, viewer_id, self._visible(viewer_id, pack))

    async def pack_by_slug(self, viewer_id: str, slug: str) -> StickerPack:
        """A pack by its share link."""
        pack = await self.stickers.pack_by_slug(self.db, slug) if _SLUG.match(slug) else None
        return await self._present(self.db, viewer_id, self._visible(viewer_id, pack))

    async def my_packs(self, owner_id: str) -> StickerPacks:
        """The packs I made, drafts included, oldest first."""
        rows = await self.stickers.packs_of(self.db, owner_id)
        return StickerPacks(packs=await self._present_many(self.db, owner_id, rows))

    async def get_sticker(self, viewer_id: str, sticker_id: str) -> Sticker:
        """One sticker (to show a sticker message): of a published pack, or of my own; also one taken out."""
        row = await self.stickers.get_sticker(self.db, sticker_id) if is_uuid(sticker_id) else None
        if row is None or (row["published_at"] is None and row["owner_id"] != viewer_id):
            raise DomainError(Code.NOT_FOUND, "No such sticker.")
        return sticker_from_row(row)

    # -- installing --------------------------------------------------------------------------

    async def installed(self, user_id: str) -> StickerPacks:
        """The packs I installed, in my order."""
        rows = await self.stickers.installed(self.db, user_id)
        return StickerPacks(packs=await self._present_many(self.db, user_id, rows))

    async def install(self, user_id: str, pack_id: str) -> StickerPacks:
        """Install a published pack, after the others; installing it again is a 409."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            pack = await self.stickers.get_pack(tx, pack_id) if is_uuid(pack_id) else None
            pack = self._visible(user_id, pack)
            if pack["published_at"] is None:
                raise DomainError(Code.CONFLICT, "Publish the pack before installing it.")
            await self.stickers.lock_user(tx, user_id)
            installed = await self.stickers.installed_ids(tx, user_id)
            if pack["id"] in installed:
                raise DomainError(Code.CONFLICT, "This pack is installed already.")
            if len(installed) >= self.config.max_installed:
                raise DomainError(Code.CONFLICT, f"At most {self.config.max_installed} packs can be installed.")
            await self.stickers.install(tx, user_id, pack["id"], now)
            return await self._installed_changed(tx, user_id, now)

    async def uninstall(self, user_id: str, pack_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            if not is_uuid(pack_id) or not await self.stickers.uninstall(tx, user_id, pack_id):
                raise DomainError(Code.NOT_FOUND, "That pack is not installed.")
            await self._installed_changed(tx, user_id, now)

    async def reorder(self, user_id: str, pack_ids: Sequence[str]) -> StickerPacks:
        """Put my installed packs in this order; it must name each of them once."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self.stickers.lock_user(tx, user_id)
            installed = await self.stickers.installed_ids(tx, user_id)
            if len(pack_ids) != len(installed) or set(pack_ids) != set(installed):
                detail = "pack_ids lists every installed pack once, in the new order."
                raise DomainError(Code.VALIDATION_FAILED, detail, field="pack_ids")
            await self.stickers.set_order(tx, user_id, pack_ids)
            return await self._installed_changed(tx, user_id, now)

    async def _installed_changed(self, tx: Transaction, user_id: str, now: int) -> StickerPacks:
        """My other devices learn the new list (`stickers.installed`); the list as it is now."""
        rows = await self.stickers.installed(tx, user_id)
        devices = await self.devices.active_ids_of(tx, [user_id])
        body = encode({"pack_ids": [r["id"] for r in rows]})
        await self.events.append(tx, "stickers.installed", devices, body, now)
        return StickerPacks(packs=await self._present_many(tx, user_id, rows))

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _visible(viewer_id: str, pack: Row | None) -> Row:
        """Published packs are everyone's to see; a draft only its owner's."""
        if pack is None or (pack["published_at"] is None and pack["owner_id"] != viewer_id):
            raise _no_pack()
        return pack

    async def _own_pack(self, tx: Queryable, owner_id: str, pack_id: str, *, lock: bool = False) -> Row:
        if not is_uuid(pack_id):
            raise _no_pack()
        pack = await (self.stickers.lock_pack(tx, pack_id) if lock else self.stickers.get_pack(tx, pack_id))
        pack = self._visible(owner_id, pack)
        if pack["owner_id"] != owner_id:
            raise DomainError(Code.FORBIDDEN, "Only the pack's maker can change it.")
        return pack

    async def _present(self, db: Queryable, viewer_id: str, pack: Row) -> StickerPack:
        return (await self._present_many(db, viewer_id, [pack]))[0]

    async def _present_many(self, db: Queryable, viewer_id: str, packs: Sequence[Row]) -> list[StickerPack]:
        ids = [p["id"] for p in packs]
        by_pack: dict[str, list[Sticker]] = {}
        for row in await self.stickers.stickers_of(db, ids):
            by_pack.setdefault(row["pack_id"], []).append(sticker_from_row(row))
        installed = set(await self.stickers.installed_ids(db, viewer_id))
        return [
            from_row(
                StickerPack,
                p,
                published=p["published_at"] is not None,
                installed=p["id"] in installed,
                stickers=by_pack.get(p["id"], []),
            )
            for p in packs
        ]


def _check_title(title: str) -> str:
    title = check_text(title, "title", TITLE_MAX)
    if not title:
        raise DomainError(Code.VALIDATION_FAILED, f"title is 1 to {TITLE_MAX} characters.", field="title")
    return title
