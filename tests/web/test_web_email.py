"""Email in the web client, against a real server mailing a local SMTP server (tests/mailbox.py): an
address added in Settings and verified by typing the mailed code or by opening the mailed link (signed
out, the link brings you back to it after logging in); "Forgot password?" on the log-in screen mails a
code whose link sets a new password. A server without SMTP says email is off, and shows no button that
could not work."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.mailbox import Mailbox, token_in
from tests.web.conftest import PASSWORD, AppServer, Browsers, PageProblems, WebUser, running_server

PUBLIC_URL = "https://chat.example.test"  # what the mail's links name; the test opens them on the real server


@pytest.fixture(scope="module")
async def mailbox() -> AsyncIterator[Mailbox]:
    box = await Mailbox().start()
    yield box
    await box.close()


@pytest.fixture(scope="module")
async def mail_server(tmp_path_factory, mailbox: Mailbox) -> AsyncIterator[AppServer]:
    async with running_server(
        tmp_path_factory.mktemp("sup-mail"), **mailbox.env(SUP_SERVER_PUBLIC_URL=PUBLIC_URL)
    ) as server:
        yield server


def link_in(mail: Any, path: str, server: AppServer) -> str:
    """The mailed link to `path`, pointed at the test's server."""
    found = re.search(rf"{re.escape(PUBLIC_URL)}{path}#token=\S+", mail.get_content())
    assert found, mail.get_content()
    return found.group(0).replace(PUBLIC_URL, server.url)


async def test_without_smtp_email_is_off(browsers: Browsers, sup_server: AppServer):
    user = await browsers.open()
    await user.page.goto(f"{sup_server.url}/login")
    await user.page.get_by_role("button", name="Log in").wait_for()
    assert await user.page.get_by_role("link", name="Forgot password?").count() == 0
    await user.page.goto(f"{sup_server.url}/reset-password")
    await user.page.get_by_text("This server does not send email").wait_for()
    assert await user.page.get_by_role("button", name="Send reset code").count() == 0
    await user.sign_up()
    await user.page.goto(f"{sup_server.url}/settings")
    email = user.page.locator("#settings-email")
    await email.get_by_text("This server does not send email").wait_for()
    assert await email.get_by_role("button").count() == 0


async def test_verify_an_address_by_code_and_by_link_then_reset_the_password(
    browser: Any, mail_server: AppServer, mailbox: Mailbox, problems: PageProblems, screenshot_dir: Path
):
    alice = await (await WebUser.open(browser, mail_server, problems)).sign_up("Alice")
    try:
        # an address, verified with the code typed in Settings
        first = f"alice.{uuid.uuid4().hex[:6]}@example.test"
        await alice.page.goto(f"{mail_server.url}/settings/email")
        email = alice.page.locator("#settings-email")
        await email.get_by_label("Email address").fill(first)
        await email.get_by_label("Your password").fill(PASSWORD)
        await email.get_by_role("button", name="Send code").click()
        await email.get_by_text("A code is on its way").wait_for()
        code = token_in(await mailbox.next_to(first))
        await email.get_by_label("Code from the email").fill("supe_not-the-code")
        await email.get_by_role("button", name="Verify").click()
        await email.get_by_role("alert").get_by_text("wrong, expired or was already used").wait_for()
        await email.get_by_label("Code from the email").fill(code)
        await email.get_by_role("button", name="Verify").click()
        await email.get_by_text(first).wait_for()
        await email.get_by_text("verified").first.wait_for()
        await email.screenshot(path=str(screenshot_dir / "desktop-light-settings-email.png"))

        # a new address, verified by opening the mailed link in a browser where alice is signed out
        second = f"alice.{uuid.uuid4().hex[:6]}@example.test"
        await email.get_by_label("New email address").fill(second)
        await email.get_by_label("Your password").fill(PASSWORD)
        await email.get_by_role("button", name="Send code").click()
        link = link_in(await mailbox.next_to(second), "/verify-email", mail_server)
        other = await WebUser.open(browser, mail_server, problems, alice.username, viewport=(390, 844))
        try:
            await other.page.goto(link)
            await other.page.get_by_label("Username").fill(alice.username)
            await other.page.get_by_label("Password").fill(PASSWORD)
            await other.page.get_by_role("button", name="Log in").click()
            await other.page.get_by_text(f"{second} is verified").wait_for(timeout=20_000)
            assert "token" not in other.page.url  # the code leaves the address bar
            await other.page.screenshot(path=str(screenshot_dir / "phone-light-verify-email.png"))
        finally:
            await other.close()

        # forgot password: asked for on the log-in screen, set with the mailed link
        reset_page = await WebUser.open(browser, mail_server, problems, alice.username)
        try:
            page = reset_page.page
            await page.goto(f"{mail_server.url}/login")
            await page.get_by_role("link", name="Forgot password?").click()
            seen = len(mailbox.to(second))
            await page.get_by_label("Username or email").fill(alice.username)
            await page.get_by_role("button", name="Send reset code").click()
            await page.get_by_text("a mail is on its way").wait_for()
            assert await page.get_by_label("New password", exact=True).input_value() == ""  # nothing carried over
            await page.screenshot(path=str(screenshot_dir / "desktop-light-reset-password.png"))
            link = link_in(await mailbox.next_to(second, seen), "/reset-password", mail_server)
            await page.goto(link)
            await page.get_by_label("New password", exact=True).fill("a brand new password")
            await page.get_by_label("New password again").fill("a brand new password")
            await page.get_by_role("button", name="Set new password").click()
            await page.get_by_role("heading", name="Password changed").wait_for()
            await page.get_by_role("link", name="Log in").click()
            await page.get_by_label("Username").fill(alice.username)
            await page.get_by_label("Password").fill("a brand new password")
            await page.get_by_role("button", name="Log in").click()
            await reset_page.ready()
        finally:
            await reset_page.close()
        # every device was logged out: alice's first browser is back at the log-in screen
        await alice.page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    finally:
        await alice.close()
