"""Safety numbers: Signal's numeric fingerprint (version 0), extended to a user's several device keys.

Per side, as libsignal's NumericFingerprintGenerator: h = 0x0000 || keys || user_id (UTF-8), then 5200
times h = SHA-512(h || keys), where
`keys` is the concatenation of the user's 32-byte Ed25519 identity keys, de-duplicated and sorted
bytewise. The first 30 bytes of h form six 5-byte big-endian numbers; each, modulo 100000, is printed as
5 digits: a 30-digit fingerprint. The 60-digit safety number is the two fingerprints, smaller first, so
both sides show the same string.
"""

from __future__ import annotations

import hashlib

FINGERPRINT_VERSION = b"\x00\x00"
ITERATIONS = 5200


def fingerprint(user_id: str, identity_keys: list[bytes]) -> str:
    """The 30-digit fingerprint of one user's identity keys."""
    if not identity_keys:
        raise ValueError("at least one identity key is needed")
    keys = b"".join(sorted(set(identity_keys)))
    digest = FINGERPRINT_VERSION + keys + user_id.encode()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + keys).digest()
    return "".join(f"{int.from_bytes(digest[i : i + 5], 'big') % 100000:05d}" for i in range(0, 30, 5))


def safety_number(
    my_user_id: str, my_identity_keys: list[bytes], their_user_id: str, their_identity_keys: list[bytes]
) -> str:
    """The 60-digit safety number two users compare; identical on both sides."""
    a = fingerprint(my_user_id, my_identity_keys)
    b = fingerprint(their_user_id, their_identity_keys)
    return min(a, b) + max(a, b)
