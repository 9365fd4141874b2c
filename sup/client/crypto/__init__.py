"""Client-side end-to-end encryption: X3DH + Double Ratchet sessions, Sender Keys, attachments, safety numbers.

Pure: no network and no server imports. docs/e2e.md describes the protocol and its wire format.
"""

from sup.client.crypto.attachments import AttachmentKey, decrypt_attachment, encrypt_attachment
from sup.client.crypto.bundle import Bundle, OneTimePrekey, SignedPrekey
from sup.client.crypto.device import DeviceCrypto
from sup.client.crypto.errors import (
    BadBundle,
    CryptoError,
    DecryptError,
    DuplicateMessage,
    NoSession,
    UntrustedIdentity,
)
from sup.client.crypto.safety import fingerprint, safety_number
from sup.client.crypto.sessions import MAX_SKIP, MAX_SKIPPED_KEYS

__all__ = [
    "MAX_SKIP",
    "MAX_SKIPPED_KEYS",
    "AttachmentKey",
    "BadBundle",
    "Bundle",
    "CryptoError",
    "DecryptError",
    "DeviceCrypto",
    "DuplicateMessage",
    "NoSession",
    "OneTimePrekey",
    "SignedPrekey",
    "UntrustedIdentity",
    "decrypt_attachment",
    "encrypt_attachment",
    "fingerprint",
    "safety_number",
]
