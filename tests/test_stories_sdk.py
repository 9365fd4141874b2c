"""Stories and stickers through the client SDK: two users post and view stories with each audience,
reply to one (the reference stays inside the encrypted envelope), and send stickers from an
installed pack in an encrypted direct chat and in a plaintext group."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sup.client.client import Client, NewDevice, ReceivedMessage, SafetyNumberChanged
from sup.client.http import ApiError
from tests.conftest import Server, new_username, png_bytes
from tests.packs import webp_bytes

PASSWORD = "correct horse battery"


@pytest.fixture
async def clients(server: Server, tmp_path):
    made: list[Client] = []

    async def make() -> Client:
        client = await Client.register(server.url, str(tmp_path / f"{len(made)}.db"), new_username(), PASSWORD)
        made.append(client)
        await client.start()
        return client

    yield make
    await asyncio.gather(*(c.close() for c in made))


async def next_received(client: Client, within: float = 15) -> ReceivedMessage:
    while True:
        item = await client.next_message(within)
        if not isinstance(item, SafetyNumberChanged | NewDevice):
            assert isinstance(item, ReceivedMessage), item
            return item


def story_ids(feed: list[dict[str, Any]]) -> set[str]:
    return {story["id"] for group in feed for story in group["stories"]}


async def test_two_users_post_view_and_answer_stories_with_each_audience(server: Server, clients):
    alice, bob = await clients(), await clients()
    chat = await alice.direct_chat(bob.user_id)  # sharing a chat puts bob in the "chats" audience
    await alice.http.add_contact(bob.user_id)
    await bob.http.add_contact(alice.user_id)
    leave_out = await alice.http.create_story_list("nobody yet")
    posted = {}
    for audience, extra in (
        ("chats", {}),
        ("contacts", {}),
        ("close_friends", {}),
        ("contacts_except", {"list_id": leave_out["id"]}),
    ):
        posted[audience] = await alice.post_story(
            png_bytes(30, 20, (len(posted) * 40, 0, 0)), audience=audience, caption=audience, **extra
        )
    assert story_ids(await bob.stories()) == {posted[a]["id"] for a in ("chats", "contacts", "contacts_except")}
    await alice.http.update_story_list("close-friends", user_ids=[bob.user_id])
    await alice.http.add_to_story_list(leave_out["id"], [bob.user_id])
    assert story_ids(await bob.stories()) == {posted[a]["id"] for a in ("chats", "contacts", "close_friends")}
    bob_story = await bob.post_story(webp_bytes(20, 20), audience="contacts")
    assert story_ids(await alice.stories()) >= {bob_story["id"], *(s["id"] for s in posted.values())}

    seen = posted["close_friends"]
    await bob.view_story(seen["id"])
    views = await alice.story_views(seen["id"])
    assert [v["user"]["id"] for v in views] == [bob.user_id]
    with pytest.raises(ApiError) as refused:
        await bob.story_views(seen["id"])
    assert refused.value.status == 403

    await bob.reply_to_story(seen, "nice one")
    got = await next_received(alice)
    assert got.chat_id == chat["id"] and got.text == "nice one"
    assert got.story == {"id": seen["id"], "author_id": alice.user_id}
    # The server relays an ordinary encrypted message: nothing in it names the story.
    stored = (await alice.http.history(chat["id"]))["items"][-1]
    assert stored["kind"] == "text" and seen["id"].encode() not in (stored["ciphertext"] or b"")
    assert seen["id"] not in str({k: v for k, v in stored.items() if k != "ciphertext"})


async def test_stickers_from_an_installed_pack_in_encrypted_and_plaintext_chats(server: Server, clients):
    alice, bob = await clients(), await clients()
    pack = await alice.make_sticker_pack(
        "Blobs", [(webp_bytes(64, 64), "🙂"), (webp_bytes(64, 64, frames=4, color=(90, 0, 0)), "🎉")]
    )
    assert pack["published"] and [s["emoji"] for s in pack["stickers"]] == ["🙂", "🎉"]
    shared = await bob.http.sticker_pack_by_slug(pack["slug"])
    installed = await bob.install_sticker_pack(shared["id"])
    assert [p["id"] for p in installed] == [pack["id"]]
    with pytest.raises(ApiError) as twice:
        await bob.install_sticker_pack(pack["id"])
    assert twice.value.status == 409
    party = (await bob.installed_sticker_packs())[0]["stickers"][1]

    direct = await bob.direct_chat(alice.user_id)
    sent = await bob.send_sticker(direct["id"], party["id"])
    assert sent["kind"] == "sticker" and sent["sticker_id"] == party["id"]
    got = await next_received(alice)
    assert got.sticker_id == party["id"] and got.text is None
    sticker = await alice.http.sticker(got.sticker_id)
    assert sticker["animated"] is True and sticker["emoji"] == "🎉"
    assert len(await alice.http.download_media(sticker["media_id"])) > 0

    group = await alice.create_group("plain", [bob.user_id], encrypted=False)
    await alice.send_sticker(group["id"], pack["stickers"][0]["id"])
    got = await next_received(bob)
    assert got.chat_id == group["id"] and got.sticker_id == pack["stickers"][0]["id"] and not got.encrypted
