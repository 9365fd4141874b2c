"""The browser's crypto modules and the Python SDK (sup.client.crypto) talk to each other, in one process.

A JavaScript DeviceCrypto lives in the page (tests/web/pages/harness.js); a Python DeviceCrypto lives here;
bundles and ciphertexts are passed between them as the server would relay them. The second half checks that
the JavaScript refuses what tests/test_e2e_crypto.py makes the Python refuse.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import uuid
from typing import Any

import msgspec
import pytest

from sup.client.crypto import (
    MAX_SKIP,
    AttachmentKey,
    Bundle,
    DecryptError,
    DeviceCrypto,
    DuplicateMessage,
    OneTimePrekey,
    SignedPrekey,
    decrypt_attachment,
    encrypt_attachment,
    fingerprint,
    safety_number,
    wire,
)
from sup.client.crypto import primitives as py_primitives
from sup.client.crypto.senderkeys import OwnSenderKey
from sup.e2ekeys import ED25519_SMALL_ORDER_ENCODINGS, is_weak_public_key
from sup.http import schemas
from tests.web.conftest import Harness, JsError

Address = tuple[str, str]
_P = 2**255 - 19


def new_address(user_id: str | None = None) -> Address:
    return (user_id or str(uuid.uuid4()), str(uuid.uuid4()))


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bundle_json(device: DeviceCrypto, address: Address, one_time: bool = True) -> dict[str, Any]:
    """What GET /crypto/prekeys/{user}/{device} answers for a Python device."""
    spk = device.signed_prekey()
    opk = device.generate_one_time_prekeys(1)[0] if one_time else None
    return {
        "user_id": address[0],
        "device_id": address[1],
        "identity_key": b64e(device.identity_key),
        "signed_prekey": {"key_id": spk.key_id, "public_key": b64e(spk.public_key), "signature": b64e(spk.signature)},
        "one_time_prekey": None if opk is None else {"key_id": opk.key_id, "public_key": b64e(opk.public_key)},
    }


def bundle_from_json(found: dict[str, Any]) -> Bundle:
    """A bundle answer as the Python SDK reads it (sup/client/client.py `_bundle`)."""
    spk, opk = found["signed_prekey"], found.get("one_time_prekey")
    return Bundle(
        found["user_id"],
        found["device_id"],
        base64.b64decode(found["identity_key"]),
        SignedPrekey(spk["key_id"], base64.b64decode(spk["public_key"]), base64.b64decode(spk["signature"])),
        OneTimePrekey(opk["key_id"], base64.b64decode(opk["public_key"])) if opk else None,
    )


class JsPeer:
    """A JavaScript DeviceCrypto in the page, addressed like a Python one."""

    def __init__(self, harness: Harness, name: str, address: Address) -> None:
        self.harness, self.name, self.address = harness, name, address

    @classmethod
    async def create(cls, harness: Harness, name: str, address: Address | None = None) -> JsPeer:
        peer = cls(harness, name, address or new_address())
        await harness.helper("createDevice", name, *peer.address)
        return peer

    async def call(self, method: str, *args: Any) -> Any:
        return await self.harness.device(self.name, method, *args)

    async def raises(self, error: str, method: str, *args: Any) -> JsError:
        return await self.harness.raises(error, "device", f"{self.name}.{method}", *args)

    async def state(self) -> Any:
        return await self.call("toJSON")

    async def bundle(self, one_time: bool = True) -> dict[str, Any]:
        return await self.harness.helper("bundleOf", self.name, one_time)


class PyPeer:
    def __init__(self, user_id: str | None = None) -> None:
        self.address = new_address(user_id)
        self.device = DeviceCrypto.create(*self.address)

    def bundle(self, one_time: bool = True) -> dict[str, Any]:
        return bundle_json(self.device, self.address, one_time)


# ---- pairwise sessions, both directions ------------------------------------------------------------------


async def test_javascript_initiates_and_python_replies(harness: Harness) -> None:
    alice, bob = await JsPeer.create(harness, "alice"), PyPeer()
    bundle = bob.bundle()  # used by the first call only: later ones have a session
    first = [await alice.call("encrypt", *bob.address, b"early %d" % i, bundle) for i in range(3)]
    assert all(e[:2] == b"\x02\x01" for e in first)  # prekey messages until Bob answers
    for i in (2, 0, 1):  # reordered initial messages all route to the one session
        assert await bob.device.decrypt(*alice.address, first[i]) == b"early %d" % i
    assert bob.device.peer_identity(*alice.address) == await alice.call("identityKey")
    assert bob.device.one_time_prekeys_left() == 0

    replies = [await bob.device.encrypt(*alice.address, b"reply %d" % i) for i in range(3)]
    for i in (1, 0, 2):
        assert await alice.call("decrypt", *bob.address, replies[i]) == b"reply %d" % i
    await alice.raises("DuplicateMessage", "decrypt", *bob.address, replies[1])

    # Alice got an answer: no more X3DH header; every turn is a new DH ratchet step.
    for turn in range(4):
        out = [await alice.call("encrypt", *bob.address, b"a%d.%d" % (turn, i)) for i in range(3)]
        assert all(e[:2] == b"\x02\x02" for e in out)
        for i in (2, 1, 0):
            assert await bob.device.decrypt(*alice.address, out[i]) == b"a%d.%d" % (turn, i)
        back = await bob.device.encrypt(*alice.address, b"b%d" % turn)
        assert await alice.call("decrypt", *bob.address, back) == b"b%d" % turn

    # Out of order across a ratchet step: two messages on Alice's old chain arrive after one on her new chain.
    old = [await alice.call("encrypt", *bob.address, b"old %d" % i) for i in range(3)]
    assert await bob.device.decrypt(*alice.address, old[0]) == b"old 0"
    assert await alice.call("decrypt", *bob.address, await bob.device.encrypt(*alice.address, b"ratchet")) == b"ratchet"
    new = await alice.call("encrypt", *bob.address, b"new chain")
    assert await bob.device.decrypt(*alice.address, new) == b"new chain"
    assert await bob.device.decrypt(*alice.address, old[2]) == b"old 2"
    assert await bob.device.decrypt(*alice.address, old[1]) == b"old 1"
    with pytest.raises(DuplicateMessage):
        await bob.device.decrypt(*alice.address, old[1])
    # And the other way: Bob's old chain after his new one, in the browser.
    bob_old = [await bob.device.encrypt(*alice.address, b"bob old %d" % i) for i in range(2)]
    await bob.device.decrypt(*alice.address, await alice.call("encrypt", *bob.address, b"make bob ratchet"))
    bob_new = await bob.device.encrypt(*alice.address, b"bob new")
    assert await alice.call("decrypt", *bob.address, bob_new) == b"bob new"
    assert await alice.call("decrypt", *bob.address, bob_old[1]) == b"bob old 1"
    assert await alice.call("decrypt", *bob.address, bob_old[0]) == b"bob old 0"
    await alice.raises("DuplicateMessage", "decrypt", *bob.address, bob_old[0])


async def test_python_initiates_and_javascript_replies(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    # Bob publishes exactly what POST /crypto/keys takes; the server's own schema parses it.
    prekeys = await bob.call("generateOneTimePrekeys", 3)
    assert [k["keyId"] for k in prekeys] == [1, 2, 3]
    body = await bob.call("publishKeysBody", prekeys)
    published = msgspec.json.decode(json.dumps(body).encode(), type=schemas.KeysPublish)
    assert published.identity_key == await bob.call("identityKey")
    assert py_primitives.ed25519_verify(
        published.identity_key, published.signed_prekey.signature, b"\x05" + published.signed_prekey.public_key
    )
    assert [k.key_id for k in published.one_time_prekeys] == [1, 2, 3]
    upload = await bob.call(
        "uploadPrekeysBody", await bob.call("generateOneTimePrekeys", 2), {"withSignedPrekey": True}
    )
    parsed = msgspec.json.decode(json.dumps(upload).encode(), type=schemas.PrekeysUpload)
    assert [k.key_id for k in parsed.one_time_prekeys] == [4, 5]
    assert parsed.signed_prekey is not None and parsed.signed_prekey.key_id == 1
    # The key directory hands out the signed prekey and one one-time prekey.
    handed_out = {
        "user_id": bob.address[0],
        "device_id": bob.address[1],
        "identity_key": body["identity_key"],
        "signed_prekey": body["signed_prekey"],
        "one_time_prekey": body["one_time_prekeys"][1],
    }
    first = await alice.device.encrypt(*bob.address, b"hello browser", bundle_from_json(handed_out))
    assert await bob.call("decrypt", *alice.address, first) == b"hello browser"
    assert await bob.call("oneTimePrekeysLeft") == 4  # 3 published and 2 uploaded, one of them used
    assert await bob.call("peerIdentity", *alice.address) == alice.device.identity_key
    for turn in range(3):
        sent = [await bob.call("encrypt", *alice.address, b"js %d.%d" % (turn, i)) for i in range(3)]
        for i in (1, 2, 0):
            assert await alice.device.decrypt(*bob.address, sent[i]) == b"js %d.%d" % (turn, i)
        back = [await alice.device.encrypt(*bob.address, b"py %d.%d" % (turn, i)) for i in range(2)]
        for i in (1, 0):
            assert await bob.call("decrypt", *alice.address, back[i]) == b"py %d.%d" % (turn, i)

    # Without a one-time prekey (the device ran out), and a replay of that initial message.
    carol = PyPeer()
    handed_out["one_time_prekey"] = None
    initial = await carol.device.encrypt(*bob.address, b"no opk", bundle_from_json(handed_out))
    assert await bob.call("decrypt", *carol.address, initial) == b"no opk"
    await bob.call("forgetSession", *carol.address)
    await bob.raises("DuplicateMessage", "decrypt", *carol.address, initial)


async def test_simultaneous_initiation_converges(harness: Harness) -> None:
    alice, bob = await JsPeer.create(harness, "alice"), PyPeer()
    to_bob = await alice.call("encrypt", *bob.address, b"from js", bob.bundle())
    to_alice = await bob.device.encrypt(*alice.address, b"from py", bundle_from_json(await alice.bundle()))
    assert await bob.device.decrypt(*alice.address, to_bob) == b"from js"
    assert await alice.call("decrypt", *bob.address, to_alice) == b"from py"
    for i in range(3):
        assert await bob.device.decrypt(*alice.address, await alice.call("encrypt", *bob.address, b"a%d" % i)) == (
            b"a%d" % i
        )
        assert await alice.call("decrypt", *bob.address, await bob.device.encrypt(*alice.address, b"b%d" % i)) == (
            b"b%d" % i
        )


# ---- sender keys, attachments, safety numbers ------------------------------------------------------------


async def test_group_messages_both_ways(harness: Harness) -> None:
    chat = str(uuid.uuid4())
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    # A pairwise session first: sender keys travel inside pairwise envelopes.
    await bob.call(
        "decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"hi", bundle_from_json(await bob.bundle()))
    )

    # Alice's sender key to Bob, in the envelope the SDK builds.
    dist_id, distribution = alice.device.sender_key_distribution(chat)
    share = json.dumps(
        {"v": 2, "chat_id": chat, "sender_key": {"distribution_id": dist_id, "key": b64e(distribution)}},
        separators=(",", ":"),
    ).encode()
    plaintext = await bob.call("decrypt", *alice.address, await alice.device.encrypt(*bob.address, share))
    envelope = await harness.module("envelope.decodeEnvelope", plaintext, chat)
    key = await harness.module("envelope.senderKeyOf", envelope, dist_id)
    await bob.call("processSenderKeyDistribution", chat, *alice.address, key["distribution"])

    # Bob's sender key to Alice, built by envelope.js; identical bytes to the Python SDK's envelope.
    mine = await bob.call("senderKeyDistribution", chat)
    bob_share = await harness.module("envelope.encodeSenderKeyEnvelope", chat, mine["distributionId"], mine["message"])
    assert (
        bob_share
        == json.dumps(
            {
                "v": 2,
                "chat_id": chat,
                "sender_key": {"distribution_id": mine["distributionId"], "key": b64e(mine["message"])},
            },
            separators=(",", ":"),
        ).encode()
    )
    received = json.loads(
        await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, bob_share))
    )
    assert received["sender_key"]["distribution_id"] == mine["distributionId"]
    alice.device.process_sender_key_distribution(chat, *bob.address, base64.b64decode(received["sender_key"]["key"]))

    from_py = [alice.device.group_encrypt(chat, b"py group %d" % i) for i in range(4)]
    for i in (3, 0, 2, 1):
        assert await bob.call("groupDecrypt", chat, *alice.address, from_py[i]) == b"py group %d" % i
    await bob.raises("DuplicateMessage", "groupDecrypt", chat, *alice.address, from_py[2])
    from_js = [await bob.call("groupEncrypt", chat, b"js group %d" % i) for i in range(4)]
    assert all(m[:2] == b"\x02\x04" for m in from_js)
    for i in (1, 3, 0, 2):
        assert alice.device.group_decrypt(chat, *bob.address, from_js[i]) == b"js group %d" % i
    with pytest.raises(DuplicateMessage):
        alice.device.group_decrypt(chat, *bob.address, from_js[0])

    # Rotation in the browser: the new key decrypts, a message sent just before still does.
    in_flight = await bob.call("groupEncrypt", chat, b"in flight")
    rotated = await bob.call("rotateSenderKey", chat)
    assert rotated["distributionId"] != mine["distributionId"]
    alice.device.process_sender_key_distribution(chat, *bob.address, rotated["message"])
    assert alice.device.group_decrypt(chat, *bob.address, await bob.call("groupEncrypt", chat, b"after")) == b"after"
    assert alice.device.group_decrypt(chat, *bob.address, in_flight) == b"in flight"
    # Rotation in Python, read by the browser; re-processing the old distribution does not rewind.
    _, new_distribution = alice.device.rotate_sender_key(chat)
    await bob.call("processSenderKeyDistribution", chat, *alice.address, new_distribution)
    assert await bob.call("groupDecrypt", chat, *alice.address, alice.device.group_encrypt(chat, b"new")) == b"new"
    await bob.call("processSenderKeyDistribution", chat, *alice.address, key["distribution"])
    await bob.raises("DuplicateMessage", "groupDecrypt", chat, *alice.address, from_py[0])
    # Forgetting a member's keys (they left): their messages have no sender key any more.
    assert await bob.call("forgetSenderKeys", alice.address[0]) is True
    await bob.raises("NoSession", "groupDecrypt", chat, *alice.address, alice.device.group_encrypt(chat, b"gone"))


@pytest.mark.parametrize("size", [0, 1, 1000, 100_000])
async def test_attachments_both_ways(harness: Harness, size: int) -> None:
    data = os.urandom(size)
    encrypted = await harness.module("attachments.encryptAttachment", data)
    blob, key = encrypted["blob"], encrypted["key"]
    assert len(blob) == size + 30 and key["size"] == size
    assert decrypt_attachment(blob, AttachmentKey(key["key"], key["digest"], key["size"])) == data

    py_blob, py_key = encrypt_attachment(data)
    assert (
        await harness.module(
            "attachments.decryptAttachment", py_blob, {"key": py_key.key, "digest": py_key.digest, "size": py_key.size}
        )
        == data
    )


async def test_safety_numbers_match(harness: Harness) -> None:
    alice_keys = [DeviceCrypto.create().identity_key for _ in range(2)]
    bob_keys = [await harness.helper("createDevice", "bob", *new_address())]
    a_id, b_id = str(uuid.uuid4()), str(uuid.uuid4())
    expected = safety_number(a_id, alice_keys, b_id, bob_keys)
    assert await harness.module("safety.safetyNumber", a_id, alice_keys, b_id, bob_keys) == expected
    # Both sides get the same number, whatever the order of the keys; duplicates do not count.
    assert await harness.module(
        "safety.safetyNumber", b_id, bob_keys, a_id, [*reversed(alice_keys), alice_keys[0]]
    ) == (expected)
    assert await harness.module("safety.fingerprint", "ünïcödé", alice_keys) == fingerprint("ünïcödé", alice_keys)
    await harness.raises("CryptoError", "module", "safety.fingerprint", a_id, [])


# ---- weak keys -------------------------------------------------------------------------------------------

_ORDER_8_U = (
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
)


async def test_forged_bundles_are_refused(harness: Harness) -> None:
    alice, bob, mallory = await JsPeer.create(harness, "alice"), PyPeer(), PyPeer()
    good = bob.bundle()
    forged_spk = {**good["signed_prekey"], "public_key": b64e(mallory.device.signed_prekey().public_key)}
    for bad in (
        {**good, "signed_prekey": forged_spk},  # a signed prekey the identity key did not sign
        {**good, "identity_key": b64e(mallory.device.identity_key)},  # another identity key
        {**good, "user_id": mallory.address[0], "device_id": mallory.address[1]},  # fetched for another device
        {**good, "signed_prekey": {**good["signed_prekey"], "public_key": b64e(b"short")}},
        {**good, "signed_prekey": {**good["signed_prekey"], "key_id": 2**32}},
        {**good, "identity_key": "not base64!"},
        {**good, "one_time_prekey": {"key_id": -1, "public_key": good["one_time_prekey"]["public_key"]}},
    ):
        await alice.raises("BadBundle", "encrypt", *bob.address, b"x", bad)
    assert not await alice.call("hasSession", *bob.address)
    assert await alice.call("peerIdentity", *bob.address) is None


async def test_no_session_without_a_bundle(harness: Harness) -> None:
    alice, bob = await JsPeer.create(harness, "alice"), PyPeer()
    await alice.raises("NoSession", "encrypt", *bob.address, b"x")
    await bob.device.decrypt(*alice.address, await alice.call("encrypt", *bob.address, b"x", bob.bundle()))
    normal = await bob.device.encrypt(*alice.address, b"y")
    await alice.call("forgetSession", *bob.address)
    await alice.raises("NoSession", "decrypt", *bob.address, normal)
    assert await alice.call("peerIdentity", *bob.address) == bob.device.identity_key  # the key is kept


async def test_multi_device(harness: Harness) -> None:
    bob_user = str(uuid.uuid4())
    a1 = await JsPeer.create(harness, "a1")
    a2 = await JsPeer.create(harness, "a2", (a1.address[0], str(uuid.uuid4())))
    b1, b2 = PyPeer(bob_user), PyPeer(bob_user)
    for target in (b1, b2):
        envelope = await a1.call("encrypt", *target.address, b"to every device", target.bundle())
        assert await target.device.decrypt(*a1.address, envelope) == b"to every device"
    envelope = await a1.call("encrypt", *a2.address, b"to my other device", await a2.bundle())
    assert await a2.call("decrypt", *a1.address, envelope) == b"to my other device"
    # Each pairwise session is independent: B2's envelope does not open on B1.
    envelope = await a1.call("encrypt", *b2.address, b"only b2")
    with pytest.raises(DecryptError):
        await b1.device.decrypt(*a1.address, envelope)
    assert await b2.device.decrypt(*a1.address, envelope) == b"only b2"


async def test_weak_keys_agree_with_python(harness: Harness) -> None:
    cases: list[tuple[str, bytes]] = []
    for encoding in ED25519_SMALL_ORDER_ENCODINGS:
        cases += [("ed25519", encoding), ("ed25519", encoding[:31] + bytes((encoding[31] | 0x80,)))]
    cases += [("ed25519", (_P + 2).to_bytes(32, "little")), ("ed25519", b"\x01" * 31), ("x25519", b"\x01" * 33)]
    for u in (0, 1, _P - 1, _P, _P + 1, *_ORDER_8_U, *(u + _P for u in _ORDER_8_U if u + _P < 2**255)):
        cases.append(("x25519", u.to_bytes(32, "little")))
    for _ in range(5):
        device = DeviceCrypto.create()
        cases += [("ed25519", device.identity_key), ("x25519", device.signed_prekey().public_key)]
    for kind, key in cases:
        assert await harness.module("weakkeys.isWeakPublicKey", kind, key) == is_weak_public_key(kind, key), (kind, key)
    assert sum(is_weak_public_key(kind, key) for kind, key in cases) == len(cases) - 10


async def test_weak_keys_in_a_bundle_are_refused(harness: Harness) -> None:
    alice, bob = await JsPeer.create(harness, "alice"), PyPeer()
    good = bob.bundle()
    identity = b"\x01" + b"\x00" * 31
    any_signature = b"\x01" + b"\x00" * 63  # R = identity, S = 0: plain Ed25519 accepts it for any message
    assert await harness.module("primitives.ed25519Verify", identity, any_signature, b"\x05" + b"\x09" * 32)
    weak_identity = {
        **good,
        "identity_key": b64e(identity),
        "signed_prekey": {**good["signed_prekey"], "signature": b64e(any_signature)},
    }
    bad = [weak_identity]
    for weak in (b"\x00" * 32, b"\x01" + b"\x00" * 31, (_P - 1).to_bytes(32, "little")):
        signature = py_primitives.ed25519_sign(bob.device._identity_seed, b"\x05" + weak)
        bad.append({**good, "signed_prekey": {"key_id": 7, "public_key": b64e(weak), "signature": b64e(signature)}})
        bad.append({**good, "one_time_prekey": {"key_id": 9, "public_key": b64e(weak)}})
    for bundle in bad:
        await alice.raises("BadBundle", "encrypt", *bob.address, b"x", bundle)
    assert not await alice.call("hasSession", *bob.address)
    assert await alice.call("peerIdentity", *bob.address) is None
    assert await bob.device.decrypt(*alice.address, await alice.call("encrypt", *bob.address, b"ok", good)) == b"ok"


async def test_initial_message_with_a_weak_key_is_a_decrypt_error(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    initial = await alice.device.encrypt(*bob.address, b"hi", bundle_from_json(await bob.bundle()))
    before = await bob.state()
    for start, weak in ((2, b"\x01" + b"\x00" * 31), (34, b"\x00" * 32), (34, (_P + 1).to_bytes(32, "little"))):
        forged = initial[:start] + weak + initial[start + 32 :]
        await bob.raises("DecryptError", "decrypt", *alice.address, forged)
        assert await bob.state() == before
    assert await bob.call("decrypt", *alice.address, initial) == b"hi"


# ---- tampering, bounds, relabelling: refused, and the state survives ------------------------------------------


async def test_tampering_is_a_decrypt_error_and_changes_nothing(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    initial = await alice.device.encrypt(*bob.address, b"initial message", bundle_from_json(await bob.bundle()))
    before = await bob.state()
    for i in range(len(initial)):
        tampered = bytearray(initial)
        tampered[i] ^= 0x01
        with pytest.raises(JsError) as caught:
            await bob.call("decrypt", *alice.address, bytes(tampered))
        # A flipped one-time prekey id names an unknown key, a flipped version byte another format: all refused.
        assert caught.value.name == "DecryptError", (i, caught.value)
    assert await bob.state() == before
    assert not await bob.call("hasSession", *alice.address)
    assert await bob.call("decrypt", *alice.address, initial) == b"initial message"
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"ok"))

    message = await alice.device.encrypt(*bob.address, b"a normal message")
    before = await bob.state()
    for i in range(len(message)):
        for flip in (0x01, 0x80):
            tampered = bytearray(message)
            tampered[i] ^= flip
            await bob.raises("DecryptError", "decrypt", *alice.address, bytes(tampered))
    for truncated in (message[:-1], message[:10], b"", message + b"\x00"):
        await bob.raises("DecryptError", "decrypt", *alice.address, truncated)
    assert await bob.state() == before
    assert await bob.call("decrypt", *alice.address, message) == b"a normal message"
    assert await bob.call("decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"next")) == b"next"


async def test_replay_is_a_duplicate(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    initial = await alice.device.encrypt(*bob.address, b"one", bundle_from_json(await bob.bundle()))
    assert await bob.call("decrypt", *alice.address, initial) == b"one"
    await bob.raises("DuplicateMessage", "decrypt", *alice.address, initial)
    assert await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"two")) == b"two"
    old_chain = await alice.device.encrypt(*bob.address, b"three")
    assert await bob.call("decrypt", *alice.address, old_chain) == b"three"
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"four"))
    await bob.call("decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"five"))
    before = await bob.state()
    for replay in (old_chain, initial):  # Bob's receiving chain has moved on: still recognised
        await bob.raises("DuplicateMessage", "decrypt", *alice.address, replay)
    assert await bob.state() == before


async def answered_session(harness: Harness) -> tuple[PyPeer, JsPeer]:
    """Alice (Python) and Bob (JavaScript) in a session each has sent in once: both have a receiving chain."""
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    await bob.call(
        "decrypt",
        *alice.address,
        await alice.device.encrypt(*bob.address, b"start", bundle_from_json(await bob.bundle())),
    )
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"answer"))
    return alice, bob


async def test_skipped_keys_are_bounded(harness: Harness) -> None:
    alice, bob = await answered_session(harness)
    sent = []
    for i in range(MAX_SKIP + 2):
        sent.append(await alice.device.encrypt(*bob.address, b"m%d" % i))
        await asyncio.sleep(0)
    before = await bob.state()
    await bob.raises("DecryptError", "decrypt", *alice.address, sent[-1])  # would skip MAX_SKIP + 1 keys
    assert await bob.state() == before
    assert await bob.call("decrypt", *alice.address, sent[0]) == b"m0"
    assert await bob.call("decrypt", *alice.address, sent[-1]) == b"m%d" % (MAX_SKIP + 1)  # exactly MAX_SKIP
    assert await bob.call("decrypt", *alice.address, sent[500]) == b"m500"
    assert await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"fine")) == b"fine"


async def test_both_chains_together_are_bounded_by_max_skip(harness: Harness) -> None:
    alice, bob = await answered_session(harness)
    old_chain = []
    for i in range(MAX_SKIP // 2 + 1):
        old_chain.append(await alice.device.encrypt(*bob.address, b"old %d" % i))
        await asyncio.sleep(0)
    assert await bob.call("decrypt", *alice.address, old_chain[0]) == b"old 0"
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"make alice ratchet"))
    new_chain = []
    for i in range(MAX_SKIP // 2 + 2):
        new_chain.append(await alice.device.encrypt(*bob.address, b"new %d" % i))
        await asyncio.sleep(0)
    before = await bob.state()
    await bob.raises("DecryptError", "decrypt", *alice.address, new_chain[-1])  # 500 + 501 keys
    assert await bob.state() == before
    assert await bob.call("decrypt", *alice.address, new_chain[-2]) == b"new %d" % (MAX_SKIP // 2)  # exactly 1000
    assert await bob.call("decrypt", *alice.address, new_chain[-1]) == b"new %d" % (MAX_SKIP // 2 + 1)
    assert await bob.call("decrypt", *alice.address, old_chain[7]) == b"old 7"
    await bob.raises("DuplicateMessage", "decrypt", *alice.address, new_chain[-1])


async def test_relabelled_messages_fail_and_change_nothing(harness: Harness) -> None:
    alice, carol, bob = PyPeer(), PyPeer(), await JsPeer.create(harness, "bob")
    initial = await alice.device.encrypt(*bob.address, b"from alice", bundle_from_json(await bob.bundle()))
    before = await bob.state()
    await bob.raises("DecryptError", "decrypt", *carol.address, initial)  # the server says Carol sent it
    await bob.raises("DecryptError", "decrypt", alice.address[0], str(uuid.uuid4()), initial)  # another device
    assert await bob.state() == before
    assert await bob.call("peerIdentity", *carol.address) is None
    assert await bob.call("decrypt", *alice.address, initial) == b"from alice"
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"hi"))

    await bob.call(
        "decrypt", *carol.address, await carol.device.encrypt(*bob.address, b"c", bundle_from_json(await bob.bundle()))
    )
    message = await alice.device.encrypt(*bob.address, b"normal message")
    before = await bob.state()
    await bob.raises("DecryptError", "decrypt", *carol.address, message)
    assert await bob.state() == before
    assert await bob.call("decrypt", *alice.address, message) == b"normal message"

    # The server lists Bob's keys under Dave's address: Alice believes she writes to Dave.
    dave = new_address()
    bundle = await bob.bundle()
    envelope = await carol.device.encrypt(
        *dave, b"for dave", bundle_from_json({**bundle, "user_id": dave[0], "device_id": dave[1]})
    )
    before = await bob.state()
    await bob.raises("DecryptError", "decrypt", *carol.address, envelope)
    assert await bob.state() == before


async def test_one_time_prekey_is_used_once(harness: Harness) -> None:
    alice, carol, bob = PyPeer(), PyPeer(), await JsPeer.create(harness, "bob")
    bundle = bundle_from_json(await bob.bundle())
    assert (
        await bob.call("decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"first", bundle))
        == b"first"
    )
    await bob.raises(
        "DecryptError", "decrypt", *carol.address, await carol.device.encrypt(*bob.address, b"reuse", bundle)
    )
    assert not await bob.call("hasSession", *carol.address)


async def test_rotated_signed_prekey_still_accepts_late_initial_messages(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    bundle = bundle_from_json(await bob.bundle())
    envelope = await alice.device.encrypt(*bob.address, b"late", bundle)
    rotated = await bob.call("rotateSignedPrekey")
    assert rotated["keyId"] == 2
    assert await bob.call("decrypt", *alice.address, envelope) == b"late"
    # An unknown signed prekey id is refused.
    carol = PyPeer()
    initial = await carol.device.encrypt(*bob.address, b"x", bundle_from_json(await bob.bundle()))
    await bob.raises("DecryptError", "decrypt", *carol.address, initial[:66] + (999).to_bytes(4, "big") + initial[70:])
    assert await bob.call("decrypt", *carol.address, initial) == b"x"


async def test_replaced_signed_prekeys_are_kept_30_days_and_at_most_4(harness: Harness) -> None:
    bob_address = new_address()
    await harness.helper("createDeviceWithClock", "bob", *bob_address)
    bob = JsPeer(harness, "bob", bob_address)
    late: dict[int, tuple[Address, bytes]] = {}
    for key_id in range(1, 7):  # an initial message to each signed prekey, delivered only later
        sender = PyPeer()
        bundle = bundle_from_json(await bob.bundle(one_time=False))
        assert bundle.signed_prekey.key_id == key_id
        late[key_id] = (sender.address, await sender.device.encrypt(*bob_address, b"to spk %d" % key_id, bundle))
        await bob.call("rotateSignedPrekey")
        await harness.helper("advanceClock", 3600)
    assert [k[0] for k in (await bob.state())["signed_prekeys"]] == [3, 4, 5, 6, 7]  # 4 old ones and the current
    for key_id in (1, 2):
        await bob.raises("DecryptError", "decrypt", *late[key_id][0], late[key_id][1])
    assert await bob.call("decrypt", *late[3][0], late[3][1]) == b"to spk 3"
    # 30 days after it was replaced, a key goes at the next rotation: key 4 was replaced exactly 30 days
    # before this one, key 5 an hour later.
    await harness.helper("advanceClock", 30 * 24 * 3600 - 3 * 3600)
    await bob.call("rotateSignedPrekey")
    assert [k[0] for k in (await bob.state())["signed_prekeys"]] == [5, 6, 7, 8]
    await bob.raises("DecryptError", "decrypt", *late[4][0], late[4][1])
    assert await bob.call("decrypt", *late[6][0], late[6][1]) == b"to spk 6"


async def test_three_earlier_sessions_are_kept(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    pending = []
    for n in range(5):  # Alice starts a new session five times; each leaves a message in flight
        alice.device.forget_session(*bob.address)
        initial = await alice.device.encrypt(*bob.address, b"start %d" % n, bundle_from_json(await bob.bundle()))
        assert await bob.call("decrypt", *alice.address, initial) == b"start %d" % n
        await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"ok %d" % n))
        pending.append(await alice.device.encrypt(*bob.address, b"late %d" % n))
    assert len((await bob.state())["sessions"][0][2]) == 4  # the current one and 3 earlier
    await bob.raises("DecryptError", "decrypt", *alice.address, pending[0])
    for n in (1, 4, 2, 3):
        assert await bob.call("decrypt", *alice.address, pending[n]) == b"late %d" % n


async def test_identity_change_is_untrusted_until_accepted(harness: Harness) -> None:
    alice, bob = await JsPeer.create(harness, "alice"), PyPeer()
    await bob.device.decrypt(*alice.address, await alice.call("encrypt", *bob.address, b"hi", bob.bundle()))
    reinstalled = DeviceCrypto.create(*bob.address)  # same address, new identity key
    new_bundle = bundle_json(reinstalled, bob.address)
    await alice.call("forgetSession", *bob.address)
    error = await alice.raises("UntrustedIdentity", "encrypt", *bob.address, b"x", new_bundle)
    assert "changed" in str(error)
    await alice.call("acceptIdentity", *bob.address, reinstalled.identity_key)
    envelope = await alice.call("encrypt", *bob.address, b"after accept", new_bundle)
    assert await reinstalled.decrypt(*alice.address, envelope) == b"after accept"

    # The receiving side: an initial message from a changed identity, once it authenticated.
    again = DeviceCrypto.create(*bob.address)
    envelope = await again.encrypt(*alice.address, b"reinstalled again", bundle_from_json(await alice.bundle()))
    error = await alice.raises("UntrustedIdentity", "decrypt", *bob.address, envelope)
    assert again.identity_key.hex()[:8] not in str(error)
    assert await alice.call("peerIdentity", *bob.address) == reinstalled.identity_key
    await alice.call("acceptIdentity", *bob.address, again.identity_key)
    assert await alice.call("decrypt", *bob.address, envelope) == b"reinstalled again"


async def test_own_address_is_required(harness: Harness) -> None:
    bob = PyPeer()
    await harness.helper("createDevice", "anonymous", None, None)
    anonymous = JsPeer(harness, "anonymous", ("", ""))
    assert await anonymous.call("address") is None
    await anonymous.raises("CryptoError", "encrypt", *bob.address, b"x", bob.bundle())
    await anonymous.call("senderKeyDistribution", "chat")
    await anonymous.raises("CryptoError", "groupEncrypt", "chat", b"x")
    address = new_address()
    await anonymous.call("setAddress", *address)
    await anonymous.call("setAddress", *address)
    await anonymous.raises("CryptoError", "setAddress", *new_address())
    await harness.helper("loadDevice", "again", await anonymous.state())
    assert await harness.device("again", "address") == list(address)


async def test_group_message_attributed_to_another_device_fails(harness: Harness) -> None:
    alice, carol, bob = PyPeer(), PyPeer(), await JsPeer.create(harness, "bob")
    _, alice_dist = alice.device.sender_key_distribution("chat")
    await bob.call("processSenderKeyDistribution", "chat", *alice.address, alice_dist)
    await bob.call("processSenderKeyDistribution", "other chat", *alice.address, alice_dist)
    # A malicious Carol re-distributes Alice's sender key as her own.
    await bob.call("processSenderKeyDistribution", "chat", *carol.address, alice_dist)
    message = alice.device.group_encrypt("chat", b"from alice")
    before = await bob.state()
    await bob.raises("DecryptError", "groupDecrypt", "chat", *carol.address, message)
    await bob.raises("DecryptError", "groupDecrypt", "other chat", *alice.address, message)
    await bob.raises("NoSession", "groupDecrypt", "chat", alice.address[0], str(uuid.uuid4()), message)
    assert await bob.state() == before
    assert await bob.call("groupDecrypt", "chat", *alice.address, message) == b"from alice"


async def test_group_tamper_forgery_and_bounds(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    _, distribution = alice.device.sender_key_distribution("chat")
    await bob.call("processSenderKeyDistribution", "chat", *alice.address, distribution)
    ciphertext = alice.device.group_encrypt("chat", b"signed by alice")
    before = await bob.state()
    for i in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[i] ^= 0x04
        with pytest.raises(JsError) as caught:
            await bob.call("groupDecrypt", "chat", *alice.address, bytes(tampered))
        assert caught.value.name in ("DecryptError", "NoSession"), caught.value  # bytes 2-17: the distribution id
    assert await bob.state() == before
    # A member knows Alice's chain key, not her signing key: a forged message does not verify.
    state = alice.device._own_sender_keys["chat"]
    forger = OwnSenderKey(state.distribution_id, state.iteration, state.chain_key, b"\x01" * 32)
    forged = forger.encrypt(b"forged", wire.GroupMessage.context("chat", *alice.address))
    await bob.raises("DecryptError", "groupDecrypt", "chat", *alice.address, forged)
    assert await bob.call("groupDecrypt", "chat", *alice.address, ciphertext) == b"signed by alice"

    sent = [alice.device.group_encrypt("chat", b"%d" % i) for i in range(MAX_SKIP + 2)]
    await bob.raises("DecryptError", "groupDecrypt", "chat", *alice.address, sent[-1])
    assert await bob.call("groupDecrypt", "chat", *alice.address, sent[0]) == b"0"
    assert await bob.call("groupDecrypt", "chat", *alice.address, sent[-1]) == b"%d" % (MAX_SKIP + 1)

    for garbage in (b"\x01\x03garbage", distribution[:-1], b"\x02" + distribution[1:], distribution + b"\x00"):
        await bob.raises("CryptoError", "processSenderKeyDistribution", "chat", *alice.address, garbage)
    for garbage in (ciphertext[:60], b"\x01" + ciphertext[1:], ciphertext[:1] + b"\x02" + ciphertext[2:]):
        await bob.raises("DecryptError", "groupDecrypt", "chat", *alice.address, garbage)


async def test_last_five_distributions_per_sender_are_kept(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    under = []
    for n in range(6):
        _, distribution = alice.device.rotate_sender_key("chat")
        await bob.call("processSenderKeyDistribution", "chat", *alice.address, distribution)
        under.append(alice.device.group_encrypt("chat", b"key %d" % n))
    await bob.raises("NoSession", "groupDecrypt", "chat", *alice.address, under[0])
    for n in (1, 5, 3, 2, 4):
        assert await bob.call("groupDecrypt", "chat", *alice.address, under[n]) == b"key %d" % n


async def test_at_most_2000_skipped_keys_are_stored(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    await bob.call(
        "decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"0", bundle_from_json(await bob.bundle()))
    )
    chains = []
    for _ in range(3):  # three chains, each with 1000 skipped keys: the oldest 1000 are dropped
        await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"ratchet"))
        chain = []
        for i in range(MAX_SKIP + 1):
            chain.append(await alice.device.encrypt(*bob.address, b"m%d" % i))
            if i % 100 == 0:
                await asyncio.sleep(0)
        assert await bob.call("decrypt", *alice.address, chain[-1]) == b"m%d" % MAX_SKIP
        chains.append(chain)
    assert len((await bob.state())["sessions"][0][2][0]["skipped"]) == 2000
    await bob.raises("DuplicateMessage", "decrypt", *alice.address, chains[0][5])  # discarded: reads as used
    assert await bob.call("decrypt", *alice.address, chains[1][5]) == b"m5"
    assert await bob.call("decrypt", *alice.address, chains[2][999]) == b"m999"

    # The same bound per sender key.
    _, distribution = alice.device.sender_key_distribution("chat")
    await bob.call("processSenderKeyDistribution", "chat", *alice.address, distribution)
    sent = []
    for i in range(3 * MAX_SKIP + 1):
        sent.append(alice.device.group_encrypt("chat", b"g%d" % i))
        if i % 100 == 0:
            await asyncio.sleep(0)
    for i in (MAX_SKIP, 2 * MAX_SKIP, 3 * MAX_SKIP):
        assert await bob.call("groupDecrypt", "chat", *alice.address, sent[i]) == b"g%d" % i
    await bob.raises("DuplicateMessage", "groupDecrypt", "chat", *alice.address, sent[997])
    assert await bob.call("groupDecrypt", "chat", *alice.address, sent[998]) == b"g998"


async def test_attachment_tampering(harness: Harness) -> None:
    blob, key = encrypt_attachment(b"secret picture")
    as_js = {"key": key.key, "digest": key.digest, "size": key.size}
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        await harness.raises("DecryptError", "module", "attachments.decryptAttachment", bytes(tampered), as_js)
    import hashlib

    tampered = bytearray(blob)
    tampered[-1] ^= 1
    digest_ok = {**as_js, "digest": hashlib.sha256(tampered).digest()}  # the digest matches, the GCM tag does not
    await harness.raises("DecryptError", "module", "attachments.decryptAttachment", bytes(tampered), digest_ok)
    await harness.raises(
        "DecryptError", "module", "attachments.decryptAttachment", blob, {**as_js, "size": key.size + 1}
    )
    await harness.raises(
        "DecryptError", "module", "attachments.decryptAttachment", blob, {**as_js, "key": b"\x00" * 32}
    )
    await harness.raises("DecryptError", "module", "attachments.decryptAttachment", blob[:-1], as_js)
    version_2 = b"\x02" + blob[1:]
    await harness.raises(
        "DecryptError",
        "module",
        "attachments.decryptAttachment",
        version_2,
        {**as_js, "digest": hashlib.sha256(version_2).digest()},
    )


async def test_malformed_states_are_crypto_errors(harness: Harness) -> None:
    alice, bob = PyPeer(), await JsPeer.create(harness, "bob")
    await bob.call(
        "decrypt", *alice.address, await alice.device.encrypt(*bob.address, b"hi", bundle_from_json(await bob.bundle()))
    )
    await alice.device.decrypt(*bob.address, await bob.call("encrypt", *alice.address, b"hello"))
    _, distribution = alice.device.sender_key_distribution("chat")
    await bob.call("processSenderKeyDistribution", "chat", *alice.address, distribution)
    await bob.call("senderKeyDistribution", "chat")
    await bob.call("generateOneTimePrekeys", 2)
    state = await bob.state()
    await harness.helper("loadDevice", "copy", state)
    assert await harness.device("copy", "toJSON") == state

    broken: list[Any] = [None, 1, "x", [], {}, {**state, "version": 99}, {**state, "format": "other"}]
    broken += [{**state, "identity_seed": "AAAA"}, {**state, "signed_prekeys": []}]
    broken += [{k: v for k, v in state.items() if k != field} for field in state if field != "address"]
    for data in broken:
        await harness.raises("CryptoError", "harness", "loadDevice", "broken", data)
    # Wrong types anywhere: some are valid (an empty list), the rest must be CryptoError, never another error.
    for field in state:
        for replacement in (None, 1, "x", [], {}, [[1, 2, 3, 4]], [["a", "b", [{"x": 1}]]], {"a": 1}, "!!", 2.5):
            try:
                await harness.helper("loadDevice", "broken", {**state, field: replacement})
            except JsError as error:
                assert error.name == "CryptoError", (field, replacement, error)
    for field, value in state.items():  # one level deeper: inside the lists
        if isinstance(value, list) and value:
            for replacement in (None, 1, "x", [None] * 4, [1, 2, 3, 4], ["x"] * 4):
                try:
                    await harness.helper("loadDevice", "broken", {**state, field: [replacement, *value[1:]]})
                except JsError as error:
                    assert error.name == "CryptoError", (field, replacement, error)


async def test_the_envelope_checks(harness: Harness) -> None:
    chat = str(uuid.uuid4())
    message = await harness.module("envelope.encodeEnvelope", chat, {"clientId": "c1", "text": "hi", "replyTo": "m0"})
    assert (
        message
        == json.dumps(
            {"v": 2, "chat_id": chat, "client_id": "c1", "text": "hi", "reply_to": "m0"}, separators=(",", ":")
        ).encode()
    )
    decoded = await harness.module("envelope.decodeEnvelope", message, chat)
    await harness.module("envelope.checkNewMessage", decoded, {"client_id": "c1"})
    await harness.raises("DecryptError", "module", "envelope.checkNewMessage", decoded, {"client_id": "c2"})
    await harness.raises("DecryptError", "module", "envelope.checkEdit", decoded, "c1")
    # The chat check: another chat, another version, not JSON.
    await harness.raises("DecryptError", "module", "envelope.decodeEnvelope", message, str(uuid.uuid4()))
    v1 = json.dumps({"v": 1, "chat_id": chat, "text": "old"}).encode()
    for bad in (v1, b"not json", b"\xff\xfe", b"[]", b"null"):
        await harness.raises("DecryptError", "module", "envelope.decodeEnvelope", bad, chat)
    # The message check for an edit.
    edit = await harness.module("envelope.encodeEnvelope", chat, {"editOf": "c1", "text": "better"})
    decoded_edit = await harness.module("envelope.decodeEnvelope", edit, chat)
    await harness.module("envelope.checkEdit", decoded_edit, "c1")
    await harness.raises("DecryptError", "module", "envelope.checkEdit", decoded_edit, "c0")
    await harness.raises("DecryptError", "module", "envelope.checkNewMessage", decoded_edit, {"client_id": "c1"})
    await harness.raises("CryptoError", "module", "envelope.encodeEnvelope", chat, {"text": "neither"})
    # Attachments carry their key; one without is refused.
    attachment = {
        "mediaId": "m1",
        "key": b"\x01" * 32,
        "digest": b"\x02" * 32,
        "size": 5,
        "mime": "image/png",
        "name": "a.png",
    }
    with_file = await harness.module("envelope.encodeEnvelope", chat, {"clientId": "c3", "attachments": [attachment]})
    listed = await harness.module(
        "envelope.attachmentsOf", await harness.module("envelope.decodeEnvelope", with_file, chat)
    )
    assert listed == [attachment]
    unkeyed = json.loads(with_file)
    del unkeyed["attachments"][0]["key"]
    await harness.raises("DecryptError", "module", "envelope.attachmentsOf", unkeyed)


# ---- the state in IndexedDB ---------------------------------------------------------------------------------


async def test_state_in_indexeddb_survives_a_reload(harness: Harness) -> None:
    alice = PyPeer()
    bob_address = new_address()
    await harness.helper("storeCreate", "bob", *bob_address)
    prekeys = await harness.helper("stored", "bob", "generateOneTimePrekeys", [1])
    body = await harness.helper("stored", "bob", "publishKeysBody", [prekeys])
    handed_out = {
        **body,
        "user_id": bob_address[0],
        "device_id": bob_address[1],
        "one_time_prekey": body["one_time_prekeys"][0],
    }
    first = await alice.device.encrypt(*bob_address, b"before reload", bundle_from_json(handed_out))
    assert await harness.helper("stored", "bob", "decrypt", [*alice.address, first]) == b"before reload"
    reply = await harness.helper("stored", "bob", "encrypt", [*alice.address, b"reply"])
    assert await alice.device.decrypt(*bob_address, reply) == b"reply"
    pending = [await alice.device.encrypt(*bob_address, b"p%d" % i) for i in range(4)]
    assert await harness.helper("stored", "bob", "decrypt", [*alice.address, pending[3]]) == b"p3"

    await harness.load()  # a reload: nothing in memory survives, IndexedDB does
    for i in (1, 0, 2):  # their keys were skipped and stored before the reload
        assert await harness.helper("stored", "bob", "decrypt", [*alice.address, pending[i]]) == b"p%d" % i
    with pytest.raises(JsError) as caught:
        await harness.helper("stored", "bob", "decrypt", [*alice.address, pending[3]])
    assert caught.value.name == "DuplicateMessage"
    reply = await harness.helper("stored", "bob", "encrypt", [*alice.address, b"after reload"])
    assert await alice.device.decrypt(*bob_address, reply) == b"after reload"
    state = await harness.helper("storedState", "bob")
    assert state["address"] == list(bob_address) and state["one_time_prekeys"] == []
    with pytest.raises(JsError) as caught:
        await harness.helper("storeCreate", "bob", *bob_address)  # never replaced by accident
    assert caught.value.name == "CryptoError"


async def two_tabs_of_bob(context: Any, web_server: str) -> tuple[Harness, Harness, PyPeer, Address]:
    """Two tabs sharing Bob's stored device, which has accepted a session begun by Alice (a Python peer)."""
    first, second = await Harness.open(context, web_server), await Harness.open(context, web_server)
    alice, bob_address = PyPeer(), new_address()
    await first.helper("storeCreate", "bob", *bob_address)
    body = await first.helper("stored", "bob", "publishKeysBody", [[]])
    handed_out = {**body, "user_id": bob_address[0], "device_id": bob_address[1], "one_time_prekey": None}
    await first.helper(
        "stored",
        "bob",
        "decrypt",
        [*alice.address, await alice.device.encrypt(*bob_address, b"hi", bundle_from_json(handed_out))],
    )
    return first, second, alice, bob_address


async def test_two_tabs_never_advance_one_ratchet(context: Any, web_server: str) -> None:
    first, second, alice, bob_address = await two_tabs_of_bob(context, web_server)

    # Tab one encrypts and keeps the lock; tab two's encryption must wait for it, then start from its state.
    held = asyncio.ensure_future(first.helper("storedHeld", "bob", "encrypt", [*alice.address, b"tab one"], "g"))
    while not await first.helper("gateEntered", "g"):
        await asyncio.sleep(0.01)
    waiting = asyncio.ensure_future(second.helper("stored", "bob", "encrypt", [*alice.address, b"tab two"]))
    for _ in range(100):
        if (await second.helper("locks"))["pending"] == ["sup-crypto-bob"]:
            break
        await asyncio.sleep(0.01)
    assert await second.helper("locks") == {"held": ["sup-crypto-bob"], "pending": ["sup-crypto-bob"]}
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await first.helper("openGate", "g")
    one, two = await held, await waiting
    assert await alice.device.decrypt(*bob_address, one) == b"tab one"
    assert await alice.device.decrypt(*bob_address, two) == b"tab two"
    one_m, two_m = wire.decode_envelope(one).message, wire.decode_envelope(two).message
    assert one_m.ratchet_key == two_m.ratchet_key and one_m.index + 1 == two_m.index  # the next key of one chain

    # Many at once from both tabs: every message gets its own key, and all decrypt.
    sends = [
        tab.helper("stored", "bob", "encrypt", [*alice.address, b"burst %d" % i])
        for i in range(6)
        for tab in (first, second)
    ]
    burst = await asyncio.gather(*sends)
    assert len({wire.decode_envelope(e).message.index for e in burst}) == len(burst)
    assert sorted([await alice.device.decrypt(*bob_address, e) for e in burst]) == sorted(
        b"burst %d" % i for i in range(6) for _ in range(2)
    )


async def test_without_the_lock_two_tabs_reuse_a_message_key(context: Any, web_server: str) -> None:
    """The control experiment: what the lock prevents does happen without it."""
    first, second, alice, bob_address = await two_tabs_of_bob(context, web_server)
    races = [
        asyncio.ensure_future(tab.helper("unlockedRace", "bob", "encrypt", [*alice.address, b"tab %d" % n], "g"))
        for n, tab in enumerate((first, second))
    ]
    while not (await first.helper("gateEntered", "g") and await second.helper("gateEntered", "g")):
        await asyncio.sleep(0.01)
    await first.helper("openGate", "g")
    await second.helper("openGate", "g")
    one, two = await asyncio.gather(*races)
    assert wire.decode_envelope(one).message.index == wire.decode_envelope(two).message.index  # one key, twice
    assert await alice.device.decrypt(*bob_address, one) == b"tab 0"
    with pytest.raises(DuplicateMessage):
        await alice.device.decrypt(*bob_address, two)
