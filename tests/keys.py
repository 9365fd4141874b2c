"""E2E key material for tests, made with `cryptography` directly (not the client SDK), as a client would.

This pins the server's contract: Ed25519 identity keys signing `0x05 || X25519 public key`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def raw(key: Any) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass
class DeviceKeys:
    """A device's key material, made the way a client would."""

    identity: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    next_id: int = 1

    @property
    def identity_key(self) -> bytes:
        return raw(self.identity)

    def signed_prekey(self, key_id: int = 1) -> dict[str, Any]:
        public = raw(X25519PrivateKey.generate())
        return {"key_id": key_id, "public_key": b64(public), "signature": b64(self.identity.sign(b"\x05" + public))}

    def one_time(self, count: int) -> list[dict[str, Any]]:
        keys = [{"key_id": self.next_id + i, "public_key": b64(raw(X25519PrivateKey.generate()))} for i in range(count)]
        self.next_id += count
        return keys

    def publish_body(self, one_time: int = 5, key_id: int = 1) -> dict[str, Any]:
        return {
            "identity_key": b64(self.identity_key),
            "signed_prekey": self.signed_prekey(key_id),
            "one_time_prekeys": self.one_time(one_time),
        }
