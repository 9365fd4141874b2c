"""The web client's administration screen, for the server's administrators only: find a user, deactivate
(their browser is signed out, their login refused) and reactivate them, reset their 2FA, make and revoke
registration invites (a code that then signs someone up), read the audit log of all that, and the server's
figures. To anyone else Settings shows no way in and /admin says there is nothing there."""

from __future__ import annotations

from pathlib import Path

import pyotp

from sup.app import SERVICES
from tests.web.conftest import PASSWORD, AppServer, Browsers


async def test_admin_users_invites_audit_and_stats(browsers: Browsers, sup_server: AppServer, screenshot_dir: Path):
    boss = await browsers.open()
    await sup_server.app[SERVICES].accounts.create_user(boss.username, PASSWORD, is_admin=True)
    await boss.log_in()
    user = await browsers.sign_up("Gus Target")
    # a non-admin: no way in from Settings, and /admin has nothing
    await user.page.goto(f"{sup_server.url}/settings")
    # connected, so its refresh token was rotated and stored: reloading now cannot reuse the old one
    await user.ready()
    await user.page.get_by_role("heading", name="Sign out").wait_for()
    await user.page.get_by_role("heading", name="Your data").wait_for()
    assert await user.page.get_by_role("link", name="Open administration").count() == 0
    await user.page.goto(f"{sup_server.url}/admin")
    await user.page.get_by_text("see this page", exact=False).wait_for()
    await user.ready()

    # gus turns 2FA on (the admin resets it later)
    secret = await user.page.evaluate("async (p) => (await window.supApp.api.enable2fa(p)).secret", PASSWORD)
    await user.page.evaluate("async (c) => window.supApp.api.verify2fa(c)", pyotp.TOTP(secret).now())

    # the admin: Settings, Open administration, find gus
    await boss.page.goto(f"{sup_server.url}/settings")
    await boss.page.get_by_role("link", name="Open administration").click()
    await boss.page.get_by_role("heading", name="Administration").wait_for()
    await boss.page.get_by_label("Find a user").fill("gus targ")
    users = boss.page.get_by_role("list", name="Users")
    await users.get_by_text("Gus Target").wait_for()
    await users.get_by_text("2FA").wait_for()
    await users.get_by_role("button", name=f"Manage {user.username}").click()
    detail = boss.page.get_by_role("group", name=f"Account {user.username}")
    await detail.get_by_role("heading", name="Devices").wait_for()
    await boss.page.screenshot(path=str(screenshot_dir / "desktop-light-admin-users.png"))

    boss.page.once("dialog", lambda d: d.accept())
    await detail.get_by_role("button", name="Reset 2FA").click()
    await detail.get_by_text("2FA is off for this account.").wait_for()

    boss.page.once("dialog", lambda d: d.accept())
    await detail.get_by_role("button", name="Deactivate").click()
    await users.get_by_text("deactivated", exact=True).wait_for()
    # gus's browser is signed out, and his login is refused
    await user.page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    await user.page.get_by_label("Username").fill(user.username)
    await user.page.get_by_label("Password").fill(PASSWORD)
    await user.page.get_by_role("button", name="Log in").click()
    await user.page.get_by_role("alert").get_by_text("deactivated").wait_for()
    await detail.get_by_role("button", name="Reactivate").click()
    await detail.get_by_text("Reactivated.").wait_for()
    await user.log_in()  # and 2FA no longer asked for

    # invites: made, shown once, listed, revoked
    await boss.page.get_by_role("link", name="Invites").click()
    await boss.page.get_by_label("Uses").fill("2")
    await boss.page.get_by_role("button", name="Create invite").click()
    code = await boss.page.get_by_label("New invite code (shown only now)").input_value()
    assert code.startswith("supi_")
    invites = boss.page.get_by_role("list", name="Invites")
    await invites.get_by_text("0 of 2 used").wait_for()
    # its sign-up link fills the sign-up form's invite field
    stranger = await browsers.open(viewport=(390, 844))
    await stranger.page.goto(f"{sup_server.url}/register#invite={code}")
    assert await stranger.page.get_by_label("Invite code").input_value() == code
    await stranger.close()
    boss.page.once("dialog", lambda d: d.accept())
    await invites.get_by_role("button").first.click()
    await boss.page.get_by_text("No invites.").wait_for()

    # the audit log has each of those, newest first
    await boss.page.get_by_role("link", name="Audit log").click()
    log = boss.page.get_by_role("table")
    for action in ("invite.revoked", "invite.created", "user.reactivated", "user.deactivated", "user.2fa_reset"):
        await log.get_by_text(action, exact=True).first.wait_for()
    actions = await log.locator("tbody td:nth-child(3)").all_inner_texts()
    assert actions[:5] == [
        "invite.revoked",
        "invite.created",
        "user.reactivated",
        "user.deactivated",
        "user.2fa_reset",
    ], actions
    await boss.page.get_by_label("Action").select_option("user.deactivated")
    await boss.page.wait_for_function("() => document.querySelectorAll('table.audit tbody tr').length === 1")
    await boss.page.set_viewport_size({"width": 390, "height": 844})
    await boss.page.emulate_media(color_scheme="dark")
    await boss.page.get_by_label("Action").select_option("")
    await boss.page.screenshot(path=str(screenshot_dir / "phone-dark-admin-audit.png"))

    # the server's figures
    await boss.page.get_by_role("link", name="Server").click()
    figures = boss.page.locator(".figures")
    await figures.get_by_text("Administrators").wait_for()
    await boss.page.set_viewport_size({"width": 1280, "height": 800})
    await boss.page.emulate_media(color_scheme="light")
    await boss.page.screenshot(path=str(screenshot_dir / "desktop-light-admin-stats.png"))
