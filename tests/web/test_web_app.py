"""The web client in Chromium against a real server: people sign up, chat end-to-end encrypted, in
groups and channels, send photos, reload, see key changes, and use two tabs of one device.

Elements are found by role and label, as a person (or a screen reader) finds them. Every page is watched
for uncaught errors and Content-Security-Policy violations (the `problems` fixture fails the test).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sup.client import Client
from tests.conftest import png_bytes
from tests.web.conftest import PASSWORD, AppServer, Browsers, short_id


async def test_two_people_chat_end_to_end(browsers: Browsers, screenshot_dir: Path, tmp_path: Path):
    alice = await browsers.sign_up("Alice Liddell")
    bob = await browsers.sign_up()
    await alice.screenshot(screenshot_dir, "desktop-light-empty")
    await alice.start_direct(bob.username)
    await alice.send("Hello Bob, this is end-to-end encrypted")

    # bob's list names the chat after alice; it shows the decrypted preview and one unread message
    link = bob.page.get_by_role("navigation", name="Chats").get_by_role("link", name="Alice Liddell")
    await link.wait_for(timeout=20_000)
    assert "1 unread" in (await link.get_attribute("aria-label"))
    assert "Hello Bob" in await bob.page.locator(".chat-item-preview").first.inner_text()
    await bob.open_chat("Alice Liddell")
    await bob.sees("Hello Bob, this is end-to-end encrypted")
    await bob.send("Hi Alice! Shift+Enter\nmakes a new line")
    await alice.sees("makes a new line")
    assert "\n" in await alice.message("makes a new line").locator(".text").inner_text()

    # read receipts: alice's first message is marked read once bob has seen it
    await alice.message("Hello Bob").locator(".state-read").wait_for(timeout=20_000)

    # reply
    await bob.message_action("Hello Bob", "Reply")
    await bob.composer.fill("Replying to your first message")
    await bob.composer.press("Enter")
    reply = await alice.sees("Replying to your first message")
    assert "Hello Bob" in await reply.locator(".reply-quote").inner_text()

    # react
    await alice.message_action("Replying to your first", "React 👍")
    await bob.message("Replying to your first").get_by_role("button", name="👍 1").wait_for(timeout=20_000)

    # edit
    await alice.edit("Hello Bob, this is", "Hello Bob (edited), still encrypted")
    edited = await bob.sees("Hello Bob (edited), still encrypted")
    await edited.locator(".edited").wait_for()

    # delete for everyone, and for me
    await alice.send("A message to take back", seen_by=bob)
    alice.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await alice.message_action("A message to take back", "Delete for everyone")
    await bob.messages.get_by_text("This message was deleted.").wait_for(timeout=20_000)
    await bob.message_action("Hi Alice!", "Delete for me")
    await bob.message("Hi Alice!").wait_for(state="detached")
    assert await alice.message("Hi Alice!").count() == 1

    # a photo: encrypted in the browser, uploaded as an opaque blob, decrypted on the other side
    photo = tmp_path / "red.png"
    photo.write_bytes(png_bytes(120, 80))
    await alice.page.locator("#attach-input").set_input_files(str(photo))
    image = bob.messages.get_by_role("img", name="Photo: red.png")
    await image.wait_for(timeout=20_000)
    assert (await image.get_attribute("src")).startswith("blob:")
    assert await image.evaluate("img => img.complete && img.naturalWidth") == 120

    await alice.screenshot(screenshot_dir, "desktop-light-chat")

    # a reload keeps the keys and the history: nothing is lost, and the ratchets go on
    await bob.page.reload()
    await bob.sees("Hello Bob (edited), still encrypted")
    await bob.send("Still here after a reload", seen_by=alice)
    await alice.send("And I can still write to you", seen_by=bob)

    # safety numbers: the same 60 digits on both sides
    await alice.page.get_by_role("link", name="Safety number").click()
    await bob.page.get_by_role("link", name="Safety number").click()
    a_number = await alice.page.locator(".safety-number").get_attribute("aria-label")
    b_number = await bob.page.locator(".safety-number").get_attribute("aria-label")
    assert a_number == b_number and len(a_number.replace("Safety number: ", "").replace(" ", "")) == 60
    await bob.screenshot(screenshot_dir, "desktop-light-safety-number")


async def test_a_new_device_of_a_contact_shows_a_banner(browsers: Browsers, sup_server: AppServer, tmp_path: Path):
    alice = await browsers.sign_up()
    bob = await browsers.sign_up()
    tablet = None
    try:
        await alice.write_to(bob, "before bob's new device")

        # bob logs in on another browser: a new device, with a new identity key, named by its owner
        bob_laptop = await browsers.open(bob.username)
        await bob_laptop.log_in()
        banner = alice.page.get_by_role("status").filter(has_text="has a new device")
        await banner.wait_for(timeout=20_000)
        text = await banner.inner_text()
        assert await bob_laptop.this_device() in text, text  # its name and short id
        assert "safety number" in text.lower()
        await banner.get_by_role("link", name="Compare safety numbers").wait_for()

        # what alice sends now reaches both of bob's devices
        await alice.send("after bob's new device", seen_by=bob)
        await bob_laptop.open_chat(alice.username)
        await bob_laptop.sees("after bob's new device")
        await banner.get_by_role("button", name="Dismiss").click()
        await banner.wait_for(state="detached")

        # an SDK device, named by its owner: the name the directory lists is shown
        tablet = await Client.login(
            sup_server.url, str(tmp_path / "tablet.db"), bob.username, PASSWORD, device_name="Bob's tablet"
        )
        named = alice.page.get_by_role("status").filter(has_text="Bob's tablet")
        await named.wait_for(timeout=20_000)
        assert f"Bob's tablet ({short_id(tablet.device_id)})" in await named.inner_text()
    finally:
        if tablet is not None:
            await tablet.close()


async def test_my_own_new_device_says_where_to_sign_it_out(browsers: Browsers):
    alice = await browsers.sign_up()
    phone = await browsers.open(alice.username)
    await phone.log_in()
    device = await phone.this_device()
    # on the chat list, not only in Settings; never a safety number with myself
    banner = alice.page.get_by_role("status").filter(has_text="A new device signed in to your account")
    await banner.wait_for(timeout=20_000)
    text = await banner.inner_text()
    assert f"A new device signed in to your account: {device}" in text, text
    assert "if this was not you, sign it out" in text
    assert await banner.get_by_role("link", name="Compare safety numbers").count() == 0
    await banner.get_by_role("link", name="sign it out in Settings").click()
    devices = alice.page.get_by_role("region", name="Devices")
    row = devices.get_by_role("listitem").filter(has_text=device[-9:-1])
    await row.get_by_text("new", exact=True).wait_for()
    await devices.get_by_role("button", name="Dismiss").click()
    await alice.page.get_by_text("A new device signed in").wait_for(state="detached")


async def test_a_group_of_three_and_a_channel(browsers: Browsers):
    alice = await browsers.sign_up()
    bob = await browsers.sign_up()
    carol = await browsers.sign_up()
    await alice.create_group("Family", [bob.username, carol.username])
    await alice.send("Dinner at eight?")
    for other in (bob, carol):
        await other.open_chat("Family")
        await other.sees("Dinner at eight?")
    await bob.send("Yes!")
    await carol.send("I'll bring dessert")
    for other in (alice, bob):
        await other.sees("I'll bring dessert")
    await alice.sees("Yes!")
    await carol.sees("Yes!")

    await alice.create_group("Announcements", [bob.username, carol.username], kind="Channel")
    await alice.send("The server moves on Sunday")
    await bob.open_chat("Announcements")
    await bob.sees("The server moves on Sunday")
    # a subscriber is not shown the others, but is told how many there are
    await bob.page.get_by_text("Channel · 3 members").wait_for()


async def test_two_tabs_of_one_device(browsers: Browsers):
    alice = await browsers.sign_up()
    bob = await browsers.sign_up()
    await alice.start_direct(bob.username)
    await alice.send("from the first tab")

    second = await browsers.another_tab(alice)
    await second.open_chat(bob.username)
    await second.sees("from the first tab")

    # one tab leads: it alone holds the device's lock (so the ratchets never move in two places)
    state = await second.page.evaluate(
        "async () => ({first: 0, locks: (await navigator.locks.query()).held.map(l => l.name)})"
    )
    assert sum(name.startswith("sup-crypto-") for name in state["locks"]) == 1
    leading = [await p.evaluate("() => window.supApp.get().leading") for p in (alice.page, second.page)]
    assert leading == [True, False]

    # the second tab sends through the first, and sees what arrives
    await second.send("from the second tab")
    await bob.open_chat(alice.username)
    await bob.sees("from the second tab")
    await bob.send("to both tabs", seen_by=second)
    await alice.sees("to both tabs")

    # when the leading tab closes, the other takes over
    await alice.page.close()
    await second.page.wait_for_function("() => window.supApp.get().leading", timeout=20_000)
    await bob.send("after the first tab closed", seen_by=second)
    await second.send("and the second tab answers", seen_by=bob)


async def test_offline_resume_and_revocation(browsers: Browsers):
    alice = await browsers.sign_up()
    bob = await browsers.sign_up()
    await alice.write_to(bob, "first")

    # offline: the banner says so; what was sent meanwhile arrives, in order, when the socket comes back
    await alice.page.context.set_offline(True)
    await alice.page.get_by_role("status").filter(has_text="You are offline").wait_for()
    await alice.page.evaluate("() => window.supApp.messenger.socket.stop()")
    for text in ("while you were away 1", "while you were away 2", "while you were away 3"):
        await bob.send(text)
    await alice.page.context.set_offline(False)
    await alice.page.evaluate("() => window.supApp.messenger.socket.start()")
    await alice.sees("while you were away 3")
    texts = await alice.messages.locator("li.message .text").all_inner_texts()
    assert texts[-3:] == ["while you were away 1", "while you were away 2", "while you were away 3"]
    assert await alice.page.get_by_text("You are offline").count() == 0

    # pins: alice pins a message, bob sees it above the conversation
    await alice.message_action("while you were away 2", "Pin")
    await bob.page.locator(".pinned-bar").get_by_text("while you were away 2").wait_for(timeout=20_000)

    # a voice message recorded in the page (Chromium's fake microphone plays a tone)
    await alice.page.get_by_role("button", name="Record a voice message").click()
    await alice.page.wait_for_timeout(1500)
    await alice.page.get_by_role("button", name="Stop and send the voice message").click()
    play = bob.messages.get_by_role("button", name="Play voice message")
    await play.wait_for(timeout=20_000)
    await bob.messages.get_by_role("img", name="Voice message").first.wait_for()
    await bob.page.wait_for_function(
        "() => [...document.querySelectorAll('.waveform rect')].some(r => Number(r.getAttribute('height')) > 4)",
        timeout=20_000,
    )

    # alice signs in on a phone and signs the laptop out from there: the laptop is back at the login screen
    alice_phone = await browsers.open(alice.username)
    await alice_phone.log_in()
    await alice_phone.page.get_by_role("link", name="Settings and profile").click()
    devices = alice_phone.page.get_by_role("region", name="Devices")
    alice_phone.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await devices.get_by_role("button", name="Sign out").first.click()
    await alice.page.get_by_role("button", name="Log in").wait_for(timeout=30_000)
    await alice.page.get_by_text("This device was signed out.").wait_for()
