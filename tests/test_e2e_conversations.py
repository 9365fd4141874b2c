"""End-to-end encrypted conversations between real clients (sup.client.Client) through a real server.

Every device decrypts every message meant for it; the server only ever relays ciphertext.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sup.client.client import Client, ReceivedMessage, SafetyNumberChanged, Undecryptable
from sup.client.crypto import CryptoError
from sup.client.socket import SupSocket
from tests.conftest import Server, new_username
from tests.people import PASSWORD, People, assert_quiet, receive  # tests/web import them from here too


async def test_two_users_with_two_devices_each_in_a_direct_chat(people: People):
    alice = await people.register()
    bob = await people.register()
    alice_tablet = await people.another_device(alice)
    bob_phone = await people.another_device(bob)

    chat = await alice.direct_chat(bob.user_id)
    assert chat["encrypted"] is True and chat["type"] == "direct"

    conversation = [
        (alice, "hi bob"),
        (bob_phone, "hi alice, from my phone"),
        (bob, "and from my laptop"),
        (alice_tablet, "tablet here"),
        (alice, "one more"),
        (alice, "and another"),
    ]
    everyone = [alice, alice_tablet, bob, bob_phone]
    for sender, text in conversation:
        sent = await sender.send_text(chat["id"], text)
        for device in everyone:
            if device is sender:
                continue
            (got,) = await receive(device, 1)
            assert isinstance(got, ReceivedMessage), got
            assert (got.text, got.message_id, got.seq) == (text, sent["id"], sent["seq"])
            assert (got.sender_user_id, got.sender_device_id) == (sender.user_id, sender.device_id)
            assert got.from_me == (device.user_id == sender.user_id)

    # the server keeps ciphertext only
    page = await bob.http.history(chat["id"])
    assert all(m["body"] is None for m in page["items"])
    assert all(b"hi bob" not in (m["ciphertext"] or b"") for m in page["items"])

    # both sides compute the same safety number over all of each other's devices
    assert await alice.safety_number(bob.user_id) == await bob_phone.safety_number(alice.user_id)
    assert len(await alice.safety_number(bob.user_id)) == 60

    # a device that logs in later gets the messages sent after it (the sender refetches devices on 409)
    bob_desktop = await people.another_device(bob)
    await alice.send_text(chat["id"], "welcome, desktop")
    for device in (alice_tablet, bob, bob_phone, bob_desktop):
        (got,) = await receive(device, 1)
        assert isinstance(got, ReceivedMessage) and got.text == "welcome, desktop"
    await bob_desktop.send_text(chat["id"], "desktop says hi")
    for device in (alice, alice_tablet, bob, bob_phone):
        (got,) = await receive(device, 1)
        assert isinstance(got, ReceivedMessage) and got.text == "desktop says hi"
    await assert_quiet(*everyone, bob_desktop)


async def test_a_tampered_ciphertext_is_shown_and_the_session_continues(people: People):
    alice = await people.register()
    bob = await people.register()
    chat = await alice.direct_chat(bob.user_id)
    await alice.send_text(chat["id"], "first")
    await bob.send_text(chat["id"], "answer")  # both ratchets are running now
    assert [m.text for m in await receive(bob, 1)] == ["first"]
    assert [m.text for m in await receive(alice, 1)] == ["answer"]

    real_send = alice.http.send_message

    async def tampering(*args: Any, recipients: dict[str, bytes] | None = None, **kw: Any):
        flipped = {d: c[:-1] + bytes([c[-1] ^ 1]) for d, c in (recipients or {}).items()}
        return await real_send(*args, recipients=flipped, **kw)

    alice.http.send_message = tampering  # type: ignore[method-assign]
    tampered = await alice.send_text(chat["id"], "you will not read this")
    alice.http.send_message = real_send  # type: ignore[method-assign]
    await alice.send_text(chat["id"], "but this, yes")

    bad, good = await receive(bob, 2)
    assert isinstance(bad, Undecryptable) and bad.message_id == tampered["id"] and bad.reason
    assert isinstance(good, ReceivedMessage) and good.text == "but this, yes"
    history = await bob.local_history(chat["id"])
    assert [m["status"] for m in history] == ["ok", "sent", "undecryptable", "ok"]

    await bob.send_text(chat["id"], "still talking")
    assert [m.text for m in await receive(alice, 1)] == ["still talking"]


async def test_a_five_member_group(people: People):
    members = [await people.register() for _ in range(5)]
    second_devices = [await people.another_device(members[0]), await people.another_device(members[1])]
    owner = members[0]
    group = await owner.create_group("five", [m.user_id for m in members[1:]])
    assert group["encrypted"] is True
    everyone = members + second_devices

    async def round_of_messages(senders: list[Client], devices: list[Client], tag: str) -> None:
        sent = {}
        for sender in senders:
            message = await sender.send_text(group["id"], f"{tag} from {sender.device_id}")
            sent[message["id"]] = (sender, message)
        for device in devices:
            expected = {mid for mid, (sender, _) in sent.items() if sender is not device}
            got = await receive(device, len(expected))
            assert all(isinstance(g, ReceivedMessage) for g in got), got
            assert {g.message_id for g in got} == expected
            for g in got:
                sender, message = sent[g.message_id]
                assert g.text == f"{tag} from {sender.device_id}" and g.seq == message["seq"]
                assert g.sender_device_id == sender.device_id

    await round_of_messages(everyone, everyone, "round 1")
    await round_of_messages(members[2:4], everyone, "round 2")  # keys already shared: no new distributions

    # a device added later gets the next messages
    late = await people.another_device(members[3])
    everyone.append(late)
    await round_of_messages([members[1], late], everyone, "round 3")

    # the last member is removed: nobody's sender key it holds is used again
    removed = members[4]
    remaining = [c for c in everyone if c.user_id != removed.user_id]
    await owner.remove_member(group["id"], removed.user_id)
    await asyncio.sleep(0.3)  # the removal event reaches the remaining devices
    ciphertexts = []
    for sender in (owner, members[2], second_devices[1]):
        sent = await sender.send_text(group["id"], "after the removal")
        ciphertexts.append((sender, (await owner.http.message(sent["id"]))["ciphertext"]))
    for device in remaining:
        expected = sum(1 for s, _ in ciphertexts if s is not device)
        got = await receive(device, expected)
        assert all(isinstance(g, ReceivedMessage) and g.text == "after the removal" for g in got), got
    for sender, ciphertext in ciphertexts:
        with pytest.raises(CryptoError):  # the removed device holds only the old sender keys
            removed.crypto.group_decrypt(group["id"], sender.user_id, sender.device_id, ciphertext)
    await assert_quiet(removed)


async def test_a_group_of_one_can_be_written_to_and_grows(people: People):
    """Nobody else to hold a sender key is no reason to refuse a message (it once was: 409 sender_key_required)."""
    alice, bob = await people.register(), await people.register()
    group = await alice.create_group("notes", [])
    await alice.send_text(group["id"], "before bob")
    await alice.add_members(group["id"], [bob.user_id])
    await asyncio.sleep(0.3)  # the membership event reaches alice's device
    await alice.send_text(group["id"], "after bob joined")
    got = await receive(bob, 1)
    assert [g.text for g in got if isinstance(g, ReceivedMessage)] == ["after bob joined"]


async def test_a_tampered_group_message_is_shown_and_the_group_continues(people: People):
    alice, bob, carol = [await people.register() for _ in range(3)]
    group = await alice.create_group("trio", [bob.user_id, carol.user_id])
    await alice.send_text(group["id"], "hello")
    for device in (bob, carol):
        assert [m.text for m in await receive(device, 1)] == ["hello"]

    real_send = alice.http.send_message

    async def tampering(*args: Any, ciphertext: bytes | None = None, **kw: Any):
        assert ciphertext is not None
        return await real_send(*args, ciphertext=ciphertext[:40] + bytes([ciphertext[40] ^ 1]) + ciphertext[41:], **kw)

    alice.http.send_message = tampering  # type: ignore[method-assign]
    bad_message = await alice.send_text(group["id"], "forged")
    alice.http.send_message = real_send  # type: ignore[method-assign]
    await alice.send_text(group["id"], "genuine")
    for device in (bob, carol):
        bad, good = await receive(device, 2)
        assert isinstance(bad, Undecryptable) and bad.message_id == bad_message["id"]
        assert isinstance(good, ReceivedMessage) and good.text == "genuine"


async def test_a_device_that_was_away_decrypts_after_a_rotation(people: People):
    """A device closed while the group re-keys gets the new sender key and the messages when it comes back."""
    alice, bob = await people.register(), await people.register()
    group = await alice.create_group("pair", [bob.user_id])
    await alice.send_text(group["id"], "before")
    assert [m.text for m in await receive(bob, 1)] == ["before"]

    # bob's device goes away; meanwhile alice rotates (a member was removed) and speaks
    store_path = str(bob.store.path)
    people.clients.remove(bob)
    await bob.close()
    carol = await people.register()
    await alice.add_members(group["id"], [carol.user_id])
    await alice.remove_member(group["id"], carol.user_id)
    await alice.send_text(group["id"], "after the rotation")
    await alice.send_text(group["id"], "and again")

    bob = await Client.open(store_path)
    people.clients.append(bob)
    texts = [m.text for m in await receive(bob, 2)]
    assert texts == ["after the rotation", "and again"]


async def test_a_group_message_waits_for_its_sender_key(people: People, tmp_path):
    """A group message handled before its sender key is kept (in the store), then decrypted when the key comes."""
    alice = await people.register()
    bob = await Client.register(people.server.url, str(tmp_path / "bob.db"), new_username(), PASSWORD)
    people.clients.append(bob)  # not started: this test feeds it events itself
    group = await alice.create_group("pair", [bob.user_id])
    sent = await alice.send_text(group["id"], "wait for it")

    socket = SupSocket(bob.http, cursor=bob.store.cursor)
    await socket.start()
    frames = []
    while not any(f["type"] == "message.new" for f in frames):
        frames.append(await socket.next(10))
    await socket.close()
    (key_frame,) = [f for f in frames if f["type"] == "sender_key"]
    (message_frame,) = [f for f in frames if f["type"] == "message.new"]
    assert key_frame["cursor"] < message_frame["cursor"]

    await bob._receiver.handle_batch([message_frame])  # out of order, as if the key were late
    assert bob._state.inbox.empty()
    assert [p["message"]["id"] for p in await bob.store.pending(group["id"])] == [sent["id"]]
    await bob._receiver.handle_batch([key_frame])
    got = bob._state.inbox.get_nowait()
    assert isinstance(got, ReceivedMessage) and got.text == "wait for it" and got.message_id == sent["id"]
    assert await bob.store.pending(group["id"]) == []


async def test_a_device_that_lost_its_keys_is_shown_as_a_safety_number_change(people: People):
    alice, bob, chat = await people.in_contact("before")
    number_before = await alice.safety_number(bob.user_id)

    bob = await people.with_new_identity(bob)  # bob's device lost its keys

    await asyncio.sleep(0.3)  # alice's device hears keys.changed
    await alice.send_text(chat["id"], "after")
    notice = await alice.next_message(10)
    assert isinstance(notice, SafetyNumberChanged) and notice.user_id == bob.user_id
    assert [m.text for m in await receive(bob, 1)] == ["after"]
    assert await alice.safety_number(bob.user_id) != number_before
    assert await alice.safety_number(bob.user_id) == await bob.safety_number(alice.user_id)


@pytest.fixture(scope="module")
async def low_server(server_factory) -> Server:
    return await server_factory(SUP_CRYPTO_PREKEY_LOW_THRESHOLD="100")


async def test_prekeys_are_topped_up_when_the_server_runs_low(low_server: Server, tmp_path):
    people = People(low_server, tmp_path)
    try:
        alice, bob = await people.register(), await people.register()
        assert (await bob.http.prekey_status())["one_time_prekeys"] == 100
        await alice.direct_chat(bob.user_id)
        await alice.send_text((await alice.direct_chat(bob.user_id))["id"], "takes one of bob's prekeys")
        assert [m.text for m in await receive(bob, 1)] == ["takes one of bob's prekeys"]
        for _ in range(100):
            if (await bob.http.prekey_status())["one_time_prekeys"] == 199:
                break
            await asyncio.sleep(0.05)
        assert (await bob.http.prekey_status())["one_time_prekeys"] == 199
        assert bob.crypto.one_time_prekeys_left() == 199
    finally:
        await people.close()
