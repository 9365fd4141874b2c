"""Recompute every E2E test vector in docs/e2e-vectors/ and compare byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sup.client.crypto import _vectors

VECTOR_DIR = Path(__file__).resolve().parent.parent / "docs" / "e2e-vectors"


def _load(name: str) -> dict:
    return json.loads((VECTOR_DIR / f"{name}.json").read_text())


def test_every_vector_file_is_known_and_documented() -> None:
    on_disk = {p.stem for p in VECTOR_DIR.glob("*.json")}
    assert on_disk == set(_vectors.VECTORS)
    readme = (VECTOR_DIR / "README.md").read_text()
    for name in on_disk:
        assert f"{name}.json" in readme


@pytest.mark.parametrize("name", sorted(_vectors.VECTORS))
def test_vector_matches_code(name: str) -> None:
    document = _load(name)
    description, compute, inputs = _vectors.VECTORS[name]
    assert document["inputs"] == inputs, "inputs changed: regenerate with python -m sup.client.crypto._vectors"
    assert document["description"] == description
    assert compute(document["inputs"]) == document["outputs"]


def test_signed_prekey_vector_verifies_with_standard_ed25519() -> None:
    out = _load("signed_prekey")["outputs"]
    signed = bytes.fromhex(out["signed_message"])
    assert signed == b"\x05" + bytes.fromhex(out["signed_prekey_public"])
    Ed25519PublicKey.from_public_bytes(bytes.fromhex(out["identity_key"])).verify(
        bytes.fromhex(out["signature"]), signed
    )


def test_group_message_vector_signature_verifies() -> None:
    out = _load("sender_key")["outputs"]
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(out["signing_key"]))
    for message in out["messages"]:
        raw = bytes.fromhex(message["group_message"])
        # The signature covers the (unsent) context first: chat id and sender address.
        key.verify(raw[-64:], bytes.fromhex(out["context"]) + raw[:-64])


def test_first_message_vector_authenticates_both_addresses() -> None:
    document = _load("first_message")
    i, out = document["inputs"], document["outputs"]

    def lp(text: str) -> bytes:
        return len(text.encode()).to_bytes(2, "big") + text.encode()

    appendix = lp(i["alice_user_id"]) + lp(i["alice_device_id"]) + lp(i["bob_user_id"]) + lp(i["bob_device_id"])
    ad = bytes.fromhex(out["aead_associated_data"])
    assert ad[66:-41] == appendix
    assert ad[-41] == document["version"] == 2
    assert bytes.fromhex(out["envelope"])[0] == 2
