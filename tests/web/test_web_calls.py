"""Calls in the web client: two people in two browser contexts (Chromium's fake microphone) call each other
through a real SUP server; the signalling, with its SDP and ICE end-to-end encrypted, runs in the browsers'
own code (js/client/calls.js), and each side's RTCPeerConnection reaches "connected"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.web.conftest import AppServer, PageProblems, WebUser


async def in_call(user: WebUser, status: str, timeout: float = 30_000) -> None:
    dialog = user.page.get_by_role("dialog")
    try:
        await dialog.locator(f'.call-status[data-status="{status}"]').wait_for(timeout=timeout)
    except Exception as error:
        raise AssertionError(await user.explain(f"is not {status}")) from error


async def test_two_people_call_each_other_in_the_browser(
    browser: Any, sup_server: AppServer, problems: PageProblems, screenshot_dir: Path
):
    alice = await (await WebUser.open(browser, sup_server, problems)).sign_up("Alice Liddell")
    bob = await (await WebUser.open(browser, sup_server, problems)).sign_up("Bob Builder")
    try:
        await alice.start_direct(bob.username)
        await alice.send("Can I call you?")
        await bob.open_chat("Alice Liddell")
        await bob.sees("Can I call you?")

        # Alice calls: Bob's browser rings, with Accept and Decline.
        await alice.page.get_by_role("button", name="Call Bob Builder").click()
        incoming = bob.page.get_by_role("alertdialog", name="Alice Liddell")
        await incoming.wait_for(timeout=20_000)
        await alice.page.get_by_role("dialog").get_by_text("Ringing…").wait_for(timeout=20_000)
        await bob.screenshot(screenshot_dir, "desktop-light-incoming-call")
        await incoming.get_by_role("button", name="Accept").click()

        # Offer, answer and candidates go through SUP, encrypted; both peer connections connect.
        await in_call(alice, "connected")
        await in_call(bob, "connected")
        await alice.screenshot(screenshot_dir, "desktop-light-call")
        mute = alice.page.get_by_role("button", name="Mute")
        await mute.click()
        await alice.page.get_by_role("button", name="Unmute").wait_for()
        assert await alice.page.get_by_role("button", name="Unmute").get_attribute("aria-pressed") == "true"

        # Bob hangs up: both screens say so, and the chat keeps a line with the call's length.
        await bob.page.get_by_role("dialog").get_by_role("button", name="Hang up").click()
        await alice.page.get_by_role("dialog").get_by_text("Call ended").wait_for(timeout=20_000)
        await alice.messages.get_by_text("Call, 0:").wait_for(timeout=20_000)
        await bob.messages.get_by_text("Call, 0:").wait_for(timeout=20_000)

        # A call Bob declines is a declined call for both.
        await alice.page.get_by_role("dialog").wait_for(state="detached", timeout=10_000)
        await alice.page.get_by_role("button", name="Call Bob Builder").click()
        incoming = bob.page.get_by_role("alertdialog", name="Alice Liddell")
        await incoming.get_by_role("button", name="Decline").click()
        await alice.page.get_by_role("dialog").get_by_text("Declined").wait_for(timeout=20_000)
        await alice.messages.get_by_text("Call declined").wait_for(timeout=20_000)
    finally:
        await alice.close()
        await bob.close()
