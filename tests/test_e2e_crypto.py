"""The client-side E2E crypto core: pairwise sessions, sender keys, attachments, safety numbers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
import x3dh
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sup.client.crypto import (
    MAX_SKIP,
    AttachmentKey,
    BadBundle,
    Bundle,
    CryptoError,
    DecryptError,
    DeviceCrypto,
    DuplicateMessage,
    NoSession,
    OneTimePrekey,
    SignedPrekey,
    UntrustedIdentity,
    decrypt_attachment,
    encrypt_attachment,
    fingerprint,
    safety_number,
    wire,
)
from sup.client.crypto.device import Address
from sup.client.crypto.sessions import X3DHState
from sup.client.crypto.wire import GroupMessage
from sup.e2ekeys import ED25519_SMALL_ORDER_ENCODINGS, is_weak_public_key
from tests import torsion
from tests.torsion import mixed_order_signer


def new_address(user_id: str | None = None) -> Address:
    return (user_id or str(uuid.uuid4()), str(uuid.uuid4()))


def bundle_of(device: DeviceCrypto, address: Address, one_time: bool = True) -> Bundle:
    """What the server's key directory would hand out for `device`."""
    opk = device.generate_one_time_prekeys(1)[0] if one_time else None
    return Bundle(address[0], address[1], device.identity_key, device.signed_prekey(), opk)


class Peer:
    def __init__(self, user_id: str | None = None) -> None:
        self.address = new_address(user_id)
        self.device = DeviceCrypto.create(*self.address)

    def bundle(self, one_time: bool = True) -> Bundle:
        return bundle_of(self.device, self.address, one_time)

    async def send(self, to: Peer, text: bytes) -> bytes:
        # Yield first: conftest fails a test whose one callback holds the loop for long, and tests loop a lot.
        await asyncio.sleep(0)
        bundle = None if self.device.has_session(*to.address) else to.bundle()
        return await self.device.encrypt(*to.address, text, bundle)

    async def receive(self, sender: Peer, envelope: bytes) -> bytes:
        await asyncio.sleep(0)
        return await self.device.decrypt(*sender.address, envelope)


def assert_nothing_kept(alice: Peer, bob: Peer) -> None:
    """What a refused bundle of bob's must leave on alice's device: no session with him, no identity of his."""
    assert not alice.device.has_session(*bob.address)
    assert alice.device.peer_identity(*bob.address) is None


# ---- identity and prekeys ------------------------------------------------------------------------------


def test_signed_prekey_signature_verifies_with_standard_ed25519() -> None:
    device = DeviceCrypto.create()
    for spk in (device.signed_prekey(), device.rotate_signed_prekey()):
        assert len(spk.public_key) == 32 and len(spk.signature) == 64
        Ed25519PublicKey.from_public_bytes(device.identity_key).verify(spk.signature, b"\x05" + spk.public_key)


def test_xeddsa_signatures_from_x3dh_verify_with_standard_ed25519() -> None:
    # x3dh signs its own signed prekeys with XEdDSA (random nonce); the server checks with plain Ed25519.
    for _ in range(20):
        state = X3DHState.create(x3dh.IdentityKeyFormat.ED_25519, x3dh.HashFunction.SHA_256, b"test")
        bundle = state.bundle
        Ed25519PublicKey.from_public_bytes(bundle.identity_key).verify(
            bundle.signed_pre_key_sig, b"\x05" + bundle.signed_pre_key
        )


def test_one_time_prekeys_have_unique_ids() -> None:
    device = DeviceCrypto.create()
    keys = device.generate_one_time_prekeys(10) + device.generate_one_time_prekeys(5)
    assert len({k.key_id for k in keys}) == 15
    assert all(len(k.public_key) == 32 for k in keys)
    assert device.one_time_prekeys_left() == 15


# ---- pairwise sessions ---------------------------------------------------------------------------------


async def test_conversation_both_directions() -> None:
    alice, bob = Peer(), Peer()
    first = await alice.send(bob, b"hello bob")
    second = await alice.send(bob, b"are you there?")
    assert first[1] == second[1] == 1  # both carry the X3DH header until Bob answers
    assert await bob.receive(alice, first) == b"hello bob"
    assert await bob.receive(alice, second) == b"are you there?"
    assert bob.device.peer_identity(*alice.address) == alice.device.identity_key
    for round_ in range(5):
        reply = await bob.send(alice, b"reply %d" % round_)
        assert reply[1] == 2
        assert await alice.receive(bob, reply) == b"reply %d" % round_
        follow = await alice.send(bob, b"follow %d" % round_)
        assert follow[1] == 2  # Alice got an answer: no more X3DH header
        assert await bob.receive(alice, follow) == b"follow %d" % round_


async def test_bundle_without_one_time_prekey() -> None:
    alice, bob = Peer(), Peer()
    envelope = await alice.device.encrypt(*bob.address, b"no opk", bob.bundle(one_time=False))
    assert await bob.receive(alice, envelope) == b"no opk"
    # Without a one-time prekey a replayed initial message is still refused.
    bob.device.forget_session(*alice.address)
    with pytest.raises(DuplicateMessage):
        await bob.receive(alice, envelope)


async def test_multi_device() -> None:
    alice_user, bob_user = str(uuid.uuid4()), str(uuid.uuid4())
    a1, a2 = Peer(alice_user), Peer(alice_user)
    b1, b2 = Peer(bob_user), Peer(bob_user)
    for target in (b1, b2, a2):
        envelope = await a1.send(target, b"to every device")
        assert await target.receive(a1, envelope) == b"to every device"
    # Each pairwise session is independent: B2's envelope does not open on B1.
    envelope = await a1.send(b2, b"only b2")
    with pytest.raises(DecryptError):
        await b1.receive(a1, envelope)
    assert await b2.receive(a1, envelope) == b"only b2"
    assert await a1.receive(a2, await a2.send(a1, b"from my other device")) == b"from my other device"


async def test_encrypt_without_session_or_bundle() -> None:
    alice, bob = Peer(), Peer()
    with pytest.raises(NoSession):
        await alice.device.encrypt(*bob.address, b"x")
    reply_without_session = await alice.send(bob, b"x")
    await bob.receive(alice, reply_without_session)
    normal = await bob.send(alice, b"y")
    alice.device.forget_session(*bob.address)
    with pytest.raises(NoSession):
        await alice.receive(bob, normal)


async def test_forged_signed_prekey_is_a_bad_bundle() -> None:
    alice, bob, mallory = Peer(), Peer(), Peer()
    good = bob.bundle()
    forged_spk = SignedPrekey(
        good.signed_prekey.key_id, mallory.device.signed_prekey().public_key, good.signed_prekey.signature
    )
    for bad in (
        Bundle(*bob.address, good.identity_key, forged_spk, good.one_time_prekey),
        Bundle(*bob.address, mallory.device.identity_key, good.signed_prekey, good.one_time_prekey),
        Bundle(*mallory.address, good.identity_key, good.signed_prekey, good.one_time_prekey),
        Bundle(*bob.address, good.identity_key, SignedPrekey(1, b"short", good.signed_prekey.signature), None),
    ):
        with pytest.raises(BadBundle):
            await alice.device.encrypt(*bob.address, b"x", bad)
    assert_nothing_kept(alice, bob)


async def test_one_time_prekey_is_used_once() -> None:
    alice, carol, bob = Peer(), Peer(), Peer()
    bundle = bob.bundle()
    assert bob.device.one_time_prekeys_left() == 1
    first = await alice.device.encrypt(*bob.address, b"first", bundle)
    assert await bob.receive(alice, first) == b"first"
    assert bob.device.one_time_prekeys_left() == 0
    # A second initial message (another session) with the same one-time prekey no longer decrypts.
    reuse = await carol.device.encrypt(*bob.address, b"reuse", bundle)
    with pytest.raises(DecryptError):
        await bob.receive(carol, reuse)
    assert not bob.device.has_session(*carol.address)


async def test_rotated_signed_prekey_still_accepts_late_initial_messages() -> None:
    alice, bob = Peer(), Peer()
    bundle = bob.bundle()
    envelope = await alice.device.encrypt(*bob.address, b"late", bundle)
    bob.device.rotate_signed_prekey()
    assert bob.device.signed_prekey().key_id != bundle.signed_prekey.key_id
    assert await bob.receive(alice, envelope) == b"late"


async def test_identity_change_is_untrusted_until_accepted() -> None:
    alice, bob = Peer(), Peer()
    await bob.receive(alice, await alice.send(bob, b"hi"))
    # Bob reinstalls: same address, new identity key.
    reinstalled = DeviceCrypto.create(*bob.address)
    new_bundle = bundle_of(reinstalled, bob.address)
    alice.device.forget_session(*bob.address)
    with pytest.raises(UntrustedIdentity):
        await alice.device.encrypt(*bob.address, b"x", new_bundle)
    alice.device.accept_identity(*bob.address, reinstalled.identity_key)
    envelope = await alice.device.encrypt(*bob.address, b"after accept", new_bundle)
    assert await reinstalled.decrypt(*alice.address, envelope) == b"after accept"

    # The same on the receiving side: an initial message from a changed identity.
    alice2 = DeviceCrypto.create(*alice.address)
    envelope = await alice2.encrypt(*bob.address, b"new alice", bundle_of(reinstalled, bob.address))
    with pytest.raises(UntrustedIdentity) as caught:
        await reinstalled.decrypt(*alice.address, envelope)
    assert caught.value.identity_key == alice2.identity_key
    assert reinstalled.peer_identity(*alice.address) == alice.device.identity_key
    reinstalled.accept_identity(*alice.address, alice2.identity_key)
    assert await reinstalled.decrypt(*alice.address, envelope) == b"new alice"


async def test_tampered_ciphertext_fails_and_session_survives() -> None:
    alice, bob = Peer(), Peer()
    initial = await alice.send(bob, b"initial message")
    for i in range(len(initial)):
        tampered = bytearray(initial)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptError):
            await bob.receive(alice, bytes(tampered))
    assert not bob.device.has_session(*alice.address)
    assert await bob.receive(alice, initial) == b"initial message"
    await alice.receive(bob, await bob.send(alice, b"ok"))

    message = await alice.send(bob, b"a normal message")
    for i in range(len(message)):
        for flip in (0x01, 0x80):
            tampered = bytearray(message)
            tampered[i] ^= flip
            with pytest.raises(DecryptError):
                await bob.receive(alice, bytes(tampered))
    for truncated in (message[:-1], message[:10], b"", message + b"\x00"):
        with pytest.raises(DecryptError):
            await bob.receive(alice, truncated)
    assert await bob.receive(alice, message) == b"a normal message"
    assert await bob.receive(alice, await alice.send(bob, b"next")) == b"next"


async def test_replay_is_a_duplicate() -> None:
    alice, bob = Peer(), Peer()
    initial = await alice.send(bob, b"one")
    assert await bob.receive(alice, initial) == b"one"
    with pytest.raises(DuplicateMessage):
        await bob.receive(alice, initial)
    reply = await bob.send(alice, b"two")
    assert await alice.receive(bob, reply) == b"two"
    old_chain = await alice.send(bob, b"three")
    await bob.receive(alice, old_chain)
    await alice.receive(bob, await bob.send(alice, b"four"))
    await bob.receive(alice, await alice.send(bob, b"five"))  # Bob's receiving chain has moved on
    for replay in (old_chain, initial):
        with pytest.raises(DuplicateMessage):
            await bob.receive(alice, replay)


async def test_skipped_keys_are_bounded() -> None:
    alice, bob = Peer(), Peer()
    await bob.receive(alice, await alice.send(bob, b"start"))
    await alice.receive(bob, await bob.send(alice, b"answer"))
    sent = [await alice.send(bob, b"m%d" % i) for i in range(MAX_SKIP + 2)]
    with pytest.raises(DecryptError):
        await bob.receive(alice, sent[-1])  # would need MAX_SKIP + 1 skipped keys
    assert await bob.receive(alice, sent[0]) == b"m0"
    assert await bob.receive(alice, sent[-1]) == b"m%d" % (MAX_SKIP + 1)  # now exactly MAX_SKIP skipped
    assert await bob.receive(alice, sent[500]) == b"m500"
    assert await alice.receive(bob, await bob.send(alice, b"still fine")) == b"still fine"


async def test_state_survives_serialisation_mid_conversation() -> None:
    alice, bob = Peer(), Peer()
    await bob.receive(alice, await alice.send(bob, b"hi"))
    await alice.receive(bob, await bob.send(alice, b"hello"))
    pending = [await alice.send(bob, b"p%d" % i) for i in range(4)]
    assert await bob.receive(alice, pending[3]) == b"p3"  # leaves skipped keys for p0..p2
    _, distribution = alice.device.sender_key_distribution("chat")
    bob.device.process_sender_key_distribution("chat", *alice.address, distribution)
    group = [alice.device.group_encrypt("chat", b"g%d" % i) for i in range(3)]
    assert bob.device.group_decrypt("chat", *alice.address, group[2]) == b"g2"
    spare = bob.device.generate_one_time_prekeys(3)

    blob = bob.device.to_bytes()
    bob.device = DeviceCrypto.from_bytes(blob)
    alice.device = DeviceCrypto.from_bytes(alice.device.to_bytes())
    assert bob.device.to_bytes() == blob

    assert bob.device.one_time_prekeys_left() == 3
    assert bob.device.peer_identity(*alice.address) == alice.device.identity_key
    assert [await bob.receive(alice, pending[i]) for i in (1, 0, 2)] == [b"p1", b"p0", b"p2"]
    with pytest.raises(DuplicateMessage):
        await bob.receive(alice, pending[3])
    assert bob.device.group_decrypt("chat", *alice.address, group[0]) == b"g0"
    with pytest.raises(DuplicateMessage):
        bob.device.group_decrypt("chat", *alice.address, group[2])
    assert bob.device.group_decrypt("chat", *alice.address, alice.device.group_encrypt("chat", b"g3")) == b"g3"
    assert await alice.receive(bob, await bob.send(alice, b"after restore")) == b"after restore"
    # A new peer can still use a one-time prekey created before the restore.
    carol = Peer()
    bundle = Bundle(*bob.address, bob.device.identity_key, bob.device.signed_prekey(), spare[1])
    assert await bob.receive(carol, await carol.device.encrypt(*bob.address, b"c", bundle)) == b"c"


def test_unknown_state_version_is_refused() -> None:
    with pytest.raises(CryptoError):
        DeviceCrypto.from_bytes(b'{"version": 99}')
    with pytest.raises(CryptoError):
        DeviceCrypto.from_bytes(b"not json")


async def test_simultaneous_initiation_converges() -> None:
    alice, bob = Peer(), Peer()
    to_bob = await alice.send(bob, b"from alice")
    to_alice = await bob.send(alice, b"from bob")
    assert await bob.receive(alice, to_bob) == b"from alice"
    assert await alice.receive(bob, to_alice) == b"from bob"
    for i in range(3):
        assert await bob.receive(alice, await alice.send(bob, b"a%d" % i)) == b"a%d" % i
        assert await alice.receive(bob, await bob.send(alice, b"b%d" % i)) == b"b%d" % i


# ---- out-of-order and dropped delivery (property tests) -------------------------------------------------


delivery = st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=30).flatmap(
    lambda sizes: st.tuples(
        st.just(len(sizes)),
        st.permutations(range(len(sizes))),
        st.sets(st.integers(min_value=0, max_value=len(sizes) - 1)),
    )
)


@settings(max_examples=50, deadline=None)
@given(delivery, st.integers(min_value=0, max_value=4))
def test_pairwise_out_of_order_and_dropped(plan: tuple[int, list[int], set[int]], replies_after: int) -> None:
    count, order, dropped = plan

    async def run() -> None:
        alice, bob = Peer(), Peer()
        await bob.receive(alice, await alice.send(bob, b"setup"))
        sent = []
        for i in range(count):
            if i == replies_after:
                # A reply in the middle forces a DH ratchet step, so chains of both epochs get mixed up.
                await alice.receive(bob, await bob.send(alice, b"reply"))
            sent.append(await alice.send(bob, b"msg %d" % i))
        for i in order:
            if i in dropped:
                continue
            assert await bob.receive(alice, sent[i]) == b"msg %d" % i
        for i in order:
            if i not in dropped:
                with pytest.raises(DuplicateMessage):
                    await bob.receive(alice, sent[i])

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(delivery)
def test_initial_messages_out_of_order_and_dropped(plan: tuple[int, list[int], set[int]]) -> None:
    count, order, dropped = plan

    async def run() -> None:
        alice, bob = Peer(), Peer()
        sent = [await alice.send(bob, b"early %d" % i) for i in range(count)]
        assert all(envelope[1] == 1 for envelope in sent)  # all carry the X3DH header: no answer yet
        delivered = [i for i in order if i not in dropped]
        for i in delivered:
            assert await bob.receive(alice, sent[i]) == b"early %d" % i
        assert bob.device.one_time_prekeys_left() == (0 if delivered else 1)
        for i in delivered:
            with pytest.raises(DuplicateMessage):
                await bob.receive(alice, sent[i])

    asyncio.run(run())


@settings(max_examples=50, deadline=None)
@given(delivery, st.booleans())
def test_group_out_of_order_and_dropped(plan: tuple[int, list[int], set[int]], restore: bool) -> None:
    count, order, dropped = plan
    alice, bob = Peer(), Peer()
    _, distribution = alice.device.sender_key_distribution("chat")
    bob.device.process_sender_key_distribution("chat", *alice.address, distribution)
    sent = [alice.device.group_encrypt("chat", b"group %d" % i) for i in range(count)]
    delivered = [i for i in order if i not in dropped]
    for n, i in enumerate(delivered):
        if restore and n == len(delivered) // 2:
            bob.device = DeviceCrypto.from_bytes(bob.device.to_bytes())
        assert bob.device.group_decrypt("chat", *alice.address, sent[i]) == b"group %d" % i
    for i in delivered:
        with pytest.raises(DuplicateMessage):
            bob.device.group_decrypt("chat", *alice.address, sent[i])


# ---- sender keys ---------------------------------------------------------------------------------------


def test_group_conversation() -> None:
    alice, bob, carol = Peer(), Peer(), Peer()
    for sender in (alice, bob):
        dist_id, message = sender.device.sender_key_distribution("chat")
        assert sender.device.sender_key_distribution("chat") == (dist_id, message)  # stable until rotated
        for member in (alice, bob, carol):
            if member is not sender:
                member.device.process_sender_key_distribution("chat", *sender.address, message)
    for sender in (alice, bob):
        ciphertext = sender.device.group_encrypt("chat", b"hello from %s" % sender.address[0].encode())
        for member in (alice, bob, carol):
            if member is not sender:
                plain = member.device.group_decrypt("chat", *sender.address, ciphertext)
                assert plain == b"hello from %s" % sender.address[0].encode()
    with pytest.raises(NoSession):
        carol.device.group_decrypt("other chat", *alice.address, alice.device.group_encrypt("chat", b"x"))
    with pytest.raises(NoSession):
        carol.device.group_encrypt("chat", b"no sender key yet")
    with pytest.raises(CryptoError):
        carol.device.process_sender_key_distribution("chat", *alice.address, b"\x01\x03garbage")


def test_group_tamper_and_forgery() -> None:
    alice, bob, mallory = Peer(), Peer(), Peer()
    _, message = alice.device.sender_key_distribution("chat")
    for member in (bob, mallory):
        member.device.process_sender_key_distribution("chat", *alice.address, message)
    ciphertext = alice.device.group_encrypt("chat", b"signed by alice")
    for i in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[i] ^= 0x04
        with pytest.raises((DecryptError, NoSession)):
            bob.device.group_decrypt("chat", *alice.address, bytes(tampered))
    # Mallory knows Alice's chain key, but not her signing key: a forged message does not verify.
    state = mallory.device._peer_sender_keys[("chat", *alice.address)][0]
    from sup.client.crypto.senderkeys import OwnSenderKey

    forger = OwnSenderKey(state.distribution_id, state.iteration + 1, state.chain_key, b"\x01" * 32)
    with pytest.raises(DecryptError):
        bob.device.group_decrypt(
            "chat", *alice.address, forger.encrypt(b"forged", GroupMessage.context("chat", *alice.address))
        )
    assert bob.device.group_decrypt("chat", *alice.address, ciphertext) == b"signed by alice"


def test_group_skip_bound() -> None:
    alice, bob = Peer(), Peer()
    _, message = alice.device.sender_key_distribution("chat")
    bob.device.process_sender_key_distribution("chat", *alice.address, message)
    sent = [alice.device.group_encrypt("chat", b"%d" % i) for i in range(MAX_SKIP + 2)]
    with pytest.raises(DecryptError):
        bob.device.group_decrypt("chat", *alice.address, sent[-1])
    assert bob.device.group_decrypt("chat", *alice.address, sent[0]) == b"0"
    assert bob.device.group_decrypt("chat", *alice.address, sent[-1]) == b"%d" % (MAX_SKIP + 1)


def test_sender_key_rotation_locks_out_removed_member() -> None:
    alice, bob, carol = Peer(), Peer(), Peer()
    old_id, message = alice.device.sender_key_distribution("chat")
    for member in (bob, carol):
        member.device.process_sender_key_distribution("chat", *alice.address, message)
    before = alice.device.group_encrypt("chat", b"before")
    in_flight = alice.device.group_encrypt("chat", b"in flight")
    for member in (bob, carol):
        assert member.device.group_decrypt("chat", *alice.address, before) == b"before"

    # Carol leaves: Alice rotates and distributes only to Bob.
    new_id, new_message = alice.device.rotate_sender_key("chat")
    assert new_id != old_id
    bob.device.process_sender_key_distribution("chat", *alice.address, new_message)
    after = alice.device.group_encrypt("chat", b"after")
    assert bob.device.group_decrypt("chat", *alice.address, after) == b"after"
    with pytest.raises(NoSession):
        carol.device.group_decrypt("chat", *alice.address, after)
    # Messages sent just before the rotation still decrypt for Bob.
    assert bob.device.group_decrypt("chat", *alice.address, in_flight) == b"in flight"
    # Re-processing an old distribution does not rewind the chain.
    bob.device.process_sender_key_distribution("chat", *alice.address, message)
    with pytest.raises(DuplicateMessage):
        bob.device.group_decrypt("chat", *alice.address, before)


# ---- attachments and safety numbers ---------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 1000, 100_000])
def test_attachment_round_trip(size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    blob, key = encrypt_attachment(data)
    assert len(key.key) == 32 and len(key.digest) == 32 and key.size == size
    if size >= 16:  # a shorter plaintext may turn up in random ciphertext by chance (1 byte: ~1 in 9)
        assert data not in blob
    assert decrypt_attachment(blob, key) == data
    assert encrypt_attachment(data)[1].key != key.key  # a fresh key every time


def test_attachment_tamper() -> None:
    blob, key = encrypt_attachment(b"secret picture")
    for i in range(len(blob)):
        tampered = bytearray(blob)
        tampered[i] ^= 0x01
        with pytest.raises(DecryptError):
            decrypt_attachment(bytes(tampered), key)
    from hashlib import sha256

    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptError):  # the digest matches, but the GCM tag does not
        decrypt_attachment(bytes(tampered), AttachmentKey(key.key, sha256(tampered).digest(), key.size))
    with pytest.raises(DecryptError):
        decrypt_attachment(blob, AttachmentKey(key.key, key.digest, key.size + 1))
    with pytest.raises(DecryptError):
        decrypt_attachment(blob, AttachmentKey(b"\x00" * 32, key.digest, key.size))
    with pytest.raises(DecryptError):
        decrypt_attachment(blob[:-1], key)


def test_safety_numbers() -> None:
    alice, bob = [DeviceCrypto.create() for _ in range(2)], [DeviceCrypto.create()]
    a_keys, b_keys = [d.identity_key for d in alice], [d.identity_key for d in bob]
    a_id, b_id = str(uuid.uuid4()), str(uuid.uuid4())
    mine = safety_number(a_id, a_keys, b_id, b_keys)
    theirs = safety_number(b_id, b_keys, a_id, list(reversed(a_keys)))
    assert mine == theirs
    assert len(mine) == 60 and mine.isdigit()
    assert fingerprint(a_id, a_keys) in (mine[:30], mine[30:])
    assert len(fingerprint(b_id, b_keys)) == 30
    changed = safety_number(a_id, a_keys, b_id, [DeviceCrypto.create().identity_key])
    assert changed != mine
    assert safety_number(a_id, a_keys[:1], b_id, b_keys) != mine  # a device added or removed shows too
    assert safety_number(str(uuid.uuid4()), a_keys, b_id, b_keys) != mine


def test_one_time_prekey_dataclass_shape() -> None:
    key = OneTimePrekey(7, b"\x00" * 32)
    assert (key.key_id, key.public_key) == (7, b"\x00" * 32)


# ---- addresses are authenticated (a server cannot relabel a message) -------------------------------------


async def test_relabelled_initial_message_fails_and_changes_nothing() -> None:
    alice, bob, carol = Peer(), Peer(), Peer()
    initial = await alice.send(bob, b"from alice")
    before = bob.device.to_bytes()
    # The server delivers Alice's first message as if Carol's device had sent it; Bob never met Carol.
    with pytest.raises(DecryptError):
        await bob.receive(carol, initial)
    assert bob.device.to_bytes() == before
    assert bob.device.peer_identity(*carol.address) is None
    # Also as another device of Alice's own account.
    with pytest.raises(DecryptError):
        await bob.device.decrypt(alice.address[0], str(uuid.uuid4()), initial)
    assert bob.device.to_bytes() == before
    assert await bob.receive(alice, initial) == b"from alice"
    assert await alice.receive(bob, await bob.send(alice, b"hi alice")) == b"hi alice"


async def test_relabelled_normal_message_fails_and_session_survives() -> None:
    alice, bob, carol = Peer(), Peer(), Peer()
    for peer in (alice, carol):
        await bob.receive(peer, await peer.send(bob, b"hello"))
        await peer.receive(bob, await bob.send(peer, b"hello back"))
    message = await alice.send(bob, b"normal message")
    assert message[:2] == bytes((wire.VERSION, wire.MessageType.MESSAGE))
    before = bob.device.to_bytes()
    with pytest.raises(DecryptError):
        await bob.receive(carol, message)
    assert bob.device.to_bytes() == before
    assert await bob.receive(alice, message) == b"normal message"
    assert await bob.receive(carol, await carol.send(bob, b"carol still fine")) == b"carol still fine"
    assert await alice.receive(bob, await bob.send(alice, b"alice still fine")) == b"alice still fine"


async def test_initial_message_is_bound_to_the_recipient_address() -> None:
    # The server lists Bob's keys under Dave's address: Alice believes she writes to Dave, Bob gets it.
    alice, bob = Peer(), Peer()
    dave = new_address()
    envelope = await alice.device.encrypt(*dave, b"for dave", bundle_of(bob.device, dave))
    before = bob.device.to_bytes()
    with pytest.raises(DecryptError):
        await bob.receive(alice, envelope)
    assert bob.device.to_bytes() == before


async def test_own_address_is_required() -> None:
    bob = Peer()
    anonymous = DeviceCrypto.create()
    assert anonymous.address is None
    with pytest.raises(CryptoError):
        await anonymous.encrypt(*bob.address, b"x", bob.bundle())
    anonymous.sender_key_distribution("chat")
    with pytest.raises(CryptoError):
        anonymous.group_encrypt("chat", b"x")
    address = new_address()
    anonymous.set_address(*address)
    anonymous.set_address(*address)  # the same again is fine
    with pytest.raises(CryptoError):
        anonymous.set_address(*new_address())
    assert DeviceCrypto.from_bytes(anonymous.to_bytes()).address == address
    with pytest.raises(ValueError):
        DeviceCrypto.create("only a user id")


def test_group_message_attributed_to_another_device_fails() -> None:
    alice, bob, carol = Peer(), Peer(), Peer()
    _, alice_dist = alice.device.sender_key_distribution("chat")
    bob.device.process_sender_key_distribution("chat", *alice.address, alice_dist)
    bob.device.process_sender_key_distribution("other chat", *alice.address, alice_dist)
    # A malicious Carol re-distributes Alice's sender key as her own, so Bob holds it under Carol's address.
    bob.device.process_sender_key_distribution("chat", *carol.address, alice_dist)
    message = alice.device.group_encrypt("chat", b"from alice")
    before = bob.device.to_bytes()
    with pytest.raises(DecryptError):
        bob.device.group_decrypt("chat", *carol.address, message)
    with pytest.raises(DecryptError):
        bob.device.group_decrypt("other chat", *alice.address, message)
    with pytest.raises(NoSession):  # no sender key at all for that device
        bob.device.group_decrypt("chat", alice.address[0], str(uuid.uuid4()), message)
    assert bob.device.to_bytes() == before
    assert bob.device.group_decrypt("chat", *alice.address, message) == b"from alice"


# ---- skipped keys: the previous chain counts too -----------------------------------------------------------


async def _lost_on_old_chain(lost: int) -> tuple[Peer, Peer, list[bytes]]:
    """Bob received Alice's message 0 on her chain; `lost` more went missing; Alice then ratcheted."""
    alice, bob = Peer(), Peer()
    await bob.receive(alice, await alice.send(bob, b"start"))
    await alice.receive(bob, await bob.send(alice, b"answer"))
    old_chain = [await alice.send(bob, b"old %d" % i) for i in range(lost + 1)]
    assert await bob.receive(alice, old_chain[0]) == b"old 0"
    await alice.receive(bob, await bob.send(alice, b"make alice ratchet"))
    return alice, bob, old_chain


async def test_previous_chain_gap_above_max_skip_is_refused() -> None:
    alice, bob, old_chain = await _lost_on_old_chain(MAX_SKIP + 1)
    new_chain = await alice.send(bob, b"new chain")  # PN = MAX_SKIP + 2: Bob would skip MAX_SKIP + 1 keys
    before = bob.device.to_bytes()
    with pytest.raises(DecryptError):
        await bob.receive(alice, new_chain)
    assert bob.device.to_bytes() == before
    assert await bob.receive(alice, old_chain[1]) == b"old 1"  # now exactly MAX_SKIP are missing
    assert await bob.receive(alice, new_chain) == b"new chain"
    assert await bob.receive(alice, old_chain[-1]) == b"old %d" % (MAX_SKIP + 1)
    assert await alice.receive(bob, await bob.send(alice, b"fine")) == b"fine"


async def test_both_chains_together_are_bounded_by_max_skip() -> None:
    alice, bob, old_chain = await _lost_on_old_chain(MAX_SKIP // 2)
    new_chain = [await alice.send(bob, b"new %d" % i) for i in range(MAX_SKIP // 2 + 2)]
    before = bob.device.to_bytes()
    with pytest.raises(DecryptError):  # MAX_SKIP // 2 on the old chain + MAX_SKIP // 2 + 1 on the new one
        await bob.receive(alice, new_chain[-1])
    assert bob.device.to_bytes() == before
    assert await bob.receive(alice, new_chain[-2]) == b"new %d" % (MAX_SKIP // 2)  # exactly MAX_SKIP
    assert await bob.receive(alice, new_chain[-1]) == b"new %d" % (MAX_SKIP // 2 + 1)
    assert await bob.receive(alice, old_chain[7]) == b"old 7"
    with pytest.raises(DuplicateMessage):
        await bob.receive(alice, new_chain[-1])


# ---- weak keys --------------------------------------------------------------------------------------------

_P = torsion.P


def test_ed25519_blocklist_is_every_small_order_encoding() -> None:
    for encoding in ED25519_SMALL_ORDER_ENCODINGS:
        eight = torsion.decode(encoding)  # y is taken mod p, so the non-canonical encodings decode too
        for _ in range(3):
            eight = torsion.add(eight, eight)
        assert eight == (0, 1), encoding.hex()  # 8P is the identity
    # The eight small-order points, canonical with the sign bit cleared, are all listed.
    canonical = {e for e in ED25519_SMALL_ORDER_ENCODINGS if int.from_bytes(e, "little") < _P}
    assert len(canonical) == 5  # x = 0 for y = 1 and y = -1; the other six come in x, -x pairs
    assert len(ED25519_SMALL_ORDER_ENCODINGS) == 7


def test_is_weak_public_key() -> None:
    for encoding in ED25519_SMALL_ORDER_ENCODINGS:
        assert is_weak_public_key("ed25519", encoding)
        assert is_weak_public_key("ed25519", encoding[:31] + bytes((encoding[31] | 0x80,)))
    non_canonical = (_P + 2).to_bytes(32, "little")
    assert is_weak_public_key("ed25519", non_canonical)
    assert is_weak_public_key("ed25519", b"\x01" * 31)
    for _ in range(20):
        assert not is_weak_public_key("ed25519", DeviceCrypto.create().identity_key)
        assert not is_weak_public_key("x25519", DeviceCrypto.create().signed_prekey().public_key)
    order_8 = (
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    )
    # Non-canonical u + p too, where it fits in 255 bits (X25519 ignores the top bit).
    for u in (0, 1, _P - 1, _P, _P + 1, *order_8, *(u + _P for u in order_8 if u + _P < 2**255)):
        assert is_weak_public_key("x25519", u.to_bytes(32, "little")), u
    with pytest.raises(ValueError):
        is_weak_public_key("rsa", b"\x00" * 32)  # type: ignore[arg-type]


async def test_small_order_keys_in_a_bundle_are_refused() -> None:
    alice, bob = Peer(), Peer()
    good = bob.bundle()
    identity = b"\x01" + b"\x00" * 31
    any_signature = b"\x01" + b"\x00" * 63  # R = identity, S = 0
    # OpenSSL's plain Ed25519 accepts it for any message: this is why the key itself must be checked.
    Ed25519PublicKey.from_public_bytes(identity).verify(any_signature, b"\x05" + good.signed_prekey.public_key)
    weak_identity = Bundle(
        *bob.address, identity, SignedPrekey(1, good.signed_prekey.public_key, any_signature), good.one_time_prekey
    )
    small_order = (b"\x00" * 32, b"\x01" + b"\x00" * 31, (_P - 1).to_bytes(32, "little"))
    seed = bob.device._identity_seed
    from sup.client.crypto import primitives

    bad = [weak_identity]
    for weak in small_order:
        signed = SignedPrekey(7, weak, primitives.ed25519_sign(seed, b"\x05" + weak))
        bad.append(Bundle(*bob.address, good.identity_key, signed, good.one_time_prekey))
        bad.append(Bundle(*bob.address, good.identity_key, good.signed_prekey, OneTimePrekey(9, weak)))
    for bundle in bad:
        with pytest.raises(BadBundle):
            await alice.device.encrypt(*bob.address, b"x", bundle)
    assert_nothing_kept(alice, bob)
    assert await bob.receive(alice, await alice.device.encrypt(*bob.address, b"ok", good)) == b"ok"


async def test_an_identity_key_with_a_small_order_component_is_a_bad_bundle() -> None:
    # A + T (T of order 8) is no small-order encoding, and plain Ed25519 accepts a signature made for it;
    # XEdDSA refuses the key when X3DH converts it, which must be BadBundle, not the library's exception.
    alice, bob = Peer(), Peer()
    good = bob.bundle()
    identity, signature = await asyncio.to_thread(mixed_order_signer, b"\x05" + good.signed_prekey.public_key)
    assert not is_weak_public_key("ed25519", identity)
    Ed25519PublicKey.from_public_bytes(identity).verify(signature, b"\x05" + good.signed_prekey.public_key)
    forged = Bundle(
        *bob.address, identity, SignedPrekey(1, good.signed_prekey.public_key, signature), good.one_time_prekey
    )
    with pytest.raises(BadBundle, match="small-order component"):
        await alice.device.encrypt(*bob.address, b"x", forged)
    assert_nothing_kept(alice, bob)
    assert await bob.receive(alice, await alice.device.encrypt(*bob.address, b"ok", good)) == b"ok"


# ---- malformed state ---------------------------------------------------------------------------------------


async def _busy_state() -> bytes:
    alice, bob = Peer(), Peer()
    await bob.receive(alice, await alice.send(bob, b"hi"))
    await alice.receive(bob, await bob.send(alice, b"hello"))
    _, distribution = alice.device.sender_key_distribution("chat")
    bob.device.process_sender_key_distribution("chat", *alice.address, distribution)
    bob.device.sender_key_distribution("chat")
    bob.device.generate_one_time_prekeys(2)
    return bob.device.to_bytes()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_from_bytes_random_input_is_a_crypto_error(data: bytes) -> None:
    with pytest.raises(CryptoError):
        DeviceCrypto.from_bytes(data)


async def test_from_bytes_malformed_states_are_crypto_errors() -> None:
    import json

    valid = await _busy_state()
    DeviceCrypto.from_bytes(valid)
    broken = [b"[]", b"{}", b"null", b"1", b'"x"', b"[" * 100_000, b'{"version": 2}', b'{"version": true}']
    broken += [valid[:n] for n in range(0, len(valid), max(1, len(valid) // 300))]
    state = json.loads(valid)
    broken.append(json.dumps({**state, "identity_seed": "AAAA"}).encode())  # base64, but 3 bytes
    broken.append(json.dumps({**state, "signed_prekeys": []}).encode())
    # Every field but the address (set later) is required.
    broken += [json.dumps({k: v for k, v in state.items() if k != f}).encode() for f in state if f != "address"]
    for data in broken:
        with pytest.raises(CryptoError):
            DeviceCrypto.from_bytes(data)
    # Wrong types anywhere: some are valid (an empty list), the rest must be CryptoError, never another error.
    for field in state:
        for replacement in (None, 1, "x", [], {}, [[1, 2, 3, 4]], [["a", "b", [{"x": 1}]]], {"a": 1}, "!!", 2.5):
            with contextlib.suppress(CryptoError):
                DeviceCrypto.from_bytes(json.dumps({**state, field: replacement}).encode())
    for field, value in state.items():  # one level deeper: inside the lists
        if isinstance(value, list) and value:
            for replacement in (None, 1, "x", [None] * 4, [1, 2, 3, 4], ["x"] * 4):
                with contextlib.suppress(CryptoError):
                    DeviceCrypto.from_bytes(json.dumps({**state, field: [replacement, *value[1:]]}).encode())


async def test_version_1_state_loads_without_sessions() -> None:
    import json

    state = json.loads(await _busy_state())
    state["version"] = 1
    del state["address"]
    device = DeviceCrypto.from_bytes(json.dumps(state).encode())
    assert device.address is None
    assert not device._sessions
    assert device.one_time_prekeys_left() == 2
    assert device._identities and device._peer_sender_keys and device._own_sender_keys
