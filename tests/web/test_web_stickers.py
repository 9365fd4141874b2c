"""Sticker packs in the web client: a pack made in Settings (images uploaded as stickers, an emoji each,
published), shared by its link, installed, sent from the picker next to the composer and shown on the other
side (an animated WebP plays); in an encrypted chat the sticker travels in the envelope too, as the SDK
sends it; packs reordered and removed in Settings."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from PIL import Image

from sup.client import ReceivedMessage
from tests.conftest import png_bytes
from tests.test_e2e_conversations import receive
from tests.web.conftest import AppServer, Browsers, SdkUsers, WebUser, image_shown


async def frames_seen(image: Any, within: float = 1.2) -> int:
    """How many different pictures an image shows on screen over `within` seconds (1: it does not move)."""
    seen = set()
    for _ in range(8):
        seen.add(await image.screenshot(animations="allow"))
        await asyncio.sleep(within / 8)
    return len(seen)


def animated_webp() -> bytes:
    """Red, then blue, 200 ms each, for ever."""
    frames = [Image.new("RGB", (96, 96), colour) for colour in ((220, 30, 30), (30, 30, 220))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], duration=200, loop=0, lossless=True)
    return buffer.getvalue()


async def make_pack(user: WebUser, title: str, stickers: list[tuple[Path, str]]) -> str:
    """Make and publish a pack in Settings; its share link."""
    await user.page.get_by_role("link", name="Settings and profile").click()
    section = user.page.get_by_role("region", name="Sticker packs")
    await section.get_by_text("You have not made a sticker pack.").wait_for()
    await section.get_by_label("Title of a new pack").fill(title)
    await section.get_by_role("button", name="Create pack").click()
    for image, emoji in stickers:
        await section.get_by_label("Sticker image").set_input_files(str(image))
        await section.get_by_label("Emoji").fill(emoji)
        await section.get_by_role("button", name="Add sticker").click()
        await section.get_by_role("status").filter(has_text=f"Added {emoji}.").wait_for(timeout=30_000)
    user.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await section.get_by_role("button", name=f"Publish {title}").click()
    link = section.locator(".share-link .mono")
    await link.wait_for()
    # publishing installs it for its maker
    await section.get_by_role("list", name="Installed sticker packs").get_by_text(title).wait_for()
    return await link.inner_text()


async def test_a_pack_made_shared_installed_and_sent(
    browsers: Browsers, sup_server: AppServer, screenshot_dir: Path, tmp_path: Path, sdk_users: SdkUsers
):
    alice = await browsers.sign_up("Alice")
    bob = await browsers.sign_up("Bob")
    carol = await sdk_users.register("carol")
    sprout, sunflower = tmp_path / "sprout.png", tmp_path / "sunflower.webp"
    sprout.write_bytes(png_bytes(96, 96, (40, 160, 60)))
    sunflower.write_bytes(animated_webp())
    link = await make_pack(alice, "Garden", [(sprout, "🌱"), (sunflower, "🌻")])
    assert link.startswith(f"{sup_server.url}/stickers/")

    # bob opens the link (the form docs/api.md gives, /#/stickers/<slug>, works too) and installs it
    slug = link.rsplit("/", 1)[1]
    await bob.page.goto(f"{sup_server.url}/#/stickers/{slug}")
    await bob.page.get_by_role("heading", name="Sticker pack: Garden").wait_for()
    assert bob.page.url == link
    await bob.page.get_by_role("img", name="Sticker 🌻").wait_for()
    await bob.page.get_by_role("button", name="Install Garden").click()
    await bob.page.get_by_text("Installed: its stickers are in the picker").wait_for()

    # and sends one from the picker, in an encrypted chat
    await bob.page.goto(f"{sup_server.url}/")
    await bob.ready()
    await bob.start_direct(alice.username)
    await bob.page.get_by_role("button", name="Stickers").click()
    picker = bob.page.get_by_role("dialog", name="Stickers")
    await picker.get_by_role("tab", name="Garden", selected=True).wait_for()
    await picker.get_by_role("button", name="Send sticker 🌻").click()
    await picker.wait_for(state="detached")
    await bob.messages.get_by_role("img", name="Sticker 🌻").wait_for(timeout=20_000)

    await alice.page.goto(f"{sup_server.url}/")
    await alice.open_chat("Bob")
    shown = await image_shown(alice.messages.get_by_role("img", name="Sticker 🌻"))
    assert await frames_seen(shown) >= 2  # the animated WebP plays
    assert "Sticker" in await alice.page.locator(".chat-item-preview").first.inner_text()

    # the SDK takes the sticker from the envelope in an encrypted chat: the browser put it there
    with_carol = await carol.direct_chat_with(bob.username)
    await bob.page.goto(f"{sup_server.url}/chats/{with_carol['id']}")
    await bob.composer.wait_for()
    await bob.page.get_by_role("button", name="Stickers").click()
    await bob.page.get_by_role("dialog", name="Stickers").get_by_role("button", name="Send sticker 🌱").click()
    (got,) = [m for m in await receive(carol, 1) if isinstance(m, ReceivedMessage)]
    garden = (await carol.http.sticker_pack_by_slug(slug))["stickers"]
    assert got.sticker_id == next(s["id"] for s in garden if s["emoji"] == "🌱")

    # a sticker from the SDK, of a pack bob never installed, is shown too
    cats = await carol.make_sticker_pack("Cats", [(png_bytes(80, 80, (200, 120, 40)), "😺")])
    await carol.send_sticker(with_carol["id"], cats["stickers"][0]["id"])
    still = await image_shown(bob.messages.get_by_role("img", name="Sticker 😺"))
    assert await frames_seen(still) == 1  # what the check above measures: a still image does not move

    # Settings: a pack from a link, the order changed, a pack removed; the picker follows
    await bob.page.get_by_role("link", name="Settings and profile").click()
    section = bob.page.get_by_role("region", name="Sticker packs")
    await section.get_by_label("Link to a sticker pack").fill(f"{sup_server.url}/stickers/{cats['slug']}")
    await section.get_by_role("button", name="Show").click()
    await section.get_by_role("button", name="Install Cats").click()
    installed = section.get_by_role("list", name="Installed sticker packs")
    await installed.get_by_text("Cats").wait_for()
    await section.get_by_role("button", name="Move Cats up").click()
    await bob.page.wait_for_function(
        "async () => (await window.supApp.api.installedStickerPacks()).map(p => p.title).join() === 'Cats,Garden'"
    )
    await installed.get_by_role("listitem").first.filter(has_text="Cats").wait_for()
    await section.screenshot(path=str(screenshot_dir / "desktop-light-settings-stickers.png"))
    await section.get_by_role("button", name="Remove Garden").click()
    await installed.get_by_text("Garden").wait_for(state="detached")
    await bob.page.goto(f"{sup_server.url}/chats/{with_carol['id']}")
    await bob.page.get_by_role("button", name="Stickers").click()
    tabs = bob.page.get_by_role("dialog", name="Stickers").get_by_role("tab")
    await tabs.first.wait_for()
    assert await tabs.all_inner_texts() == ["Cats"]
