"""Helpers for tests that need processed uploads, sticker packs and stories."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image

from tests.conftest import Account, Api


async def processed(api: Api, who: Account, media_id: str, timeout: float = 30) -> dict[str, Any]:
    """The upload once processing has finished (ready or failed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await api.get(f"/api/v1/media/{media_id}", token=who.access_token)
        assert reply.status == 200, reply.body
        if reply.body["status"] != "pending":
            return reply.body
        assert asyncio.get_running_loop().time() < deadline, f"{media_id} still pending"
        await asyncio.sleep(0.05)


def webp_bytes(
    width: int = 64, height: int = 64, frames: int = 1, color: tuple[int, int, int] = (10, 120, 200)
) -> bytes:
    """A WebP image; animated when `frames` > 1 (each frame a different shade, so none is merged)."""
    images = [Image.new("RGB", (width, height), (color[0], color[1], (color[2] + i) % 256)) for i in range(frames)]
    buffer = io.BytesIO()
    if frames == 1:
        images[0].save(buffer, "WEBP", lossless=True)
    else:
        images[0].save(buffer, "WEBP", save_all=True, append_images=images[1:], duration=20, lossless=True)
    return buffer.getvalue()


async def sticker_image(api: Api, who: Account, data: bytes | None = None) -> dict[str, Any]:
    """An image uploaded with purpose=sticker, processed."""
    reply = await api.upload(who, data or webp_bytes(), purpose="sticker")
    assert reply.status == 201, reply.body
    return await processed(api, who, reply.body["id"])


async def new_pack(api: Api, who: Account, *emojis: str, publish: bool = True, title: str = "cats") -> dict[str, Any]:
    """A pack of `who` with one sticker per emoji (each its own image), published unless told otherwise."""
    pack = await api.post("/api/v1/stickers/packs", json={"title": title}, token=who.access_token)
    assert pack.status == 201, pack.body
    for i, emoji in enumerate(emojis or ("🐱",)):
        image = await sticker_image(api, who, webp_bytes(color=(i * 7 % 256, 50, 90)))
        added = await api.post(
            f"/api/v1/stickers/packs/{pack.body['id']}/stickers",
            json={"media_id": image["id"], "emoji": emoji},
            token=who.access_token,
        )
        assert added.status == 201, added.body
    path = f"/api/v1/stickers/packs/{pack.body['id']}"
    reply = await (
        api.post(f"{path}/publish", token=who.access_token) if publish else api.get(path, token=who.access_token)
    )
    assert reply.status == 200, reply.body
    return reply.body
