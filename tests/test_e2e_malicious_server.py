"""The SDK against a server that lies: it must not be able to read, forge, or silently re-route messages.

Each test plays the malicious server by feeding a client events it made up (`_handle_batch`, as the event
stream would) or by changing what `SupHttp` answers; the honest parts run on a real server.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import msgspec
import pytest

from sup.client.client import (
    Attachment,
    BadDeviceKeys,
    Client,
    ClientError,
    NewDevice,
    ReceivedMessage,
    SafetyNumberChanged,
    Undecryptable,
    encode_envelope,
)
from sup.client.crypto import DeviceCrypto, NoSession, SignedPrekey
from sup.client.http import SupHttp, b64e
from sup.client.store import ClientStore, StoreInUse
from tests.people import PASSWORD, People, assert_quiet, receive
from tests.torsion import mixed_order_signer


async def items_until(client: Client, wanted: type, within: float = 10) -> list[Any]:
    """Every item up to and including the first of type `wanted`."""
    found = []
    while not found or not isinstance(found[-1], wanted):
        found.append(await client.next_message(within))
    return found


def fake_message(chat_id: str, sender: Client, **fields: Any) -> dict[str, Any]:
    """A `message.new` event the server made up, claiming to come from `sender`."""
    message = {
        "id": str(uuid.uuid4()),
        "chat_id": chat_id,
        "seq": 10_000,
        "sender_id": sender.user_id,
        "sender_device_id": sender.device_id,
        "kind": "text",
        "body": None,
        "ciphertext": None,
        "media_id": None,
        "created_at": 0,
        **fields,
    }
    return {"type": "message.new", "message": message}


# -- 1. downgrade -------------------------------------------------------------------------------


async def test_a_chat_cannot_be_switched_to_plaintext_by_the_server(people: People):
    alice, bob, carol = await people.register(), await people.register(), await people.register()
    direct = await alice.direct_chat(bob.user_id)
    group = await alice.create_group("trio", [bob.user_id, carol.user_id])

    for chat in (direct, group):
        await alice._receiver.handle_batch([{"type": "chat.updated", "chat": {**chat, "encrypted": False}}])
        assert (await alice.chat(chat["id"]))["encrypted"] is True
        sent = await alice.send_text(chat["id"], "still secret")
        assert (await alice.http.message(sent["id"]))["body"] is None
        (got,) = await receive(bob, 1)
        assert isinstance(got, ReceivedMessage) and got.encrypted and got.text == "still secret"

    # a direct chat first seen as "not encrypted" is encrypted all the same
    await alice.store.put_chat({**direct, "encrypted": False})
    alice._chats.known.pop(direct["id"])
    with pytest.raises(ClientError):
        await alice.send(direct["id"], text="x", attachments=[Attachment("m", b"", b"", 0)])
    sent = await alice.send_text(direct["id"], "encrypted anyway")
    assert (await alice.http.message(sent["id"]))["body"] is None


async def test_plaintext_in_an_encrypted_chat_is_refused(people: People):
    alice, bob, chat = await people.in_contact("hello")

    forged = fake_message(chat["id"], alice, body="send the money to account 1234")
    with_file = fake_message(chat["id"], alice, kind="media", body="", media_id=str(uuid.uuid4()))
    await bob._receiver.handle_batch([forged, with_file])
    for frame in (forged, with_file):
        got = await bob.next_message(5)
        assert isinstance(got, Undecryptable) and got.message_id == frame["message"]["id"], got
        assert "plaintext" in got.reason

    # a keyless attachment inside an encrypted message would be fetched unchecked: refused as well
    client_id = str(uuid.uuid4())
    envelope = encode_envelope(
        chat["id"], client_id=client_id, text="see file", attachments=[Attachment("media-1", b"", b"", 0)]
    )

    async def deliver(ciphertext: bytes | None, recipients: dict[str, bytes] | None) -> dict[str, Any]:
        return await alice.http.send_message(chat["id"], client_id, recipients=recipients)

    sent = await alice._sender.encrypted(await alice.chat(chat["id"]), envelope, deliver)
    (got,) = await receive(bob, 1)
    assert isinstance(got, Undecryptable) and got.message_id == sent["id"] and "without a key" in got.reason


# -- 2. ghost devices ---------------------------------------------------------------------------


async def test_a_device_added_to_a_known_user_is_shown_before_use(people: People):
    alice, bob, chat = await people.in_contact()
    number_before = await alice.safety_number(bob.user_id)

    ghost = await people.another_device(bob, "phone")  # as if the server had logged in a device of its own
    await alice.send_text(chat["id"], "who reads this?")
    notices = [i for i in await items_until(alice, NewDevice) if isinstance(i, NewDevice)]
    assert notices == [NewDevice(bob.user_id, ghost.device_id, ghost.crypto.identity_key, "phone")]
    assert [m.text for m in await receive(ghost, 1)] == ["who reads this?"]
    number_with_ghost = await alice.safety_number(bob.user_id)
    assert number_with_ghost != number_before
    assert number_with_ghost == await bob.safety_number(alice.user_id)

    # the server hides the ghost while the safety number is computed: the number still counts it
    real_user_keys = alice.http.user_keys

    async def hiding(user_id: str) -> list[dict[str, Any]]:
        return [d for d in await real_user_keys(user_id) if d["device_id"] != ghost.device_id]

    alice.http.user_keys = hiding  # type: ignore[method-assign]
    assert await alice.safety_number(bob.user_id) == number_with_ghost
    alice.http.user_keys = real_user_keys  # type: ignore[method-assign]

    # shown once: not again for the next message
    await alice.send_text(chat["id"], "again")
    await receive(bob, 2)
    await asyncio.sleep(0.2)
    assert not [i for i in _drain(alice) if isinstance(i, NewDevice)]


async def test_a_message_from_an_unlisted_device_is_announced_first(people: People):
    alice, bob, chat = await people.in_contact()

    alice._devices.check_new = _nothing  # type: ignore[method-assign]  # the server suppresses keys.changed
    ghost = await people.another_device(bob)
    sent = await ghost.send_text(chat["id"], "hi, it's bob (really)")
    found = await items_until(alice, ReceivedMessage)
    assert NewDevice(bob.user_id, ghost.device_id, ghost.crypto.identity_key) in found
    assert found[-1].message_id == sent["id"]
    assert found.index(NewDevice(bob.user_id, ghost.device_id, ghost.crypto.identity_key)) < len(found) - 1


async def _nothing(*args: Any) -> None:
    return None


def _drain(client: Client) -> list[Any]:
    found = []
    while not client._state.inbox.empty():
        found.append(client._state.inbox.get_nowait())
    return found


# -- 3. one process per store -------------------------------------------------------------------


async def test_a_store_is_used_by_one_process_at_a_time(people: People, tmp_path):
    alice = await people.register()
    path = str(alice.store.path)
    with pytest.raises(StoreInUse, match="in use"):
        await ClientStore.open(path)
    with pytest.raises(ClientError, match="in use"):
        await Client.open(path)
    script = f"import asyncio; from sup.client.store import ClientStore; asyncio.run(ClientStore.open({path!r}))"
    other_process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(other_process.communicate(), 60)
    assert other_process.returncode != 0 and b"StoreInUse" in stderr

    people.clients.remove(alice)
    await alice.close()
    again = await Client.open(path)  # released on close
    people.clients.append(again)


# -- 4. replays and lost messages ---------------------------------------------------------------


async def test_a_replayed_ciphertext_under_a_new_id_is_reported(people: People):
    alice, bob = await people.register(), await people.register()
    frames: list[dict[str, Any]] = []
    bob.on_event(lambda frame: frames.append(frame) if frame["type"] == "message.new" else None)
    chat = await alice.direct_chat(bob.user_id)
    await alice.send_text(chat["id"], "once")
    assert [m.text for m in await receive(bob, 1)] == ["once"]
    (original,) = frames

    replay = {k: v for k, v in original.items() if k != "cursor"}
    await bob._receiver.handle_batch([replay])  # the same message again: it was shown, so nothing is shown
    await assert_quiet(bob)

    renamed = {"type": "message.new", "message": {**original["message"], "id": str(uuid.uuid4()), "seq": 99}}
    await bob._receiver.handle_batch([renamed])
    (got,) = await receive(bob, 1)
    assert isinstance(got, Undecryptable) and got.message_id == renamed["message"]["id"]
    assert "already used" in got.reason


# -- 5. a device with bad keys ------------------------------------------------------------------


async def test_a_device_with_an_unusable_bundle_is_named(people: People):
    alice, bob = await people.register(), await people.register()
    chat = await alice.direct_chat(bob.user_id)
    real_bundle = alice.http.prekey_bundle

    async def forged_signature(user_id: str, device_id: str) -> dict[str, Any]:
        found = await real_bundle(user_id, device_id)
        spk = found["signed_prekey"]
        return {**found, "signed_prekey": {**spk, "signature": bytes(64)}}

    alice.http.prekey_bundle = forged_signature  # type: ignore[method-assign]
    with pytest.raises(BadDeviceKeys) as refused:
        await alice.send_text(chat["id"], "nothing goes out")
    assert (refused.value.user_id, refused.value.device_id) == (bob.user_id, bob.device_id)
    assert bob.device_id in str(refused.value)
    assert (await alice.http.history(chat["id"]))["items"] == []

    alice.http.prekey_bundle = real_bundle  # type: ignore[method-assign]
    await alice.send_text(chat["id"], "now it works")
    assert [m.text for m in await receive(bob, 1)] == ["now it works"]


async def test_a_published_identity_key_with_a_small_order_component_is_bad_device_keys(people: People):
    # A device (broken, or the server's) publishes identity key A + T with a signed prekey whose signature
    # plain Ed25519 accepts, so the directory takes it; encrypting to it must name the device, not crash.
    alice, bob = await people.register(), await people.register()
    spk = DeviceCrypto.create().signed_prekey()
    identity, signature = await asyncio.to_thread(mixed_order_signer, b"\x05" + spk.public_key)
    async with SupHttp(people.server.url) as odd:
        odd_device = (await odd.login(bob.username or "", PASSWORD, device_name="odd")).device_id
        await odd.publish_keys(identity, SignedPrekey(spk.key_id, spk.public_key, signature), [])
        chat = await alice.direct_chat(bob.user_id)
        with pytest.raises(BadDeviceKeys) as refused:
            await alice.send_text(chat["id"], "nothing goes out")
        assert (refused.value.user_id, refused.value.device_id) == (bob.user_id, odd_device)
        assert "small-order component" in refused.value.reason
        assert (await alice.http.history(chat["id"]))["items"] == []
        await odd.logout()
    await alice.send_text(chat["id"], "now it works")
    assert [m.text for m in await receive(bob, 1)] == ["now it works"]


# -- 6. an untrusted identity holds messages ----------------------------------------------------


async def test_messages_from_an_untrusted_identity_wait_for_trust(people: People):
    alice, bob = await people.register(), await people.register()
    alice.accept_identity_changes = False
    chat = await alice.direct_chat(bob.user_id)
    await alice.send_text(chat["id"], "before")
    assert [m.text for m in await receive(bob, 1)] == ["before"]

    bob = await people.with_new_identity(bob)  # or the server swapped his identity key

    held = [await bob.send_text(chat["id"], f"new key {n}") for n in range(2)]
    notice = (await items_until(alice, SafetyNumberChanged))[-1]
    assert (notice.user_id, notice.device_id, notice.trusted) == (bob.user_id, bob.device_id, False)
    assert notice.identity_key == bob.crypto.identity_key
    await assert_quiet(alice)  # held, acknowledged, not lost
    assert len(await alice.store.held(bob.user_id, bob.device_id)) == 2
    assert alice.cursor is not None and alice.store.cursor == alice.cursor

    await alice.trust_identity(bob.user_id, bob.device_id, notice.identity_key)
    got = await receive(alice, 2)
    assert [(g.message_id, g.text) for g in got] == [(m["id"], f"new key {n}") for n, m in enumerate(held)]
    assert await alice.store.held(bob.user_id, bob.device_id) == []
    assert DeviceCrypto.from_bytes(alice.store.crypto).peer_identity(bob.user_id, bob.device_id) == notice.identity_key


# -- 7. a ciphertext is bound to its message ----------------------------------------------------


class HeldBack:
    """Plays a server that keeps message events from a client while `on` (to deliver them its own way later)."""

    def __init__(self, client: Client) -> None:
        self.on = False
        self.frames: list[dict[str, Any]] = []
        handle = client._receiver.handle_batch

        async def holding(frames: list[dict[str, Any]]) -> None:
            if self.on:
                kept = [f for f in frames if f.get("type") in ("message.new", "message.edited")]
                self.frames += [{k: v for k, v in f.items() if k != "cursor"} for f in kept]
                frames = [f for f in frames if f not in kept]
            await handle(frames)

        client._receiver.handle_batch = holding  # type: ignore[method-assign]

    async def take(self, count: int) -> list[dict[str, Any]]:
        """The next `count` held frames, once they have arrived; holding stops."""
        for _ in range(500):
            if len(self.frames) >= count:
                break
            await asyncio.sleep(0.02)
        self.on = False
        taken, self.frames = self.frames[:count], self.frames[count:]
        assert len(taken) == count, taken
        return taken


async def _pair(people: People, kind: str) -> tuple[Client, Client, dict[str, Any]]:
    alice, bob = await people.register(), await people.register()
    if kind == "direct":
        chat = await alice.direct_chat(bob.user_id)
    else:
        chat = await alice.create_group("two", [bob.user_id])
    return alice, bob, chat


@pytest.mark.parametrize("kind", ["direct", "group"])
async def test_a_ciphertext_redelivered_as_an_edit_of_another_message_is_refused(people: People, kind: str):
    alice, bob, chat = await _pair(people, kind)
    first = await alice.send_text(chat["id"], "first")
    assert [m.text for m in await receive(bob, 1)] == ["first"]
    held = HeldBack(bob)
    held.on = True
    second = await alice.send_text(chat["id"], "second")
    for n in range(3):
        await alice.edit_text(chat["id"], second["id"], f"second, edit {n}")
    new, *edits = await held.take(4)
    assert new["message"]["id"] == second["id"] and all(e["type"] == "message.edited" for e in edits)

    def as_edit_of_first(frame: dict[str, Any], **fields: Any) -> dict[str, Any]:
        message = {**first, "ciphertext": frame["message"]["ciphertext"], "edited_at": 1, **fields}
        return {"type": "message.edited", "message": message}

    forged = [
        as_edit_of_first(new),  # a new message's ciphertext, passed off as an edit
        as_edit_of_first(edits[0]),  # an edit of `second`, passed off as one of `first`
        as_edit_of_first(edits[1], client_id=second["client_id"]),  # ... with the server's client_id changed too
        as_edit_of_first(edits[2], seq=first["seq"] - 1, client_id=second["client_id"]),  # ... and its seq
    ]
    await bob._receiver.handle_batch(forged)
    got = await receive(bob, len(forged))
    for item, reason in zip(got, ["a new message", "another message", "another message", "seq changed"], strict=True):
        assert isinstance(item, Undecryptable) and item.edited, item
        assert item.message_id == first["id"] and reason in item.reason, item
    # the refused edits leave `first` as bob had it
    (kept,) = [m for m in await bob.local_history(chat["id"]) if m["message_id"] == first["id"]]
    assert kept["status"] == "ok" and kept["content"]["text"] == "first"

    # an honest edit still goes through
    await alice.edit_text(chat["id"], first["id"], "first, edited")
    (got_edit,) = await receive(bob, 1)
    assert isinstance(got_edit, ReceivedMessage) and got_edit.edited and got_edit.text == "first, edited"


async def test_a_message_delivered_under_another_client_id_is_refused(people: People):
    alice, bob, chat = await _pair(people, "direct")
    first = await alice.send_text(chat["id"], "first")
    assert [m.text for m in await receive(bob, 1)] == ["first"]
    held = HeldBack(bob)
    held.on = True
    second = await alice.send_text(chat["id"], "second")
    await alice.edit_text(chat["id"], first["id"], "first, edited")
    new, edit = await held.take(2)

    relabelled = {"type": "message.new", "message": {**new["message"], "client_id": str(uuid.uuid4())}}
    edit_as_new = {
        "type": "message.new",
        "message": {**edit["message"], "id": str(uuid.uuid4()), "seq": second["seq"] + 1, "edited_at": None},
    }
    await bob._receiver.handle_batch([relabelled, edit_as_new])
    got = await receive(bob, 2)
    assert isinstance(got[0], Undecryptable) and got[0].message_id == second["id"] and not got[0].edited
    assert "client_id differs" in got[0].reason
    assert isinstance(got[1], Undecryptable) and got[1].message_id == edit_as_new["message"]["id"]
    assert "an edit delivered as a new message" in got[1].reason


async def test_reply_to_comes_from_the_envelope(people: People):
    alice, bob, chat = await _pair(people, "direct")
    first = await alice.send_text(chat["id"], "first")
    other = await alice.send_text(chat["id"], "other")
    assert [m.text for m in await receive(bob, 2)] == ["first", "other"]
    held = HeldBack(bob)
    held.on = True
    reply = await alice.send_text(chat["id"], "a reply to first", reply_to=first["id"])
    plain = await alice.send_text(chat["id"], "not a reply")
    assert reply["reply_to"] == first["id"]
    to_reply, to_plain = await held.take(2)

    moved = {"type": "message.new", "message": {**to_reply["message"], "reply_to": other["id"]}}
    added = {"type": "message.new", "message": {**to_plain["message"], "reply_to": other["id"]}}
    await bob._receiver.handle_batch([moved, added])
    got = await receive(bob, 2)
    assert [(g.message_id, g.reply_to) for g in got] == [(reply["id"], first["id"]), (plain["id"], None)]
    assert all(isinstance(g, ReceivedMessage) for g in got)

    # an edit keeps what the original replied to, whatever the server says
    await alice.edit_text(chat["id"], reply["id"], "a reply to first, edited")
    (edited,) = await receive(bob, 1)
    assert isinstance(edited, ReceivedMessage) and edited.edited and edited.reply_to == first["id"]
    stored = {m["message_id"]: m["content"] for m in await bob.local_history(chat["id"])}
    assert stored[reply["id"]]["reply_to"] == first["id"] and stored[plain["id"]]["reply_to"] is None


# -- 8. a removed member cannot keep writing ----------------------------------------------------


async def _seen(client: Client, kind: str, frames: list[dict[str, Any]]) -> None:
    for _ in range(500):
        if any(f["type"] == kind for f in frames):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {kind} event")


def forged_group_message(chat_id: str, sender: Client, text: str) -> dict[str, Any]:
    """A group message `sender` encrypts with the sender key it holds, for the server to inject."""
    client_id = str(uuid.uuid4())
    ciphertext = sender.crypto.group_encrypt(chat_id, encode_envelope(chat_id, client_id=client_id, text=text))
    return fake_message(chat_id, sender, ciphertext=ciphertext, client_id=client_id)


async def forged_sender_key(chat_id: str, sender: Client, to: Client) -> dict[str, Any]:
    """A `sender_key` event carrying a new sender key of `sender`, sealed pairwise to `to`."""
    distribution_id, distribution = sender.crypto.rotate_sender_key(chat_id)
    share = {"v": 2, "chat_id": chat_id, "sender_key": {"distribution_id": distribution_id, "key": b64e(distribution)}}
    sealed = await sender._sender.encrypt_to(
        to.user_id, to.device_id, to.crypto.identity_key, msgspec.json.encode(share)
    )
    return {
        "type": "sender_key",
        "chat_id": chat_id,
        "sender_user_id": sender.user_id,
        "sender_device_id": sender.device_id,
        "distribution_id": distribution_id,
        "ciphertext": b64e(sealed),
    }


async def test_a_removed_member_cannot_write_to_the_group_until_added_again(people: People):
    alice, bob, carol = await people.register(), await people.register(), await people.register()
    group = await alice.create_group("trio", [bob.user_id, carol.user_id])
    await carol.send_text(group["id"], "hi from carol")
    for device in (alice, bob):
        assert [m.text for m in await receive(device, 1)] == ["hi from carol"]
    # the threat: with carol's sender key, whatever the server injects in her name decrypts
    await alice._receiver.handle_batch([forged_group_message(group["id"], carol, "injected while a member")])
    assert [m.text for m in await receive(alice, 1)] == ["injected while a member"]

    frames: list[dict[str, Any]] = []
    alice.on_event(frames.append)
    await alice.remove_member(group["id"], carol.user_id)
    await _seen(alice, "chat.member.removed", frames)
    with pytest.raises(NoSession):  # her sender key is gone, in memory and in the store
        DeviceCrypto.from_bytes(alice.store.crypto).group_decrypt(
            group["id"], carol.user_id, carol.device_id, carol.crypto.group_encrypt(group["id"], b"x")
        )

    # the removal is remembered across a restart
    path = str(alice.store.path)
    people.clients.remove(alice)
    await alice.close()
    alice = await Client.open(path)
    people.clients.append(alice)
    frames = []
    alice.on_event(frames.append)

    kept_key = forged_group_message(group["id"], carol, "injected with my old key")
    new_key = await forged_sender_key(group["id"], carol, alice)
    with_new_key = forged_group_message(group["id"], carol, "injected with a new key")
    await alice._receiver.handle_batch([kept_key, new_key, with_new_key])
    got = await receive(alice, 2)
    for item, frame in zip(got, (kept_key, with_new_key), strict=True):
        assert isinstance(item, Undecryptable) and item.message_id == frame["message"]["id"], item
        assert "not a member" in item.reason and item.sender_user_id == carol.user_id
    await assert_quiet(alice)

    # added again: what she sends now is read
    await alice.start()
    await alice.add_members(group["id"], [carol.user_id])
    await _seen(alice, "chat.member.added", frames)
    sent = await carol.send_text(group["id"], "back again")
    for device in (alice, bob):
        (got_back,) = await receive(device, 1)
        assert isinstance(got_back, ReceivedMessage) and got_back.text == "back again", got_back
        assert got_back.message_id == sent["id"]


async def test_a_removed_device_loses_its_sender_keys(people: People):
    alice, bob = await people.register(), await people.register()
    group = await alice.create_group("pair", [bob.user_id])
    await bob.send_text(group["id"], "hello")
    assert [m.text for m in await receive(alice, 1)] == ["hello"]

    await alice._receiver.handle_batch(
        [{"type": "keys.changed", "user_id": bob.user_id, "device_ids": [bob.device_id], "change": "removed"}]
    )
    forged = forged_group_message(group["id"], bob, "from a device that is gone")
    await alice._receiver.handle_batch([forged])
    await assert_quiet(alice)  # it waits for a sender key, never decrypted with the old one
    assert [p["message"]["id"] for p in await alice.store.pending(group["id"])] == [forged["message"]["id"]]
    with pytest.raises(NoSession):
        DeviceCrypto.from_bytes(alice.store.crypto).group_decrypt(
            group["id"], bob.user_id, bob.device_id, forged["message"]["ciphertext"]
        )
