"""Access and refresh tokens.

Access token: `sup1.<payload>.<mac>`, HMAC-SHA256 over device id, user id and expiry.
The MAC lets us refuse forged or expired tokens without touching the database; the
device row is still checked on every request, so logout and revocation act at once.

Refresh token: 32 random bytes, opaque; only its SHA-256 is stored. The token that
replaces one at rotation is derived from it with a server key instead, so that a client
whose answer was lost (a page reloaded mid-refresh) is given the same successor again
rather than being taken for a thief (see AccountService.refresh).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import uuid
from dataclasses import dataclass

from sup.errors import Code, DomainError

_PREFIX = "sup1"
_PAYLOAD = struct.Struct(">16s16sQ")  # device id, user id, expiry (ms)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class AccessClaims:
    device_id: str
    user_id: str
    expires_at_ms: int


class AccessTokens:
    def __init__(self, key: bytes, rotation_key: bytes) -> None:
        self._key = key
        self._rotation_key = rotation_key

    def successor(self, refresh_token: str) -> str:
        """The refresh token that replaces `refresh_token`: unguessable without the server key."""
        return "supr_" + _b64(hmac.new(self._rotation_key, refresh_token.encode(), hashlib.sha256).digest())

    def issue(self, *, device_id: str, user_id: str, expires_at_ms: int) -> str:
        payload = _b64(_PAYLOAD.pack(uuid.UUID(device_id).bytes, uuid.UUID(user_id).bytes, expires_at_ms))
        return f"{_PREFIX}.{payload}.{self._mac(payload)}"

    def verify(self, token: str, now_ms: int, *, expired_too: bool = False) -> AccessClaims:
        """The claims of a well-formed, authentic, unexpired token (or expired too); DomainError otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX or len(token) > 200:
            raise DomainError(Code.INVALID_TOKEN, "The access token is malformed.")
        _, payload, mac = parts
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise DomainError(Code.INVALID_TOKEN, "The access token is not valid.")
        device, user, expires = _PAYLOAD.unpack(_unb64(payload))
        if expires <= now_ms and not expired_too:
            raise DomainError(Code.TOKEN_EXPIRED, "The access token has expired; refresh it.")
        return AccessClaims(str(uuid.UUID(bytes=device)), str(uuid.UUID(bytes=user)), expires)

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{_PREFIX}.{payload}".encode(), hashlib.sha256).digest())


def new_refresh_token() -> str:
    return "supr_" + secrets.token_urlsafe(32)


def hash_secret(token: str) -> bytes:
    # Refresh tokens and invite codes are long random strings: a fast hash is enough.
    return hashlib.sha256(token.encode()).digest()
