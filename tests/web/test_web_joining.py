"""Joining chats in the web client: an admin makes invite links in the chat's info (one that lets people in,
one that needs approval), copies and revokes them; another user opens the link (https://host/#/join/<code>),
even signed out (back to it after logging in), sees what the chat is, and joins or asks to; the admin sees
the request arrive and approves or declines it; a revoked link says so."""

from __future__ import annotations

from pathlib import Path

from tests.web.conftest import PASSWORD, Browsers, WebUser


async def open_info(user: WebUser, title: str) -> None:
    await user.open_chat(title)
    await user.page.get_by_role("link", name=f"About {title}").click()
    await user.page.get_by_role("heading", name="Invite links").wait_for()


async def make_link(user: WebUser, name: str, *, approval: bool = False) -> str:
    await user.page.get_by_label("Link name").fill(name)
    if approval:
        await user.page.get_by_label("Admins approve who joins").check()
    await user.page.get_by_role("button", name="Create invite link").click()
    link = user.page.get_by_label("New invite link")
    await link.wait_for()
    await user.page.get_by_role("list", name="Invite links").get_by_text(name).wait_for()
    return await link.input_value()


async def test_invite_links_join_requests_and_revoking(browsers: Browsers, screenshot_dir: Path):
    admin = await browsers.sign_up("Ada Admin")
    ben = await browsers.sign_up("Ben")
    cleo = await browsers.open(viewport=(390, 844))
    await cleo.sign_up("Cleo")
    await admin.create_group("Book club", [], kind="Group", encrypted=False)
    await admin.send("first chapter by Friday")
    await open_info(admin, "Book club")
    open_link = await make_link(admin, "for ben")
    assert "/#/join/" in open_link
    approval_link = await make_link(admin, "needs approval", approval=True)

    # ben opens the link in a browser where he is not signed in: after logging in he is back at it
    await ben.close()
    ben = await browsers.open(ben.username)
    ben_page = ben.page
    await ben_page.goto(open_link)
    await ben_page.get_by_label("Username").fill(ben.username)
    await ben_page.get_by_label("Password").fill(PASSWORD)
    await ben_page.get_by_role("button", name="Log in").click()
    await ben_page.get_by_role("heading", name="Join Book club").wait_for(timeout=20_000)
    await ben_page.get_by_text("Group · 1 member").wait_for()
    await ben_page.get_by_role("button", name="Join", exact=True).click()
    await ben_page.get_by_role("heading", name="Book club").wait_for()
    await ben.sees("first chapter by Friday")
    await admin.page.get_by_role("list", name="Invite links").get_by_text("1 used").wait_for(timeout=20_000)

    # cleo asks to join through the approval link; the admin sees the request come and approves it
    await cleo.page.goto(approval_link)
    await cleo.page.get_by_role("heading", name="Join Book club").wait_for(timeout=20_000)
    await cleo.page.screenshot(path=str(screenshot_dir / "phone-light-join.png"))
    await cleo.page.get_by_role("button", name="Ask to join").click()
    await cleo.page.get_by_text("Your request was sent").wait_for()
    approve = admin.page.get_by_role("button", name=f"Approve {cleo.username}")
    await approve.wait_for(timeout=20_000)
    await admin.page.get_by_text("Cleo asks to join Book club").wait_for()  # said as it comes
    await admin.page.locator(".toast").wait_for(state="detached", timeout=10_000)
    await admin.page.get_by_role("heading", name="Join requests").scroll_into_view_if_needed()
    await admin.page.screenshot(path=str(screenshot_dir / "desktop-light-invite-links.png"))
    await approve.click()
    await approve.wait_for(state="detached")
    await cleo.page.get_by_text("Your request was approved").wait_for(timeout=20_000)
    await cleo.page.get_by_role("link", name="Open chat").click()
    await cleo.page.get_by_role("heading", name="Book club").wait_for()

    # revoking: the link says it no longer works
    admin.page.once("dialog", lambda d: d.accept())
    await admin.page.get_by_role("button", name="Revoke for ben").click()
    await admin.page.locator(".invite-list li.unusable", has_text="for ben").wait_for()
    stranger = await browsers.sign_up("Dora")
    await stranger.page.goto(open_link)
    await stranger.page.get_by_role("alert").get_by_text("was revoked").wait_for(timeout=20_000)
    assert await stranger.page.get_by_role("button", name="Join", exact=True).count() == 0

    # a request declined: the request list empties, the requester is told
    await stranger.page.get_by_label("Invite link or code").fill(approval_link)
    await stranger.page.get_by_role("button", name="Open link").click()
    await stranger.page.get_by_role("button", name="Ask to join").click()
    decline = admin.page.get_by_role("button", name=f"Decline {stranger.username}")
    await decline.click()
    await decline.wait_for(state="detached")
    await stranger.page.get_by_text("Your request to join was declined.").wait_for(timeout=20_000)


async def test_an_end_to_end_encrypted_group_joined_by_link(browsers: Browsers):
    """The members' browsers give their sender keys to the newcomer's device: both read each other after."""
    owner = await browsers.sign_up("Olga")
    newcomer = await browsers.sign_up("Nils")
    await owner.create_group("Secret club", [], kind="Group", encrypted=True)
    await open_info(owner, "Secret club")
    link = await make_link(owner, "for nils")
    await newcomer.page.goto(link)
    await newcomer.page.get_by_text("end-to-end encrypted").first.wait_for(timeout=20_000)
    await newcomer.page.get_by_text("You will read what is sent after you join").wait_for()
    await newcomer.page.get_by_role("button", name="Join", exact=True).click()
    await newcomer.page.get_by_role("heading", name="Secret club").wait_for()
    await newcomer.composer.wait_for()

    await owner.open_chat("Secret club")
    await owner.send("welcome, Nils", seen_by=newcomer)
    await newcomer.send("thanks, Olga", seen_by=owner)
