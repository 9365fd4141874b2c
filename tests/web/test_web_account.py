"""My account in the web client's Settings: export my data (the server builds a zip, the page downloads it)
and delete my account, behind a clear warning, the password (a wrong one refused) and typing DELETE; then the
browser is signed out, its local data gone, and the account cannot log in."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

from tests.web.conftest import PASSWORD, AppServer, Browsers


async def test_export_my_data_then_delete_my_account(
    browsers: Browsers, sup_server: AppServer, screenshot_dir: Path, tmp_path: Path
):
    user = await browsers.sign_up("Erin Export")
    friend = await browsers.sign_up("Fred")
    await user.create_group("Plain group", [friend.username], encrypted=False)
    await user.send("a message the server can read")

    await user.page.goto(f"{sup_server.url}/settings/data")
    data = user.page.locator("#settings-data")
    async with user.page.expect_download(timeout=60_000) as caught:
        await data.get_by_role("button", name="Export my data").click()
    download = await caught.value
    saved = tmp_path / "export.zip"
    await download.save_as(saved)
    with zipfile.ZipFile(io.BytesIO(saved.read_bytes())) as archive:
        profile = json.loads(archive.read("profile.json"))
        assert user.username in json.dumps(profile)
        lines = [n for n in archive.namelist() if n.startswith("messages/")]
        assert any(b"a message the server can read" in archive.read(n) for n in lines)
    await data.get_by_role("status").get_by_text("ready and was downloaded").wait_for()
    await data.get_by_role("list", name="Exports").get_by_role("button").first.wait_for()
    # one a day: asking again says so
    await data.get_by_role("button", name="Export my data").click()
    await data.get_by_role("alert").get_by_text("One export a day").wait_for()
    await user.page.emulate_media(color_scheme="dark")
    await data.scroll_into_view_if_needed()
    await user.page.screenshot(path=str(screenshot_dir / "desktop-dark-settings-data.png"))
    await user.page.emulate_media(color_scheme="light")

    # deleting: a warning first, the password checked, DELETE typed
    zone = user.page.locator("#settings-delete")
    await zone.get_by_role("button", name="Delete my account…").click()
    await zone.get_by_text("This deletes your account for good.").wait_for()
    await user.page.set_viewport_size({"width": 390, "height": 844})
    await zone.scroll_into_view_if_needed()
    await user.page.screenshot(path=str(screenshot_dir / "phone-light-delete-account.png"))
    await zone.get_by_label("Password").fill("not my password")
    await zone.get_by_label("Type DELETE to confirm").fill("DELETE")
    await zone.get_by_role("button", name="Delete my account forever").click()
    await zone.get_by_role("alert").get_by_text("Wrong password.").wait_for()
    await zone.get_by_label("Password").fill(PASSWORD)
    await zone.get_by_role("button", name="Delete my account forever").click()
    await user.page.get_by_role("button", name="Log in").wait_for(timeout=20_000)
    names = await user.page.evaluate("async () => (await indexedDB.databases()).map(d => d.name)")
    assert not [n for n in names if n.startswith("sup-crypto")], names

    # the account is gone: its password logs no one in
    await user.page.get_by_label("Username").fill(user.username)
    await user.page.get_by_label("Password").fill(PASSWORD)
    await user.page.get_by_role("button", name="Log in").click()
    await user.page.get_by_role("alert").get_by_text("Wrong username or password.").wait_for()
