"""The two tables from a domain error to what a client sees: an HTTP status, a WebSocket close code.

Both transports use them: a REST answer and a WebSocket `error` frame carry the same status
for the same code, and a connection closed for a reason always closes with the same number.
"""

from __future__ import annotations

from enum import IntEnum

from sup.errors import Code

STATUS: dict[Code, int] = {
    Code.INVALID_REQUEST: 400,
    Code.MALFORMED_JSON: 400,
    Code.VALIDATION_FAILED: 422,
    Code.BODY_TOO_LARGE: 413,
    Code.UNSUPPORTED_MEDIA_TYPE: 415,
    Code.UNAUTHENTICATED: 401,
    Code.INVALID_TOKEN: 401,
    Code.TOKEN_EXPIRED: 401,
    Code.INVALID_CREDENTIALS: 401,
    Code.INVALID_REFRESH_TOKEN: 401,
    Code.REFRESH_TOKEN_REUSED: 401,
    Code.TOTP_REQUIRED: 401,
    Code.INVALID_TOTP: 401,
    Code.ACCOUNT_DEACTIVATED: 403,
    Code.FORBIDDEN: 403,
    Code.REGISTRATION_CLOSED: 403,
    Code.INVALID_INVITE: 403,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.USERNAME_TAKEN: 409,
    Code.TOTP_ALREADY_ENABLED: 409,
    Code.TOTP_NOT_ENABLED: 409,
    Code.TOTP_NOT_PENDING: 409,
    Code.CONFLICT: 409,
    Code.BLOCKED: 403,
    Code.CLIENT_ID_REUSED: 409,
    Code.DEVICE_MISMATCH: 409,
    Code.STALE_DEVICES: 410,
    Code.MEMBER_WITHOUT_DEVICE: 409,
    Code.NOT_ENCRYPTED: 422,
    Code.ENCRYPTION_REQUIRED: 422,
    Code.INVALID_SIGNATURE: 400,
    Code.KEYS_MISSING: 409,
    Code.SENDER_KEY_REQUIRED: 409,
    Code.SENDER_KEY_MISSING: 409,
    Code.FILE_TOO_LARGE: 413,
    Code.QUOTA_EXCEEDED: 413,
    Code.MEDIA_NOT_READY: 409,
    Code.MEDIA_FAILED: 409,
    Code.UPLOAD_INCOMPLETE: 409,
    Code.RANGE_NOT_SATISFIABLE: 416,
    Code.LENGTH_REQUIRED: 411,
    Code.RATE_LIMITED: 429,
    Code.UNAVAILABLE: 503,
    Code.NOT_CONFIGURED: 404,
    Code.INVALID_EMAIL_TOKEN: 400,
    Code.EMAIL_TAKEN: 409,
    Code.CALL_ENDED: 409,
    Code.NOT_RINGING: 409,
    Code.INTERNAL: 500,
}
if set(STATUS) != set(Code):  # a new code without a status would be a 500 at the worst moment
    raise RuntimeError(f"codes without an HTTP status: {set(Code) - set(STATUS)}")


class Close(IntEnum):
    """WebSocket close codes (RFC 6455 section 7.4; 4000-4999 are SUP's own). docs/protocol.md lists them."""

    GOING_AWAY = 1001  # the server is shutting down: reconnect (to another process) and resume
    PROTOCOL_ERROR = 1002  # a frame RFC 6455 forbids, e.g. an unmasked client frame
    TOO_BIG = 1009  # a frame over the size limit
    UNAUTHORIZED = 4001  # authenticate first, or the token is not valid
    REVOKED = 4003  # this device was logged out
    RESUME = 4008  # you fell behind: reconnect and resume from your last cursor
    RATE_LIMITED = 4029  # too many frames: reconnect later and send less
    BAD_REQUEST = 4400  # a frame that is not part of the protocol
