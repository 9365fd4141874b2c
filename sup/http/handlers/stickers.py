"""Sticker packs under /api/v1/stickers: making and publishing them, installing them."""

from __future__ import annotations

from sup.domain.stickers import Sticker, StickerPack, StickerPacks
from sup.http import schemas as s
from sup.http.api import Call


async def create_pack(call: Call, body: s.StickerPackCreate) -> StickerPack:
    """POST /api/v1/stickers/packs: a new draft pack (only I see it until I publish it)."""
    return await call.services.stickers.create_pack(
        call.who.user_id, title=body.title, cover_media_id=body.cover_media_id
    )


async def my_packs(call: Call) -> StickerPacks:
    """GET /api/v1/stickers/packs: the packs I made, drafts included."""
    return await call.services.stickers.my_packs(call.who.user_id)


async def pack_by_slug(call: Call) -> StickerPack:
    """GET /api/v1/stickers/packs/by-slug/{slug}: a pack by its share link."""
    return await call.services.stickers.pack_by_slug(call.who.user_id, call.param("slug"))


async def get_pack(call: Call) -> StickerPack:
    """GET /api/v1/stickers/packs/{pack_id}: a published pack, or a draft of mine, with its stickers."""
    return await call.services.stickers.get_pack(call.who.user_id, call.param("pack_id"))


async def update_pack(call: Call, body: s.StickerPackUpdate) -> StickerPack:
    """PATCH /api/v1/stickers/packs/{pack_id}: change my pack's title or cover."""
    return await call.services.stickers.update_pack(
        call.who.user_id, call.param("pack_id"), title=body.title, cover_media_id=body.cover_media_id
    )


async def add_sticker(call: Call, body: s.StickerAdd) -> Sticker:
    """POST /api/v1/stickers/packs/{pack_id}/stickers: add my uploaded image to my pack, for an emoji."""
    return await call.services.stickers.add_sticker(
        call.who.user_id, call.param("pack_id"), media_id=body.media_id, emoji=body.emoji
    )


async def remove_sticker(call: Call) -> None:
    """DELETE /api/v1/stickers/packs/{pack_id}/stickers/{sticker_id}: take a sticker out of my pack."""
    await call.services.stickers.remove_sticker(call.who.user_id, call.param("pack_id"), call.param("sticker_id"))


async def publish_pack(call: Call) -> StickerPack:
    """POST /api/v1/stickers/packs/{pack_id}/publish: make my pack visible to everyone, for good."""
    return await call.services.stickers.publish(call.who.user_id, call.param("pack_id"))


async def installed_packs(call: Call) -> StickerPacks:
    """GET /api/v1/stickers/installed: the packs I installed, in my order."""
    return await call.services.stickers.installed(call.who.user_id)


async def install_pack(call: Call, body: s.PackRef) -> StickerPacks:
    """POST /api/v1/stickers/installed: install a published pack (after the others)."""
    return await call.services.stickers.install(call.who.user_id, body.pack_id)


async def reorder_packs(call: Call, body: s.PackOrder) -> StickerPacks:
    """PUT /api/v1/stickers/installed: put my installed packs in a new order."""
    return await call.services.stickers.reorder(call.who.user_id, body.pack_ids)


async def uninstall_pack(call: Call) -> None:
    """DELETE /api/v1/stickers/installed/{pack_id}: uninstall a pack."""
    await call.services.stickers.uninstall(call.who.user_id, call.param("pack_id"))


async def get_sticker(call: Call) -> Sticker:
    """GET /api/v1/stickers/{sticker_id}: one sticker, to show a sticker message."""
    return await call.services.stickers.get_sticker(call.who.user_id, call.param("sticker_id"))
