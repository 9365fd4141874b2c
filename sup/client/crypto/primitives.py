"""The WebCrypto-compatible primitives everything else is built on, plus the one source of randomness.

Only X25519, Ed25519 (RFC 8032, deterministic), HKDF-SHA256, HMAC-SHA256, AES-256-GCM and SHA-256/512 are
used, so a browser client can reproduce every byte with `crypto.subtle`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterator

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sup.client.crypto.errors import DecryptError

GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
ZERO_SALT = b"\x00" * 32

# Every random byte the core uses comes from here, so the test-vector generator can replay fixed values.
_random: Callable[[int], bytes] = secrets.token_bytes


def random_bytes(n: int) -> bytes:
    """Return `n` cryptographically random bytes."""
    return _random(n)


@contextlib.contextmanager
def _fixed_randomness(source: Callable[[int], bytes]) -> Iterator[None]:
    """Replace the randomness source (test vectors only; never in production code)."""
    global _random
    saved, _random = _random, source
    try:
        yield
    finally:
        _random = saved


def hkdf_sha256(ikm: bytes, info: bytes, length: int, salt: bytes = ZERO_SALT) -> bytes:
    """HKDF-SHA256 (RFC 5869); the default salt is 32 zero bytes."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256."""
    return hmac.new(key, data, hashlib.sha256).digest()


def sha256(data: bytes) -> bytes:
    """SHA-256."""
    return hashlib.sha256(data).digest()


def aes_gcm_encrypt(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM; returns ciphertext || 16-byte tag, exactly what WebCrypto's `encrypt` returns."""
    return AESGCM(key).encrypt(nonce, plaintext, aad)


def aes_gcm_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Inverse of `aes_gcm_encrypt`; raises DecryptError when the tag does not verify."""
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptError("authentication failed") from exc


def ed25519_public(seed: bytes) -> bytes:
    """The raw 32-byte Ed25519 public key of a 32-byte seed (RFC 8032 private key)."""
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()


def ed25519_sign(seed: bytes, message: bytes) -> bytes:
    """A deterministic RFC 8032 Ed25519 signature, as WebCrypto produces."""
    return Ed25519PrivateKey.from_private_bytes(seed).sign(message)


def ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Standard Ed25519 verification (the same check the server does)."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def x25519_public(private_key: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key (clamped per RFC 7748)."""
    return (
        X25519PrivateKey.from_private_bytes(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def x25519_exchange(private_key: bytes, public_key: bytes) -> bytes:
    """X25519(private, public)."""
    return X25519PrivateKey.from_private_bytes(private_key).exchange(X25519PublicKey.from_public_bytes(public_key))
