"""The main screens at phone width (390x844) and on a desktop (1280x800), light and dark, written as PNGs
for review (SUP_SCREENSHOTS=docs/screenshots puts them in the repo); on the way, two-factor authentication
is set up with its QR code and used to log in, and a long name and an empty state are shown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyotp
import pytest

from tests.conftest import png_bytes
from tests.web.conftest import PASSWORD, AppServer, PageProblems, WebUser

SIZES = {"phone": (390, 844), "desktop": (1280, 800)}


async def conversation(browser: Any, server: AppServer, problems: PageProblems, tmp_path: Path, **view: Any):
    """Two people with a few messages, a reply, a reaction and a photo; returns them."""
    ana = await (await WebUser.open(browser, server, problems, **view)).sign_up("Ana Beatriz Fernandes de Oliveira")
    ben = await (await WebUser.open(browser, server, problems)).sign_up("Ben")
    await ben.start_direct(ana.username)
    await ben.send("Are we still on for Saturday?")
    await ana.open_chat("Ben")
    await ana.sees("Are we still on for Saturday?")
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
    return ana, ben


@pytest.mark.parametrize("dark", [False, True], ids=["light", "dark"])
@pytest.mark.parametrize("size", ["phone", "desktop"])
async def test_screens(
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
    first = await WebUser.open(browser, sup_server, problems, **view)
    await first.page.goto(f"{sup_server.url}/signup")
    await first.page.get_by_role("button", name="Sign up").wait_for()
    await first.screenshot(screenshot_dir, f"{name}-sign-up")
    await first.close()

    ana, ben = await conversation(browser, sup_server, problems, tmp_path, **view)
    try:
        await ana.page.wait_for_timeout(300)  # the photo's layout settles
        await ana.screenshot(screenshot_dir, f"{name}-chat")
        await ana.page.goto(f"{sup_server.url}/")
        await ana.page.get_by_role("navigation", name="Chats").get_by_role("link", name="Ben").wait_for()
        await ana.screenshot(screenshot_dir, f"{name}-chat-list")
        if size == "phone" and not dark:
            await ana.page.goto(f"{sup_server.url}/new/group")
            await ana.page.get_by_label("Group name").wait_for()
            await ana.screenshot(screenshot_dir, f"{name}-new-group")
    finally:
        await ana.close()
        await ben.close()


async def test_two_factor_setup_and_login(
    browser: Any, sup_server: AppServer, problems: PageProblems, screenshot_dir: Path
):
    user = await (await WebUser.open(browser, sup_server, problems)).sign_up()
    try:
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
        other = await WebUser.open(browser, sup_server, problems, user.username)
        try:
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
        finally:
            await other.close()
        # the first browser hears of the new device of its own account (never a safety number with itself)
        banner = user.page.get_by_role("region", name="Devices").get_by_text("A new device signed in")
        await banner.wait_for(timeout=20_000)
    finally:
        await user.close()
