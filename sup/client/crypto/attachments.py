"""Attachment encryption: a fresh AES-256-GCM key per file; the key travels inside the E2E message.

Blob layout (what gets uploaded): ATTACHMENT_VERSION (0x01) || type ATTACHMENT (0x05) || nonce (12) ||
ciphertext || tag (16). The two header bytes are the GCM associated data. The digest is SHA-256 of the
whole blob, so the recipient can reject a swapped blob before decrypting; `size` is the plaintext length.
"""

from __future__ import annotations

from dataclasses import dataclass

from sup.client.crypto import primitives, wire
from sup.client.crypto.errors import DecryptError

_HEADER = bytes((wire.ATTACHMENT_VERSION, wire.MessageType.ATTACHMENT))


@dataclass(frozen=True, slots=True)
class AttachmentKey:
    """What a message carries so its recipients can fetch and check an attachment."""

    key: bytes
    digest: bytes
    size: int


def encrypt_attachment(data: bytes) -> tuple[bytes, AttachmentKey]:
    """Encrypt `data` under a fresh random key; returns the blob to upload and its key."""
    return _encrypt_with(data, primitives.random_bytes(32), primitives.random_bytes(primitives.GCM_NONCE_SIZE))


def _encrypt_with(data: bytes, key: bytes, nonce: bytes) -> tuple[bytes, AttachmentKey]:
    blob = _HEADER + nonce + primitives.aes_gcm_encrypt(key, nonce, data, _HEADER)
    return blob, AttachmentKey(key=key, digest=primitives.sha256(blob), size=len(data))


def decrypt_attachment(blob: bytes, key: AttachmentKey) -> bytes:
    """Check the digest, decrypt and check the size; any mismatch raises DecryptError."""
    if primitives.sha256(blob) != key.digest:
        raise DecryptError("attachment digest mismatch")
    if len(blob) < len(_HEADER) + primitives.GCM_NONCE_SIZE + primitives.GCM_TAG_SIZE or blob[:2] != _HEADER:
        raise DecryptError("not a version 1 attachment")
    nonce = blob[2 : 2 + primitives.GCM_NONCE_SIZE]
    data = primitives.aes_gcm_decrypt(key.key, nonce, blob[2 + primitives.GCM_NONCE_SIZE :], _HEADER)
    if len(data) != key.size:
        raise DecryptError("attachment size mismatch")
    return data
