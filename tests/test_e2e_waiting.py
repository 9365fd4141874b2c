"""Messages to a member who has no device yet wait in the outbox, and go by themselves when it has one.

The server refuses an encrypted message that some member cannot read (409 `member_without_device`, nothing
stored): an account an admin made (`sup admin create-user grandpa`) has no device until someone logs in to it.
"""

from __future__ import annotations

import asyncio

import pytest

from sup.client.client import (
    Client,
    MemberWithoutDevice,
    QueuedMessageDropped,
    QueuedMessageSent,
    ReceivedMessage,
    WaitingForDevice,
)
from sup.transport.services import SERVICES
from tests.conftest import Server, new_username
from tests.people import PASSWORD, People, next_of, receive


async def created_by_an_admin(server: Server) -> tuple[str, str]:
    """(user id, username) of an account made as `sup admin create-user` makes it: no device yet."""
    username = new_username()
    user = await server.app[SERVICES].accounts.create_user(username, PASSWORD)
    return user.id, username


async def first_login(people: People, username: str) -> Client:
    client = await Client.login(people.server.url, people._path(), username, PASSWORD)
    people.clients.append(client)
    await client.start()
    return client


async def nothing_of(client: Client, *kinds: type, within: float = 0.5) -> None:
    with pytest.raises(TimeoutError):
        await next_of(client, *kinds, within=within)


async def test_a_message_waits_for_the_first_device_and_goes_by_itself_in_order(people: People):
    alice = await people.register()
    grandpa_id, grandpa_name = await created_by_an_admin(people.server)
    chat = await alice.direct_chat(grandpa_id)

    with pytest.raises(MemberWithoutDevice) as waiting:
        await alice.send_text(chat["id"], "hello grandpa")
    first = waiting.value.queued
    assert first is not None and (first.chat_id, first.text, first.waiting_for) == (
        chat["id"],
        "hello grandpa",
        (grandpa_id,),
    )
    assert waiting.value.user_ids == (grandpa_id,)
    assert await next_of(alice, WaitingForDevice) == WaitingForDevice(
        chat["id"], (grandpa_id,), first.client_id, "hello grandpa"
    )
    # a later message of that chat goes behind it, even with a client_id of its own choosing
    with pytest.raises(MemberWithoutDevice) as also:
        await alice.send_text(chat["id"], "are you there?", client_id="c-2")
    assert also.value.queued is not None and also.value.queued.client_id == "c-2"
    assert (await next_of(alice, WaitingForDevice)).client_id == "c-2"
    # a file does not wait: it says so, and nothing is kept for it
    with pytest.raises(MemberWithoutDevice, match="only text messages wait") as file:
        await alice.send_file(chat["id"], b"a photo", name="photo.jpg", mime="image/jpeg")
    assert file.value.queued is None
    assert [q.client_id for q in await alice.queued()] == [first.client_id, "c-2"]
    assert (await alice.http.history(chat["id"]))["items"] == []

    # flushing by hand changes nothing while grandpa has no device, and announces nothing again
    flushed = await alice.send_queued()
    assert [q.client_id for q, _ in flushed.held] == [first.client_id, "c-2"] and not flushed.sent
    await nothing_of(alice, WaitingForDevice)

    grandpa = await first_login(people, grandpa_name)  # logs in, then publishes keys: keys.changed each time
    sent = [await next_of(alice, QueuedMessageSent) for _ in range(2)]
    assert [(s.client_id, s.text) for s in sent] == [(first.client_id, "hello grandpa"), ("c-2", "are you there?")]
    got = await receive(grandpa, 2)
    assert [(g.text, g.message_id) for g in got] == [
        ("hello grandpa", sent[0].message_id),
        ("are you there?", sent[1].message_id),
    ]
    assert await alice.queued() == []
    history = (await alice.http.history(chat["id"]))["items"]
    assert [m["client_id"] for m in history] == [first.client_id, "c-2"]  # once each, with the client_ids kept
    mine = await alice.local_history(chat["id"])
    assert [(m["message_id"], m["content"]["text"]) for m in mine] == [(s.message_id, s.text) for s in sent]

    # and the chat works as any other now
    await alice.send_text(chat["id"], "welcome")
    assert [m.text for m in await receive(grandpa, 1)] == ["welcome"]


async def test_waiting_messages_go_when_the_stream_reconnects_or_the_client_restarts(people: People):
    alice = await people.register()
    grandpa_id, grandpa_name = await created_by_an_admin(people.server)
    carol_id, carol_name = await created_by_an_admin(people.server)
    chat = await alice.direct_chat(grandpa_id)
    with pytest.raises(MemberWithoutDevice):
        await alice.send_text(chat["id"], "one")

    # keys.changed is lost (a server that does not send it): the reconnection tries again
    alice._receiver.listeners.remove(alice._outbox.on_frame)
    grandpa = await first_login(people, grandpa_name)
    await nothing_of(alice, QueuedMessageSent)
    assert alice.socket is not None and alice.socket._ws is not None
    connections = alice.socket.connections
    await alice.socket._ws.close()
    assert (await next_of(alice, QueuedMessageSent, within=15)).text == "one"
    assert alice.socket.connections > connections
    assert [m.text for m in await receive(grandpa, 1)] == ["one"]

    # what waits survives a restart, and goes when the client opens again after the device came
    other = await alice.direct_chat(carol_id)
    with pytest.raises(MemberWithoutDevice):
        await alice.send_text(other["id"], "two")
    path = str(alice.store.path)
    people.clients.remove(alice)
    await alice.close()
    carol = await first_login(people, carol_name)
    alice = await Client.open(path)
    people.clients.append(alice)
    assert [q.waiting_for for q in await alice.queued()] == [(carol_id,)]
    assert (await next_of(alice, QueuedMessageSent, within=15)).text == "two"
    assert [m.text for m in await receive(carol, 1)] == ["two"]
    assert await alice.queued() == []


async def test_in_a_group_a_waiting_message_goes_when_the_member_leaves_or_is_dropped_when_i_do(people: People):
    alice, bob = await people.register(), await people.register()
    grandpa_id, _ = await created_by_an_admin(people.server)
    family = await alice.create_group("family", [bob.user_id, grandpa_id])
    with pytest.raises(MemberWithoutDevice) as waiting:
        await alice.send_text(family["id"], "dinner at 8?")
    assert waiting.value.user_ids == (grandpa_id,)
    await nothing_of(bob, ReceivedMessage)

    await alice.remove_member(family["id"], grandpa_id)  # the server no longer waits for grandpa
    sent = await next_of(alice, QueuedMessageSent)
    assert sent.text == "dinner at 8?"
    (got,) = await receive(bob, 1)
    assert (got.text, got.message_id) == ("dinner at 8?", sent.message_id)

    # bob's group, where alice is removed while her message waits: it is dropped, and she is told
    carol_id, _ = await created_by_an_admin(people.server)
    club = await bob.create_group("club", [alice.user_id, carol_id])
    with pytest.raises(MemberWithoutDevice):
        await alice.send_text(club["id"], "hi club")
    await bob.remove_member(club["id"], alice.user_id)
    dropped = await next_of(alice, QueuedMessageDropped)
    assert (dropped.chat_id, dropped.text) == (club["id"], "hi club") and dropped.reason
    assert await alice.queued() == []


async def test_a_queued_line_waits_like_a_sent_one(people: People):
    """`queue_text` + `send_queued` (what sup chat does): held, announced once, and sent by the client itself."""
    alice = await people.register()
    grandpa_id, grandpa_name = await created_by_an_admin(people.server)
    chat = await alice.direct_chat(grandpa_id)
    queued = [await alice.queue_text(chat["id"], text) for text in ("first", "second")]
    flushed = await alice.send_queued()
    assert [(q.client_id, users) for q, users in flushed.held] == [(q.client_id, (grandpa_id,)) for q in queued]
    assert flushed.error is None and not flushed.refused and not flushed.sent
    assert [(await next_of(alice, WaitingForDevice)).text for _ in range(2)] == ["first", "second"]
    grandpa = await first_login(people, grandpa_name)
    assert [(await next_of(alice, QueuedMessageSent)).text for _ in range(2)] == ["first", "second"]
    assert [m.text for m in await receive(grandpa, 2)] == ["first", "second"]
    await asyncio.sleep(0.2)
    assert (await alice.send_queued()).sent == []
