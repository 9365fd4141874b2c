"""The shapes of end-to-end keys, shared by the client SDK and the server's key directory (docs/e2e.md).

Standalone on purpose: it imports only the standard library and `cryptography`, never anything from `sup`,
so the client (`sup.client.crypto`) and the server (`sup.domain.keydirectory`) check keys the same way
without importing each other.

Weak public keys are small-order or non-canonical Ed25519 keys and small-order X25519 keys. Plain RFC 8032
verification (OpenSSL's) accepts a signature by a small-order key over any message, for example key
`01 00..00` with R = `01 00..00` and S = 0; X25519 with a small-order key gives an all-zero shared secret
that contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

KEY_BYTES = 32  # an Ed25519 or X25519 public key
SIGNATURE_BYTES = 64  # an Ed25519 signature
# What the identity key signs: a type byte, then the X25519 public key (as Signal encodes keys).
SIGNED_PREKEY_PREFIX = b"\x05"
MAX_KEY_ID = 2**32 - 1  # prekey ids are unsigned 32-bit integers on the wire

_P = 2**255 - 19

# The encodings of the eight points of order 1, 2, 4 or 8, with the x sign bit (bit 7 of byte 31) cleared,
# plus the non-canonical encodings y + p of those whose y + p is below 2^255 (p - 1 + p is not). Same list
# as libsodium's ge25519_has_small_order. Checked by decoding each point and computing 8P = identity, and by
# enumerating the 8-torsion subgroup (L * random point) independently: both give exactly these seven.
ED25519_SMALL_ORDER_ENCODINGS: frozenset[bytes] = frozenset(
    bytes.fromhex(h)
    for h in (
        "0000000000000000000000000000000000000000000000000000000000000000",  # y = 0, order 4
        "0100000000000000000000000000000000000000000000000000000000000000",  # y = 1, the identity
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p - 1, order 2
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p (non-canonical 0), order 4
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1 (non-canonical 1)
    )
)


def signed_prekey_message(public_key: bytes) -> bytes:
    """The exact bytes a signed prekey's signature covers."""
    return SIGNED_PREKEY_PREFIX + public_key


def _weak_ed25519(key: bytes) -> bool:
    masked = key[:31] + bytes((key[31] & 0x7F,))
    if masked in ED25519_SMALL_ORDER_ENCODINGS:
        return True
    return int.from_bytes(masked, "little") >= _P  # a non-canonical y


def _weak_x25519(key: bytes) -> bool:
    try:
        # cryptography refuses an all-zero shared secret, which a fresh private key gives exactly when the
        # public key has small order (u mod p is one of the eight small-order points' u).
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(key))
    except ValueError:
        return True
    return False


def is_weak_public_key(kind: Literal["ed25519", "x25519"], key: bytes) -> bool:
    """True when `key` is not KEY_BYTES long, has small order, or (Ed25519) is a non-canonical encoding."""
    if len(key) != KEY_BYTES:
        return True
    if kind == "ed25519":
        return _weak_ed25519(key)
    if kind == "x25519":
        return _weak_x25519(key)
    raise ValueError(f"unknown key kind {kind!r}")


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
