"""Weak public keys: small-order or non-canonical Ed25519 keys and small-order X25519 keys.

Standalone on purpose (no imports from `sup`): the server mirrors this check on upload without importing the
client. Plain RFC 8032 verification (OpenSSL's) accepts a signature by a small-order key over any message,
for example key `01 00..00` with R = `01 00..00` and S = 0; X25519 with a small-order key gives an all-zero
shared secret that contributes nothing.
"""

from __future__ import annotations

from typing import Literal

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

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
    """True when `key` is not 32 bytes, has small order, or (Ed25519) is a non-canonical encoding."""
    if len(key) != 32:
        return True
    if kind == "ed25519":
        return _weak_ed25519(key)
    if kind == "x25519":
        return _weak_x25519(key)
    raise ValueError(f"unknown key kind {kind!r}")
