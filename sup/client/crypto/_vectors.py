"""Test-vector generator: fixed private keys and randomness in, exact bytes out (docs/e2e-vectors/).

Each `compute_*` function maps a vector's `inputs` to its `outputs`; tests/test_e2e_vectors.py recomputes
every stored vector with them, so the files cannot drift from the code. Regenerate with
`python -m sup.client.crypto._vectors docs/e2e-vectors`. Nothing here is part of the public API.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import x3dh.base_state

from sup.client.crypto import primitives, safety, senderkeys, sessions, wire
from sup.client.crypto.attachments import _encrypt_with
from sup.client.crypto.bundle import Bundle
from sup.client.crypto.device import DeviceCrypto
from sup.e2ekeys import signed_prekey_message

Hex = dict[str, Any]


def _fixed(label: str, size: int = 32) -> str:
    """Reproducible 'random' input: SHA-256 of a label, hex, truncated."""
    return hashlib.sha256(b"SUP test vector " + label.encode()).hexdigest()[: size * 2]


class _Script:
    """Hands out pre-set byte strings in order, in place of the random number generator."""

    def __init__(self, values: list[bytes]) -> None:
        self._values = list(values)

    def __call__(self, n: int) -> bytes:
        value = self._values.pop(0)
        if len(value) != n:
            raise AssertionError(f"randomness script out of order: wanted {n} bytes, next is {len(value)}")
        return value

    def choice(self, seq: list[Any]) -> Any:
        return seq[0]

    token_bytes = __call__


@contextlib.contextmanager
def _scripted(values: list[bytes]) -> Iterator[None]:
    script = _Script(values)
    # x3dh draws its ephemeral key from its own `secrets` import; reroute it for the vector only.
    with primitives._fixed_randomness(script), mock.patch.object(x3dh.base_state, "secrets", script):
        yield
    if script._values:
        raise AssertionError("randomness script not fully consumed")


def _x25519_private_of_seed(seed: bytes) -> bytes:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] = (h[31] & 127) | 64
    return bytes(h)


def _lp(text: str) -> bytes:
    """u16 big-endian byte length || UTF-8, as the spec writes it (independent of wire.length_prefixed)."""
    return struct.pack(">H", len(text.encode())) + text.encode()


def _addresses(i: Hex) -> bytes:
    return _lp(i["alice_user_id"]) + _lp(i["alice_device_id"]) + _lp(i["bob_user_id"]) + _lp(i["bob_device_id"])


def compute_signed_prekey(i: Hex) -> Hex:
    """Identity key, signed prekey and its RFC 8032 signature."""
    seed, spk = bytes.fromhex(i["identity_seed"]), bytes.fromhex(i["signed_prekey_private"])
    with _scripted([seed, spk]):
        device = DeviceCrypto.create()
    published = device.signed_prekey()
    return {
        "identity_key": device.identity_key.hex(),
        "identity_key_x25519_private": _x25519_private_of_seed(seed).hex(),
        "identity_key_x25519_public": primitives.x25519_public(_x25519_private_of_seed(seed)).hex(),
        "signed_prekey_id": published.key_id,
        "signed_prekey_public": published.public_key.hex(),
        "signed_message": signed_prekey_message(published.public_key).hex(),
        "signature": published.signature.hex(),
    }


def _x3dh_outputs(i: Hex, with_opk: bool) -> Hex:
    a_seed, b_seed = bytes.fromhex(i["alice_identity_seed"]), bytes.fromhex(i["bob_identity_seed"])
    spk = bytes.fromhex(i["bob_signed_prekey_private"])
    opk = bytes.fromhex(i["bob_one_time_prekey_private"]) if with_opk else None
    ek = bytes.fromhex(i["alice_ephemeral_private"])
    alice = sessions.x3dh_state(a_seed, spk, b"\x00" * 64, None)
    spk_signature = primitives.ed25519_sign(b_seed, b"\x05" + primitives.x25519_public(spk))
    bob = sessions.x3dh_state(b_seed, spk, spk_signature, opk)
    peer = sessions.PeerPrekeys(
        identity_key=primitives.ed25519_public(b_seed),
        signed_prekey_id=1,
        signed_prekey=primitives.x25519_public(spk),
        signed_prekey_signature=spk_signature,
        one_time_prekey_id=2 if with_opk else None,
        one_time_prekey=None if opk is None else primitives.x25519_public(opk),
    )
    appendix = wire.session_ad_appendix(
        (i["alice_user_id"], i["alice_device_id"]), (i["bob_user_id"], i["bob_device_id"])
    )
    with _scripted([ek]):
        secret, ad, header = asyncio.run(sessions.x3dh_initiate(alice, peer, appendix))
    secret_b, ad_b = asyncio.run(sessions.x3dh_respond(bob, header, peer.signed_prekey, peer.one_time_prekey, appendix))
    if (secret, ad) != (secret_b, ad_b):
        raise AssertionError("X3DH sides disagree")
    # From first principles, as a JavaScript client computes it.
    a_x, b_x = _x25519_private_of_seed(a_seed), _x25519_private_of_seed(b_seed)
    dhs = [
        primitives.x25519_exchange(a_x, peer.signed_prekey),
        primitives.x25519_exchange(ek, primitives.x25519_public(b_x)),
        primitives.x25519_exchange(ek, peer.signed_prekey),
    ]
    if opk is not None:
        dhs.append(primitives.x25519_exchange(ek, primitives.x25519_public(opk)))
    if primitives.hkdf_sha256(b"\xff" * 32 + b"".join(dhs), sessions.X3DH_INFO, 32) != secret:
        raise AssertionError("library X3DH differs from the spec derivation")
    if ad != b"\xed" + primitives.ed25519_public(a_seed) + b"\xed" + peer.identity_key + _addresses(i):
        raise AssertionError("library associated data differs from the spec")
    return {
        "shared_secret": secret.hex(),
        "associated_data": ad.hex(),
        "base_key": header.base_key.hex(),
        **{f"dh{n}": dh.hex() for n, dh in enumerate(dhs, 1)},
    }


def compute_x3dh(i: Hex) -> Hex:
    """The X3DH shared secret and associated data, with and without a one-time prekey."""
    with_opk = _x3dh_outputs(i, True)
    without = _x3dh_outputs(i, False)
    return {
        "alice_identity_key": primitives.ed25519_public(bytes.fromhex(i["alice_identity_seed"])).hex(),
        "bob_identity_key": primitives.ed25519_public(bytes.fromhex(i["bob_identity_seed"])).hex(),
        "base_key": with_opk["base_key"],
        **{k: v for k, v in with_opk.items() if k.startswith("dh")},
        "address_appendix": _addresses(i).hex(),
        "associated_data": with_opk["associated_data"],
        "shared_secret": with_opk["shared_secret"],
        "shared_secret_without_one_time_prekey": without["shared_secret"],
    }


def compute_first_message(i: Hex) -> Hex:
    """Alice's first envelope to Bob, built by DeviceCrypto and re-derived step by step from the spec."""
    a_seed, b_seed = bytes.fromhex(i["alice_identity_seed"]), bytes.fromhex(i["bob_identity_seed"])
    spk, opk = bytes.fromhex(i["bob_signed_prekey_private"]), bytes.fromhex(i["bob_one_time_prekey_private"])
    ek, ratchet = bytes.fromhex(i["alice_ephemeral_private"]), bytes.fromhex(i["alice_ratchet_private"])
    plaintext = bytes.fromhex(i["plaintext"])
    a_spk_unused = hashlib.sha256(b"alice's own signed prekey, unused here").digest()
    with _scripted([b_seed, spk, opk]):
        bob = DeviceCrypto.create(i["bob_user_id"], i["bob_device_id"])
        one_time = bob.generate_one_time_prekeys(1)[0]
    with _scripted([a_seed, a_spk_unused, ek, ratchet]):
        alice = DeviceCrypto.create(i["alice_user_id"], i["alice_device_id"])
        bundle = Bundle(i["bob_user_id"], i["bob_device_id"], bob.identity_key, bob.signed_prekey(), one_time)
        envelope = asyncio.run(alice.encrypt(i["bob_user_id"], i["bob_device_id"], plaintext, bundle))

    # The same bytes from first principles, as a JavaScript client would compute them.
    x3dh_out = _x3dh_outputs(i, True)
    secret, ad = bytes.fromhex(x3dh_out["shared_secret"]), bytes.fromhex(x3dh_out["associated_data"])
    ratchet_pub = primitives.x25519_public(ratchet)
    dh = primitives.x25519_exchange(ratchet, primitives.x25519_public(spk))
    okm = primitives.hkdf_sha256(dh, sessions.ROOT_CHAIN_INFO, 64, salt=secret)
    root_key, chain_key = okm[:32], okm[32:]
    message_key = primitives.hmac_sha256(chain_key, b"\x01")
    aes_key, nonce = sessions.message_key_material(message_key)
    header = wire.ratchet_header(ratchet_pub, 0, 0)
    ciphertext = primitives.aes_gcm_encrypt(aes_key, nonce, plaintext, ad + header)
    expected = wire.encode_envelope(
        wire.Envelope(
            wire.PrekeyHeader(alice.identity_key, primitives.x25519_public(ek), 1, 1),
            wire.RatchetMessage(ratchet_pub, 0, 0, ciphertext),
        )
    )
    if envelope != expected:
        raise AssertionError("DeviceCrypto's first message differs from the spec derivation")
    if asyncio.run(bob.decrypt(i["alice_user_id"], i["alice_device_id"], envelope)) != plaintext:
        raise AssertionError("Bob cannot decrypt the vector")
    return {
        "signed_prekey_id": 1,
        "one_time_prekey_id": 1,
        "ratchet_public": ratchet_pub.hex(),
        "root_key": root_key.hex(),
        "sending_chain_key": chain_key.hex(),
        "next_sending_chain_key": primitives.hmac_sha256(chain_key, b"\x02").hex(),
        "message_key": message_key.hex(),
        "aes_key": aes_key.hex(),
        "nonce": nonce.hex(),
        "aead_associated_data": (ad + header).hex(),
        "envelope": envelope.hex(),
    }


def compute_sender_key(i: Hex) -> Hex:
    """A sender key distribution message and the first two group messages."""
    context = _lp(i["chat_id"]) + _lp(i["sender_user_id"]) + _lp(i["sender_device_id"])
    if context != wire.GroupMessage.context(i["chat_id"], i["sender_user_id"], i["sender_device_id"]):
        raise AssertionError("group message context differs from the spec")
    with _scripted(
        [bytes.fromhex(i["distribution_id_random"]), bytes.fromhex(i["chain_key"]), bytes.fromhex(i["signing_seed"])]
    ):
        own = senderkeys.OwnSenderKey.generate()
    out: Hex = {
        "distribution_id": own.distribution_id,
        "signing_key": primitives.ed25519_public(own.signing_seed).hex(),
        "distribution_message": own.distribution().encode().hex(),
        "context": context.hex(),
        "messages": [],
    }
    chain_key = own.chain_key
    for n, text in enumerate(i["plaintexts"]):
        seed, next_chain = senderkeys.chain_step(chain_key)
        key, nonce = senderkeys.group_key_material(seed)
        header = wire.GroupMessage.header(own.distribution_id, n)
        message = own.encrypt(bytes.fromhex(text), context)
        ciphertext = primitives.aes_gcm_encrypt(key, nonce, bytes.fromhex(text), context + header)
        if message[:-64] != header + ciphertext:
            raise AssertionError("group message differs from the spec derivation")
        if not primitives.ed25519_verify(
            primitives.ed25519_public(own.signing_seed), message[-64:], context + header + ciphertext
        ):
            raise AssertionError("group message signature does not cover context || header || ciphertext")
        out["messages"].append(
            {
                "iteration": n,
                "chain_key": chain_key.hex(),
                "message_key_seed": seed.hex(),
                "aes_key": key.hex(),
                "nonce": nonce.hex(),
                "associated_data": (context + header).hex(),
                "group_message": message.hex(),
            }
        )
        chain_key = next_chain
    return out


def compute_attachment(i: Hex) -> Hex:
    """An encrypted attachment blob and its AttachmentKey."""
    blob, key = _encrypt_with(bytes.fromhex(i["plaintext"]), bytes.fromhex(i["key"]), bytes.fromhex(i["nonce"]))
    return {"blob": blob.hex(), "digest": key.digest.hex(), "size": key.size}


def compute_safety_number(i: Hex) -> Hex:
    """Fingerprints of two users (one with two devices) and their safety number."""
    a_keys = [bytes.fromhex(k) for k in i["alice_identity_keys"]]
    b_keys = [bytes.fromhex(k) for k in i["bob_identity_keys"]]
    return {
        "alice_fingerprint": safety.fingerprint(i["alice_user_id"], a_keys),
        "bob_fingerprint": safety.fingerprint(i["bob_user_id"], b_keys),
        "safety_number": safety.safety_number(i["alice_user_id"], a_keys, i["bob_user_id"], b_keys),
    }


_ALICE = ("6f1c1a2e-5d0b-4a59-9a8e-2f3b7c1d9e01", "0b9f2c4d-8e71-4c3a-b5d6-7e8f9a0b1c02")
_BOB = ("a3d5e7f9-1b2c-4d3e-8f40-5a6b7c8d9e03", "c4e6a8b0-2d3f-4e5a-9b61-7c8d9e0f1a04")
_X3DH_INPUTS = {
    "alice_user_id": _ALICE[0],
    "alice_device_id": _ALICE[1],
    "bob_user_id": _BOB[0],
    "bob_device_id": _BOB[1],
    "alice_identity_seed": _fixed("alice identity"),
    "alice_ephemeral_private": _fixed("alice ephemeral"),
    "bob_identity_seed": _fixed("bob identity"),
    "bob_signed_prekey_private": _fixed("bob signed prekey"),
    "bob_one_time_prekey_private": _fixed("bob one-time prekey"),
}

VECTORS: dict[str, tuple[str, Callable[[Hex], Hex], Hex]] = {
    "signed_prekey": (
        "Ed25519 identity key from a seed, the X25519 form of its private key, and the RFC 8032 signature over "
        "0x05 || signed prekey public key.",
        compute_signed_prekey,
        {"identity_seed": _fixed("identity"), "signed_prekey_private": _fixed("signed prekey")},
    ),
    "x3dh": (
        "X3DH shared secret and associated data (Alice initiates to Bob); the associated data ends with both "
        "addresses, Alice's first.",
        compute_x3dh,
        _X3DH_INPUTS,
    ),
    "first_message": (
        "Alice's first envelope to Bob (prekey message, signed prekey id 1, one-time prekey id 1) with every "
        "intermediate key of the first ratchet step.",
        compute_first_message,
        {
            **_X3DH_INPUTS,
            "alice_ratchet_private": _fixed("alice ratchet"),
            "plaintext": b"Hello, Bob!".hex(),
        },
    ),
    "sender_key": (
        "A sender key distribution message and two group messages (iterations 0 and 1) sent by one device in "
        "one chat. The distribution id is the UUID (version bits set to 4, variant RFC 4122) made from "
        "distribution_id_random.",
        compute_sender_key,
        {
            "chat_id": "5e1f0a2b-3c4d-4e5f-8a6b-7c8d9e0f1a05",
            "sender_user_id": _ALICE[0],
            "sender_device_id": _ALICE[1],
            "distribution_id_random": _fixed("distribution id", 16),
            "chain_key": _fixed("sender chain key"),
            "signing_seed": _fixed("sender signing key"),
            "plaintexts": [b"hello group".hex(), b"second message".hex()],
        },
    ),
    "attachment": (
        "An attachment encrypted with a fixed key and nonce.",
        compute_attachment,
        {"key": _fixed("attachment key"), "nonce": _fixed("attachment nonce", 12), "plaintext": b"\x89PNG...".hex()},
    ),
    "safety_number": (
        "Safety number of Alice (two devices) and Bob (one device).",
        compute_safety_number,
        {
            "alice_user_id": _ALICE[0],
            "alice_identity_keys": [
                primitives.ed25519_public(bytes.fromhex(_fixed("alice identity"))).hex(),
                primitives.ed25519_public(bytes.fromhex(_fixed("alice second device"))).hex(),
            ],
            "bob_user_id": _BOB[0],
            "bob_identity_keys": [primitives.ed25519_public(bytes.fromhex(_fixed("bob identity"))).hex()],
        },
    ),
}


def generate(directory: Path) -> None:
    """Write every vector as <name>.json."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, (description, compute, inputs) in VECTORS.items():
        # The attachment blob kept format version 1; everything else is read as of the current VERSION.
        version = wire.ATTACHMENT_VERSION if name == "attachment" else wire.VERSION
        document = {"description": description, "version": version, "inputs": inputs, "outputs": compute(inputs)}
        (directory / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    generate(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/e2e-vectors"))
