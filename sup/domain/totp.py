"""TOTP second factor (RFC 6238) and one-time recovery codes.

The shared secret is stored encrypted (AES-256-GCM, key derived from the server secret),
so a copy of the database alone does not let anyone mint codes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

STEP_SECONDS = 30
# Accept the previous and next step too: phones' clocks drift.
WINDOW = 1
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no look-alikes (0/o, 1/l/i)


class TotpBox:
    """Encrypts TOTP secrets at rest and hashes recovery codes with server keys."""

    def __init__(self, encryption_key: bytes, recovery_key: bytes) -> None:
        self._aead = AESGCM(encryption_key)
        self._recovery_key = recovery_key

    def seal(self, user_id: str, secret: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), user_id.encode())

    def open(self, user_id: str, sealed: bytes) -> str | None:
        try:
            return self._aead.decrypt(bytes(sealed[:12]), bytes(sealed[12:]), user_id.encode()).decode()
        except (InvalidTag, ValueError):
            return None

    def hash_recovery_code(self, code: str) -> bytes:
        normalized = code.strip().lower().replace("-", "").replace(" ", "")
        return hmac.new(self._recovery_key, normalized.encode(), hashlib.sha256).digest()


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code equals `code` within the drift window, or None."""
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now) // STEP_SECONDS
    for step in range(current - WINDOW, current + WINDOW + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def new_recovery_codes() -> list[str]:
    def one() -> str:
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(12))
        return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"

    return [one() for _ in range(RECOVERY_CODE_COUNT)]
