"""Search in the web client: one box finds people (start a direct chat), chats (public ones joined from
the results) and messages, merged from two places: the server's index for chats it can read (a channel)
and the browser's own index, in IndexedDB, of the end-to-end encrypted messages it decrypted (which the
server cannot search). A result opens its chat at the message, even one scrolled far back; the browser's
index follows edits and deletes, survives a reload, and is deleted on logout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.web.conftest import AppServer, Browsers, WebUser


async def search(user: WebUser, query: str) -> Any:
    """Search from the chat list's Search link; the results region."""
    if "/search" not in user.page.url:
        await user.page.get_by_role("navigation", name="Chats").get_by_role("link", name="Search", exact=True).click()
    box = user.page.get_by_label("Search people, chats and messages")
    await box.fill(query)
    await box.press("Enter")
    await (
        user.page.locator(".results[aria-busy=false]")
        .and_(user.page.locator(f'.results[data-query="{query}"]'))
        .wait_for()
    )
    return user.page.locator("#main")


def message_results(user: WebUser) -> Any:
    return user.page.locator("section[aria-labelledby=found-messages]")


async def found_texts(user: WebUser) -> list[str]:
    await user.page.wait_for_function("() => !document.querySelector('[aria-busy=true]')")
    return await message_results(user).locator(".result-snippet").all_inner_texts()


async def test_search_people_chats_and_messages_local_and_server(
    browsers: Browsers, sup_server: AppServer, screenshot_dir: Path
):
    alice = await browsers.sign_up("Alice Search")
    bob = await browsers.sign_up("Bob Finder")
    # an encrypted direct chat: only the browsers can search it
    await alice.start_direct(bob.username)
    await alice.send("the zebra crossing is on Elm street")
    await alice.send("nothing to see here")
    await bob.open_chat("Alice Search")
    await bob.sees("the zebra crossing is on Elm street")

    # a public channel of bob's, with a post the server indexes
    await bob.create_group("Zebra news", [], kind="Channel")
    await bob.page.get_by_role("link", name="About Zebra news").click()
    public = bob.page.get_by_label("Public: anyone on this server can find it in search and join")
    await public.check()
    await bob.page.wait_for_function(
        "() => window.supApp.get().chats.find(c => c.title === 'Zebra news')?.visibility === 'public'"
    )
    await bob.open_chat("Zebra news")
    await bob.send("zebras migrate in spring")

    # bob: his encrypted message (from his own index) and the channel post (from the server), merged
    await search(bob, "zebra")
    texts = await found_texts(bob)
    assert any("zebra crossing" in t for t in texts), texts
    await message_results(bob).get_by_text("on this device").first.wait_for()
    # prefix while typing: "zebr" finds zebra and zebras
    await search(bob, "zebr")
    await bob.page.locator("mark", has_text="zebras").first.wait_for()
    texts = await found_texts(bob)
    assert any("zebras migrate" in t for t in texts) and any("zebra crossing" in t for t in texts), texts
    await bob.page.screenshot(path=str(screenshot_dir / "desktop-light-search.png"))
    # every word is required
    await search(bob, "zebra spring")
    assert [t for t in await found_texts(bob)] == [t for t in await found_texts(bob) if "spring" in t]

    # alice finds bob by name and the public channel, which she joins from the results
    await search(alice, "zebra")
    chats = alice.page.locator("section[aria-labelledby=found-chats]")
    await chats.get_by_role("button", name="Join Zebra news").click()
    await alice.page.get_by_role("heading", name="Zebra news").wait_for()
    await alice.sees("zebras migrate in spring")
    await search(alice, "Finder")
    people = alice.page.locator("section[aria-labelledby=found-people]")
    await people.get_by_role("button", name=f"Message {bob.username}").click()
    await alice.composer.wait_for()
    assert "/chats/" in alice.page.url

    # a result opens the chat at the message, marked
    await search(alice, "crossing")
    await message_results(alice).get_by_role("button", name="crossing").first.click()
    found = alice.page.locator("li.message.found-message", has_text="zebra crossing")
    await found.wait_for()

    # the device's index follows an edit and a delete
    await alice.edit("the zebra crossing is on Elm street", "the giraffe crossing is on Oak street")
    await alice.sees("the giraffe crossing is on Oak street")
    await search(alice, "zebra crossing")
    assert not any("crossing" in t for t in await found_texts(alice))
    await search(alice, "giraffe")
    assert any("giraffe crossing" in t for t in await found_texts(alice))

    # a reload keeps the index (and what it finds), nothing is indexed twice
    await alice.page.reload()
    await alice.ready()
    await search(alice, "giraffe")
    assert len([t for t in await found_texts(alice) if "giraffe" in t]) == 1
    # deleted for everyone: no longer found
    await alice.open_chat(bob.username)
    alice.page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await alice.message_action("the giraffe crossing is on Oak street", "Delete for everyone")
    await alice.messages.get_by_text("This message was deleted.").first.wait_for(timeout=20_000)
    await search(alice, "giraffe")
    assert not any("giraffe" in t for t in await found_texts(alice))

    # phone width, dark
    await alice.page.set_viewport_size({"width": 390, "height": 844})
    await alice.page.emulate_media(color_scheme="dark")
    await search(alice, "zebr")
    await alice.page.screenshot(path=str(screenshot_dir / "phone-dark-search.png"))

    # logging out deletes the index with the other local data
    await alice.page.goto(f"{sup_server.url}/settings")
    alice.page.once("dialog", lambda d: d.accept())
    await alice.page.get_by_role("button", name="Log out").click()
    await alice.page.get_by_role("button", name="Log in").wait_for()
    names = await alice.page.evaluate("async () => (await indexedDB.databases()).map(d => d.name)")
    assert "sup-search" not in names, names
