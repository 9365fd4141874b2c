"""The client-side E2E crypto core: pairwise sessions, sender keys, attachments, safety numbers."""

from __future__ import annotations

import asyncio
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
)
from sup.client.crypto.sessions import X3DHState

Address = tuple[str, str]


def new_address(user_id: str | None = None) -> Address:
    return (user_id or str(uuid.uuid4()), str(uuid.uuid4()))


def bundle_of(device: DeviceCrypto, address: Address, one_time: bool = True) -> Bundle:
    """What the server's key directory would hand out for `device`."""
    opk = device.generate_one_time_prekeys(1)[0] if one_time else None
    return Bundle(address[0], address[1], device.identity_key, device.signed_prekey(), opk)


class Peer:
    def __init__(self, user_id: str | None = None) -> None:
        self.device = DeviceCrypto.create()
        self.address = new_address(user_id)

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
    assert not alice.device.has_session(*bob.address)
    assert alice.device.peer_identity(*bob.address) is None


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
    reinstalled = DeviceCrypto.create()
    new_bundle = bundle_of(reinstalled, bob.address)
    alice.device.forget_session(*bob.address)
    with pytest.raises(UntrustedIdentity):
        await alice.device.encrypt(*bob.address, b"x", new_bundle)
    alice.device.accept_identity(*bob.address, reinstalled.identity_key)
    envelope = await alice.device.encrypt(*bob.address, b"after accept", new_bundle)
    assert await reinstalled.decrypt(*alice.address, envelope) == b"after accept"

    # The same on the receiving side: an initial message from a changed identity.
    alice2 = DeviceCrypto.create()
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
        bob.device.group_decrypt("chat", *alice.address, forger.encrypt(b"forged"))
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
    assert data not in blob or size == 0
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
