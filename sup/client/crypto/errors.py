"""Exceptions raised by the E2E crypto core."""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every error raised by `sup.client.crypto`."""


class DecryptError(CryptoError):
    """A message could not be decrypted (tampered, truncated, unknown keys); the session is unchanged."""


class DuplicateMessage(DecryptError):
    """The message's key was already consumed: it was decrypted before, so it never decrypts twice."""


class NoSession(CryptoError):
    """There is no pairwise session (or no sender key distribution) for this peer."""


class UntrustedIdentity(CryptoError):
    """A peer's identity key differs from the one recorded on first contact."""

    def __init__(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        super().__init__(f"identity key of {user_id}/{device_id} changed")
        self.user_id = user_id
        self.device_id = device_id
        self.identity_key = identity_key


class BadBundle(CryptoError):
    """A prekey bundle is malformed or its signed prekey signature does not verify."""
