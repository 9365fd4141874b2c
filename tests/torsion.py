"""An Ed25519 identity key with a small-order component, and a signed prekey it "signs".

A key A' = A + T (A a valid public key, T a point of order 8) is not one of the small-order encodings the
key checks block, and plain Ed25519 (RFC 8032, as OpenSSL verifies it) accepts a signature (R, S) by A'
whenever k = H(R || A' || M) is a multiple of 8: then [k]T is the identity and [S]B = R + [k]A'. XEdDSA
refuses such a key when it converts it to X25519. Pure Python, for tests only (slow, not constant time).
"""

from __future__ import annotations

import hashlib
import os

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point
D = -121665 * pow(121666, -1, P) % P
_BASE_Y = 4 * pow(5, -1, P) % P

Point = tuple[int, int]


def decode(encoding: bytes) -> Point:
    """RFC 8032 point decoding, but with y reduced mod p (so non-canonical encodings decode too)."""
    value = int.from_bytes(encoding, "little")
    y, sign = (value & (2**255 - 1)) % P, value >> 255
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * pow(2, (P - 1) // 4, P) % P
    if (x * x - x2) % P:
        raise ValueError("not a point")
    return (P - x if x and (x & 1) != sign else x), y


def encode(point: Point) -> bytes:
    x, y = point
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return (x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P


def multiply(k: int, point: Point) -> Point:
    out: Point = (0, 1)
    while k:
        if k & 1:
            out = add(out, point)
        point = add(point, point)
        k >>= 1
    return out


BASE = decode(_BASE_Y.to_bytes(32, "little"))
# A point of order 8 (one of the encodings sup.e2ekeys blocks on its own).
ORDER_8 = decode(bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"))


def _h(*parts: bytes) -> int:
    return int.from_bytes(hashlib.sha512(b"".join(parts)).digest(), "little")


def mixed_order_signer(message: bytes) -> tuple[bytes, bytes]:
    """(identity key A + T, a signature of `message` that plain Ed25519 accepts under it).

    Up to a second of pure Python: call it in a thread from a test's event loop."""
    secret = int.from_bytes(os.urandom(32), "little") % L
    identity = encode(add(multiply(secret, BASE), ORDER_8))
    while True:  # one try in eight succeeds
        nonce = int.from_bytes(os.urandom(32), "little") % L
        r = encode(multiply(nonce, BASE))
        k = _h(r, identity, message) % L
        if k % 8 == 0:
            s = (nonce + k * secret) % L
            return identity, r + s.to_bytes(32, "little")
