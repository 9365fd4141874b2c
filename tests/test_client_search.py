"""The SDK's search and joining against a real server: encrypted chats searched on the device (the
server cannot), the server's search of channels, and a new member of an encrypted group through
an invite link reading and writing under sender keys."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from sup.client.client import FoundMessage, ReceivedMessage, invite_code
from sup.client.store import ClientStore
from sup.searchtext import query_terms
from tests.people import People, receive


def texts(found: list[FoundMessage]) -> list[str]:
    return [item.text for item in found]


async def test_encrypted_chats_are_searched_on_the_device(people: People):
    alice, bob = await people.register(), await people.register()
    direct = await alice.direct_chat(bob.user_id)
    group = await alice.create_group("plans", [bob.user_id])
    await alice.send_text(direct["id"], "Meet me at the Café, 8 o'clock")
    await alice.send_text(group["id"], "the café is closed on Mondays")
    sent = await alice.send_text(group["id"], "bring a torch")
    received = await receive(bob, 3)
    assert all(isinstance(item, ReceivedMessage) for item in received)

    assert texts(await bob.search("cafe")) == ["the café is closed on Mondays", "Meet me at the Café, 8 o'clock"]
    assert texts(await bob.search("cafe", direct["id"])) == ["Meet me at the Café, 8 o'clock"]
    assert texts(await alice.search("TORCH")) == ["bring a torch"]  # what I sent is kept (and found) too
    (found,) = await bob.search("mond")  # typing: the start of a word
    assert [piece for piece, match in found.snippet if match] == ["Mondays"]
    assert found.chat_id == group["id"] and found.sender_user_id == alice.user_id
    assert await bob.search('" * OR (') == [] and await bob.search("") == []
    with pytest.raises(ValueError):
        await bob.search(" ".join(["word"] * 17))
    # The server has no text of these: its search finds nothing.
    assert (await bob.search_messages("cafe"))["items"] == []

    await alice.edit_text(group["id"], sent["id"], "bring a lantern")
    await receive(bob, 1)
    assert texts(await bob.search("torch")) == [] and texts(await bob.search("lantern")) == ["bring a lantern"]
    await alice.delete_message(sent["id"])
    await receive(bob, 1)
    assert await bob.search("lantern") == []


async def test_an_older_store_gets_its_search_index_when_opened(tmp_path):
    path = tmp_path / "old.db"
    store = await ClientStore.open(path)
    async with store.batch() as batch:
        batch.put_message(
            message_id="m1",
            chat_id="c1",
            seq=1,
            sender_user_id="u",
            sender_device_id="d",
            status="ok",
            content={"text": "kept before search existed"},
            created_at=1,
        )
    await store.close()
    conn = sqlite3.connect(path)  # as SUP's client stores were before version 2
    conn.executescript(
        "DROP TRIGGER message_text_insert; DROP TRIGGER message_text_update; DROP TRIGGER message_text_delete;"
        " DROP TABLE message_text; PRAGMA user_version = 1;"
    )
    conn.close()
    store = await ClientStore.open(path)
    try:
        assert [m["message_id"] for m in await store.search(query_terms("existed"))] == ["m1"]
        assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (2,)
    finally:
        await store.close()


async def test_channels_are_found_searched_and_joined_through_the_server(people: People):
    owner, reader = await people.register(), await people.register()
    channel = await owner.http.create_channel("Gardening tips", visibility="public")
    await owner.send_text(channel["id"], "Prune the roses in early spring")

    found = await reader.search_chats("gardening")
    assert [(c["id"], c["joined"]) for c in found] == [(channel["id"], False)]
    assert (await reader.search_messages("roses"))["items"] == []  # not a member yet
    assert [u["id"] for u in await reader.search_users(owner.username or "")] == [owner.user_id]

    joined = await reader.join_chat(channel["id"])
    assert joined["status"] == "joined" and joined["chat"]["id"] == channel["id"]
    page = await reader.search_messages("rose")
    assert [item["message"]["body"] for item in page["items"]] == ["Prune the roses in early spring"]
    assert [part["text"] for part in page["items"][0]["snippet"] if part["match"]] == ["roses"]
    await owner.send_text(channel["id"], "Roses like sun")
    await receive(reader, 1)
    assert texts(await reader.search("roses")) == ["Roses like sun"]  # what this device received


async def test_a_new_member_of_an_encrypted_group_joins_by_link_and_talks(people: People):
    alice, carol, bob = await people.register(), await people.register(), await people.register()
    group = await alice.create_group("e2e club", [carol.user_id])
    await alice.send_text(group["id"], "before bob")
    await receive(carol, 1)

    link = await alice.create_invite(group["id"], max_uses=1)
    preview = await bob.preview_invite(f"https://sup.example/#/join/{link['code']}")
    assert preview["chat"]["title"] == "e2e club" and preview["chat"]["encrypted"] is True
    joined = await bob.join_by_invite(f"https://sup.example/#/join/{link['code']}")
    assert joined["status"] == "joined" and joined["chat"]["encrypted"] is True
    assert invite_code(link["code"]) == link["code"]

    await alice.send_text(group["id"], "welcome bob")
    for client in (bob, carol):
        (item,) = await receive(client, 1)
        assert isinstance(item, ReceivedMessage) and item.text == "welcome bob", item
    await bob.send_text(group["id"], "hello from bob")
    for client in (alice, carol):
        (item,) = await receive(client, 1)
        assert isinstance(item, ReceivedMessage) and item.text == "hello from bob", item
    assert texts(await bob.search("bob")) == ["hello from bob", "welcome bob"]  # never "before bob"
    assert texts(await carol.search("bob")) == ["hello from bob", "welcome bob", "before bob"]


async def test_a_request_approved_later_brings_the_chat(people: People):
    alice, bob = await people.register(), await people.register()
    group = await alice.create_group("by request", [], encrypted=False)
    link = await alice.create_invite(group["id"], requires_approval=True)
    asked = await bob.join_by_invite(link["code"])
    assert asked["status"] == "requested" and asked.get("chat") is None
    assert [r["user_id"] for r in await alice.join_requests(group["id"])] == [bob.user_id]
    events: list[dict] = []
    bob.on_event(events.append)
    await alice.approve_join_request(group["id"], bob.user_id)
    deadline = asyncio.get_running_loop().time() + 10
    while not any(e["type"] == "chat.member.added" for e in events):
        assert asyncio.get_running_loop().time() < deadline, events
        await asyncio.sleep(0.05)
    assert (await bob.chat(group["id"]))["title"] == "by request"
    await alice.send_text(group["id"], "you are in")
    (item,) = await receive(bob, 1)
    assert item.text == "you are in"
