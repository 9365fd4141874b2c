"""The browser's crypto modules recompute every docs/e2e-vectors file byte for byte, in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.web.conftest import Harness

VECTOR_DIR = Path(__file__).resolve().parents[2] / "docs" / "e2e-vectors"
VECTOR_NAMES = sorted(p.stem for p in VECTOR_DIR.glob("*.json"))


def test_there_are_vectors() -> None:
    assert {"signed_prekey", "x3dh", "first_message", "sender_key", "attachment", "safety_number"} <= set(VECTOR_NAMES)


@pytest.mark.parametrize("name", VECTOR_NAMES)
async def test_javascript_recomputes_vector(harness: Harness, name: str) -> None:
    document = json.loads((VECTOR_DIR / f"{name}.json").read_text())
    # Every output of the file, with the self-checks of tests/web/pages/vectors.js (the formulas of
    # docs/e2e.md from the primitives alone, and the receiving side decrypting) passing on the way.
    assert await harness.helper("vector", name, document["inputs"]) == document["outputs"]


async def test_vector_version_bytes(harness: Harness) -> None:
    first = json.loads((VECTOR_DIR / "first_message.json").read_text())
    envelope = bytes.fromhex(first["outputs"]["envelope"])
    parsed = await harness.module("wire.decodeEnvelope", envelope)
    assert parsed["prekey"]["signedPrekeyId"] == 1 and parsed["prekey"]["oneTimePrekeyId"] == 1
    assert parsed["message"]["ratchetKey"] == bytes.fromhex(first["outputs"]["ratchet_public"])
    # A parser rejects any other version.
    for version in (0, 1, 3):
        await harness.raises("DecryptError", "module", "wire.decodeEnvelope", bytes([version]) + envelope[1:])
