"""The public prekey material a device publishes and a peer fetches from the server's key directory."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SignedPrekey:
    """An X25519 public key with an Ed25519 signature by the identity key over 0x05 || public_key."""

    key_id: int
    public_key: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class OneTimePrekey:
    """An X25519 public key the server hands out at most once."""

    key_id: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    """Everything needed to start a session with one peer device; the one-time prekey may have run out."""

    user_id: str
    device_id: str
    identity_key: bytes
    signed_prekey: SignedPrekey
    one_time_prekey: OneTimePrekey | None
