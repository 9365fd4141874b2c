"""Stories in the web client: posted from the browser (photo, caption, audience), shown as rings above the
chat list (authors with stories not seen first) as soon as story.new arrives, watched in a full-screen
viewer (keys, pause, progress), marked viewed (the author sees who), answered in the direct chat (the
envelope names the story, as the SDK does), deleted (story.deleted), and gone when they expire; close
friends and "contacts except" decide who sees them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sup.client import Client, ReceivedMessage
from tests.conftest import png_bytes
from tests.test_e2e_conversations import receive
from tests.web.conftest import Browsers, SdkUsers, WebUser


def rings(user: WebUser) -> Any:
    return user.page.get_by_role("list", name="Stories")


async def post_story(user: WebUser, photo: Path, caption: str, audience: str, **extra: Any) -> None:
    """Post from the New story screen; it opens my story in the viewer, which is closed again."""
    await rings(user).get_by_role("link", name="Add story").click()
    await user.page.get_by_label("Photo or video").set_input_files(str(photo))
    await user.page.get_by_role("img", name="Your photo").wait_for()
    await user.page.get_by_label("Caption").fill(caption)
    await user.page.get_by_role("radio", name=audience).check()
    for who in extra.get("leave_out", []):
        await user.page.get_by_role("checkbox", name=who).check()
    await user.page.get_by_role("button", name="Post story").click()
    viewer = user.page.get_by_role("dialog", name="Your stories")
    await viewer.get_by_role("img", name=caption).wait_for(timeout=30_000)
    await user.page.keyboard.press("Escape")
    await viewer.wait_for(state="detached")


async def fill_width(user: WebUser) -> float:
    """How far the progress bar of the story on screen is (percent)."""
    return await user.page.evaluate(
        "() => parseFloat([...document.querySelectorAll('.story-progress .fill')]"
        ".find(f => !f.classList.contains('done') && f.style.width)?.style.width || '0')"
    )


async def test_stories_posted_watched_answered_deleted_and_expired(
    browsers: Browsers, screenshot_dir: Path, tmp_path: Path, sdk_users: SdkUsers
):
    alice = await browsers.sign_up("Alice")
    bob = await browsers.sign_up("Bob")
    carol = await sdk_users.register("carol")
    await alice.start_direct(bob.username)
    await alice.send("hi bob")
    await carol.direct_chat_with(alice.username)  # carol and alice share a chat: the audience "chats"
    for colour in ((200, 60, 60), (60, 60, 200)):
        await carol.post_story(png_bytes(240, 400, colour), audience="chats", caption=f"carol {colour[0]}")

    beach = tmp_path / "beach.png"
    beach.write_bytes(png_bytes(300, 500, (240, 200, 120)))
    await post_story(bob, beach, "At the beach", "Everyone I share a chat with")
    await rings(bob).get_by_role("button", name="Your story, 1 up").wait_for()

    # alice's rings follow story.new: bob posted last, both unseen
    bob_ring = rings(alice).get_by_role("button", name="Stories of Bob, 1 new")
    await bob_ring.wait_for(timeout=20_000)
    carol_ring = rings(alice).get_by_role("button", name=f"Stories of {carol.username}, 2 new")
    await carol_ring.wait_for()

    # the viewer: bob's story, its caption; Space pauses the progress, Space again goes on
    await bob_ring.click()
    viewer = alice.page.get_by_role("dialog", name="Stories of Bob")
    await viewer.get_by_role("img", name="Story 1 of 1 from Bob: At the beach").wait_for(timeout=20_000)
    await viewer.get_by_text("At the beach").wait_for()
    await alice.page.keyboard.press(" ")
    await viewer.get_by_role("button", name="Play", pressed=True).wait_for()
    paused_at = await fill_width(alice)
    await alice.page.wait_for_timeout(700)
    assert await fill_width(alice) == paused_at < 100
    await alice.page.keyboard.press(" ")
    await alice.page.wait_for_timeout(500)
    assert await fill_width(alice) > paused_at

    # → goes on to the next author with stories not seen, from their first; ← goes back; Escape closes
    await alice.page.keyboard.press("ArrowRight")
    carols = alice.page.get_by_role("dialog", name=f"Stories of {carol.username}")
    await carols.get_by_role("img", name="Story 1 of 2").wait_for(timeout=20_000)
    await carols.get_by_role("button", name="Next story").click()  # a tap on the right
    await carols.get_by_role("img", name="Story 2 of 2").wait_for(timeout=20_000)
    await alice.page.keyboard.press("ArrowLeft")
    await carols.get_by_role("img", name="Story 1 of 2").wait_for()
    # holding the picture pauses; letting go goes on, without skipping
    box = await carols.get_by_role("button", name="Next story").bounding_box()
    await alice.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await alice.page.mouse.down()
    await carols.get_by_role("button", name="Play", pressed=True).wait_for()
    await alice.page.mouse.up()
    await carols.get_by_role("button", name="Pause", pressed=False).wait_for()
    await carols.get_by_role("img", name="Story 1 of 2").wait_for()
    await alice.page.keyboard.press("Escape")
    await carols.wait_for(state="detached")
    await rings(alice).get_by_role("button", name="Stories of Bob, all seen").wait_for()
    await rings(alice).get_by_role("button", name=f"Stories of {carol.username}, all seen").wait_for()

    # a reply: a message in the direct chat, whose envelope names the story (the SDK reads it there)
    await rings(alice).get_by_role("button", name=f"Stories of {carol.username}, all seen").click()
    await carols.get_by_label(f"Reply to {carol.username}").fill("Lovely colours")
    await carols.get_by_role("button", name="Send").click()
    await carols.get_by_role("status").filter(has_text=f"Sent to {carol.username}").wait_for(timeout=20_000)
    (got,) = [m for m in await receive(carol, 1) if isinstance(m, ReceivedMessage)]
    firsts = next(g for g in await carol.stories() if g["author"]["id"] == carol.user_id)["stories"]
    assert got.text == "Lovely colours" and got.story == {"id": firsts[-1]["id"], "author_id": carol.user_id}
    await alice.page.keyboard.press("Escape")

    await rings(alice).get_by_role("button", name="Stories of Bob, all seen").click()
    await alice.page.get_by_label("Reply to Bob").fill("Nice beach!")
    await alice.page.keyboard.press("Enter")
    await alice.page.get_by_role("status").filter(has_text="Sent to Bob").wait_for(timeout=20_000)
    await alice.page.keyboard.press("Escape")
    await bob.open_chat("Alice")
    reply = await bob.sees("Nice beach!")
    await reply.get_by_role("link", name="Replied to your story").wait_for()

    # bob sees who viewed it, then takes it down: it goes from alice's rings (story.deleted)
    await rings(bob).get_by_role("button", name="Your story, 1 up").click()
    mine = bob.page.get_by_role("dialog", name="Your stories")
    await mine.get_by_role("button", name="Seen by 1 person").click()
    await mine.get_by_role("list", name="Who viewed your story").get_by_text("Alice").wait_for()
    await bob.screenshot(screenshot_dir, "desktop-light-story-views")
    bob.page.once("dialog", lambda dialog: dialog.accept())
    await mine.get_by_role("button", name="Delete story").click()
    await mine.wait_for(state="detached")
    await rings(alice).get_by_role("button", name="Stories of Bob, all seen").wait_for(state="detached")

    # a story is gone at expires_at, with no event: carol's expire in a second here
    await alice.page.evaluate(
        "() => window.supApp._setStories(window.supApp.get().stories.map(g => ({...g,"
        " stories: g.stories.map(st => ({...st, expires_at: Date.now() + 1000}))})))"
    )
    await (
        rings(alice)
        .get_by_role("button", name=f"Stories of {carol.username}", exact=False)
        .wait_for(state="detached", timeout=5000)
    )


async def test_close_friends_and_contacts_except(browsers: Browsers, tmp_path: Path, sdk_users: SdkUsers):
    alice = await browsers.sign_up("Alice")
    bob = await sdk_users.register("bob")
    carol = await sdk_users.register("carol")
    for friend in (bob, carol):
        await friend.http.add_contact((await friend.user_by_username(alice.username))["id"])
        await alice.page.evaluate(
            "async name => { const u = await window.supApp.api.userByUsername(name);"
            " await window.supApp.api.addContact(u.id); }",
            friend.username,
        )

    # Settings, Stories: bob is a close friend
    await alice.page.get_by_role("link", name="Settings and profile").click()
    section = alice.page.get_by_role("region", name="Stories: close friends")
    await section.get_by_label("Add a close friend by username").fill(bob.username or "")
    await section.get_by_role("button", name="Add").click()
    await section.get_by_role("list", name="Close friends").get_by_text(f"@{bob.username}").wait_for()

    photo = tmp_path / "p.png"
    photo.write_bytes(png_bytes(200, 300, (90, 160, 90)))
    await post_story(alice, photo, "for close friends", "Close friends")
    await post_story(alice, photo, "not for carol", "My contacts, except…", leave_out=[carol.username])

    async def captions(client: Client) -> set[str]:
        return {st["caption"] for g in await client.stories() for st in g["stories"]}

    assert await captions(bob) == {"for close friends", "not for carol"}
    assert await captions(carol) == set()
