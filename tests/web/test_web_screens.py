"""The main screens at phone width (390x844) and on a desktop (1280x800), light and dark, written as PNGs
for review (SUP_SCREENSHOTS=docs/screenshots puts them in the repo); on the way, two-factor authentication
is set up with its QR code and used to log in, and a long name and an empty state are shown."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import pyotp
import pytest
from PIL import Image, ImageDraw

from tests.conftest import png_bytes
from tests.web.conftest import PASSWORD, AppServer, Browsers, PageProblems, WebUser

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}
STICKERS = (("😀", (250, 200, 60)), ("😎", (90, 170, 240)), ("🥳", (240, 120, 170)), ("😴", (150, 120, 220)))


def encoded(image: Image.Image, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return base64.b64encode(buffer.getvalue()).decode()


def landscape() -> str:
    """A story's photo (portrait): sky, sun, hills, as base64 PNG."""
    width, height = 720, 1280
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / height
        draw.line([(0, y), (width, y)], fill=(int(90 + 150 * t), int(150 + 60 * t), int(230 - 40 * t)))
    draw.ellipse([470, 220, 630, 380], fill=(255, 214, 102))
    draw.polygon([(0, 900), (260, 640), (520, 880), (720, 700), (720, 1280), (0, 1280)], fill=(70, 140, 90))
    draw.polygon([(0, 1040), (360, 860), (720, 1010), (720, 1280), (0, 1280)], fill=(45, 105, 70))
    return encoded(image)


def face(colour: tuple[int, int, int]) -> str:
    """A sticker: a round face on a transparent background, as base64 PNG."""
    image = Image.new("RGBA", (256, 256), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse([16, 16, 240, 240], fill=(*colour, 255), outline=(40, 40, 40, 255), width=6)
    draw.ellipse([80, 90, 106, 126], fill=(40, 40, 40, 255))
    draw.ellipse([150, 90, 176, 126], fill=(40, 40, 40, 255))
    draw.arc([70, 110, 186, 200], 20, 160, fill=(40, 40, 40, 255), width=8)
    return encoded(image)


# In the page of the one who makes it: a published pack of these stickers; its id and emoji -> sticker id.
MAKE_PACK = """async ([title, stickers]) => {
  const api = window.supApp.api;
  const pack = await api.createStickerPack(title);
  for (const [emoji, b64] of stickers) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const media = await api.upload(new Blob([bytes], { type: "image/png" }), { purpose: "sticker", filename: "s.png" });
    await api.processed(media.id);
    await api.addSticker(pack.id, media.id, emoji);
  }
  const published = await api.publishStickerPack(pack.id);
  return [published.id, Object.fromEntries(published.stickers.map((s) => [s.emoji, s.id]))];
}"""
POST_STORY = """async ([b64, caption]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const file = new File([bytes], "walk.png", { type: "image/png" });
  await window.supApp.postStory({ file, audience: "chats", caption });
}"""


async def conversation(browser: Any, server: AppServer, problems: PageProblems, tmp_path: Path, **view: Any):
    """Two people with a few messages, a reply, a reaction and a photo; returns them."""
    ana = await (await WebUser.open(browser, server, problems, **view)).sign_up("Ana Beatriz Fernandes de Oliveira")
    ben = await (await WebUser.open(browser, server, problems)).sign_up("Ben")
    await ben.write_to(ana, "Are we still on for Saturday?")
    await ana.send("Yes! I'll bring the map. It is a long walk, so wear good shoes 🥾")
    await ben.sees("wear good shoes")
    await ben.message_action("wear good shoes", "Reply")
    await ben.composer.fill("Perfect, see you at the station at nine")
    await ben.composer.press("Enter")
    await ana.sees("see you at the station")
    await ben.message_action("wear good shoes", "React 👍")
    photo = tmp_path / "trail.png"
    photo.write_bytes(png_bytes(320, 200, (40, 120, 90)))
    await ben.page.locator("#attach-input").set_input_files(str(photo))
    await ana.messages.get_by_role("img", name="Photo: trail.png").wait_for(timeout=20_000)
    await ana.message("wear good shoes").get_by_role("button", name="👍 1").wait_for(timeout=20_000)
    # a sticker pack of ben's, installed by ana; ben sends a sticker and posts a story
    pack_id, sticker_ids = await ben.page.evaluate(
        MAKE_PACK, ["Faces", [[emoji, face(colour)] for emoji, colour in STICKERS]]
    )
    await ana.page.evaluate("id => window.supApp.api.installStickerPack(id)", pack_id)
    chat_id = await ben.page.evaluate("() => window.supApp.get().activeChatId")
    await ben.page.evaluate(
        "([chat, sticker]) => window.supApp.sendSticker(chat, sticker)", [chat_id, sticker_ids["🥳"]]
    )
    await ana.messages.get_by_role("img", name="Sticker 🥳").wait_for(timeout=20_000)
    await ben.page.evaluate(POST_STORY, [landscape(), "The view from the top of the trail 🌄"])
    await ana.page.wait_for_function("() => window.supApp.get().stories?.length", timeout=20_000)
    return ana, ben


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
async def test_screens(
    browsers: Browsers,
    browser: Any,
    sup_server: AppServer,
    problems: PageProblems,
    screenshot_dir: Path,
    tmp_path: Path,
    size: str,
    dark: bool,
):
    view = {"viewport": SIZES[size], "dark": dark}
    name = f"{size}-{'dark' if dark else 'light'}"
    first = await browsers.open(**view)
    await first.page.goto(f"{sup_server.url}/signup")
    await first.page.get_by_role("button", name="Sign up").wait_for()
    await first.screenshot(screenshot_dir, f"{name}-sign-up")
    await first.close()

    ana, ben = await conversation(browser, sup_server, problems, tmp_path, **view)
    try:
        await ana.page.wait_for_timeout(300)  # the photo's layout settles
        await ana.screenshot(screenshot_dir, f"{name}-chat")
        await ana.page.get_by_role("button", name="Stickers").click()
        picker = ana.page.get_by_role("dialog", name="Stickers")
        for emoji, _ in STICKERS:
            await picker.get_by_role("button", name=f"Send sticker {emoji}").locator("img").wait_for()
        await ana.page.wait_for_timeout(300)
        await ana.screenshot(screenshot_dir, f"{name}-sticker-picker")
        await ana.page.keyboard.press("Escape")
        await ana.page.goto(f"{sup_server.url}/")
        await ana.page.get_by_role("navigation", name="Chats").get_by_role("link", name="Ben").wait_for()
        ring = ana.page.get_by_role("button", name="Stories of Ben, 1 new")
        await ring.wait_for(timeout=20_000)
        await ana.screenshot(screenshot_dir, f"{name}-chat-list")
        await ring.click()
        viewer = ana.page.get_by_role("dialog", name="Stories of Ben")
        await viewer.get_by_role("img", name="Story 1 of 1 from Ben").wait_for(timeout=20_000)
        await ana.page.wait_for_timeout(1500)  # the progress bar is part way
        await ana.page.keyboard.press(" ")  # paused: the picture does not move on
        await viewer.get_by_role("button", name="Play", pressed=True).wait_for()
        await ana.page.mouse.move(0, 0)
        await ana.screenshot(screenshot_dir, f"{name}-story-viewer")
        await ana.page.keyboard.press("Escape")
        if size == "phone" and not dark:
            await ana.page.goto(f"{sup_server.url}/new/group")
            await ana.page.get_by_label("Group name").wait_for()
            await ana.screenshot(screenshot_dir, f"{name}-new-group")
            photo = tmp_path / "walk.png"
            photo.write_bytes(base64.b64decode(landscape()))
            await ana.page.goto(f"{sup_server.url}/stories/new")
            await ana.page.get_by_label("Photo or video").set_input_files(str(photo))
            await ana.page.get_by_label("Caption").fill("Sunset on the ridge")
            await ana.page.get_by_role("radio", name="Close friends").check()
            await ana.page.get_by_role("img", name="Your photo").wait_for()
            await ana.screenshot(screenshot_dir, f"{name}-new-story")
    finally:
        await ana.close()
        await ben.close()


async def test_two_factor_setup_and_login(browsers: Browsers, sup_server: AppServer, screenshot_dir: Path):
    user = await browsers.sign_up()
    await user.page.get_by_role("link", name="Settings and profile").click()
    section = user.page.get_by_role("region", name="Two-factor authentication")
    await section.get_by_label("Password").fill(PASSWORD)
    await section.get_by_role("button", name="Set up").click()
    qr = section.get_by_role("img", name="QR code for your authenticator app")
    await qr.wait_for()
    secret = (await section.locator(".secret").inner_text()).replace(" ", "")
    await section.scroll_into_view_if_needed()
    await user.screenshot(screenshot_dir, "desktop-light-2fa-setup")
    await section.get_by_label("Authentication code").fill(pyotp.TOTP(secret).now())
    await section.get_by_role("button", name="Turn on").click()
    await section.get_by_text("Save these recovery codes").wait_for()
    codes = await section.locator(".codes li").all_inner_texts()
    assert len(codes) == 10
    await user.page.get_by_role("region", name="Devices").get_by_text("this device").wait_for()
    await user.screenshot(screenshot_dir, "desktop-light-settings")

    # a new browser: the password, then a recovery code (the TOTP code above was used once already)
    other = await browsers.open(user.username)
    await other.page.goto(f"{sup_server.url}/login")
    await other.page.get_by_label("Username").fill(user.username)
    await other.page.get_by_label("Password").fill(PASSWORD)
    await other.page.get_by_role("button", name="Log in").click()
    await other.page.get_by_label("Authentication code").wait_for()
    await other.page.get_by_role("button", name="Use a recovery code instead").click()
    await other.page.get_by_label("Recovery code").fill(codes[0])
    await other.page.get_by_role("button", name="Log in").click()
    await other.page.get_by_role("navigation", name="Chats").wait_for(timeout=20_000)
    # its keys are published (it is listed to others) once it is connected
    await other.page.wait_for_function("() => window.supApp.get().connection === 'online'", timeout=20_000)
    await other.close()
    # the first browser hears of the new device of its own account (never a safety number with itself)
    banner = user.page.get_by_role("region", name="Devices").get_by_text("A new device signed in")
    await banner.wait_for(timeout=20_000)
