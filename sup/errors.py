"""Domain errors: a stable machine-readable code and a human detail, no HTTP.

The transport layer maps each code to a status (sup/http/problems.py); the domain
only says what went wrong.
"""

from enum import StrEnum


class Code(StrEnum):
    # input
    INVALID_REQUEST = "invalid_request"
    MALFORMED_JSON = "malformed_json"
    VALIDATION_FAILED = "validation_failed"
    BODY_TOO_LARGE = "body_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    # authentication
    UNAUTHENTICATED = "unauthenticated"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    INVALID_CREDENTIALS = "invalid_credentials"
    INVALID_REFRESH_TOKEN = "invalid_refresh_token"
    REFRESH_TOKEN_REUSED = "refresh_token_reused"
    TOTP_REQUIRED = "totp_required"
    INVALID_TOTP = "invalid_totp"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    # authorisation and state
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    USERNAME_TAKEN = "username_taken"
    REGISTRATION_CLOSED = "registration_closed"
    INVALID_INVITE = "invalid_invite"
    TOTP_ALREADY_ENABLED = "totp_already_enabled"
    TOTP_NOT_ENABLED = "totp_not_enabled"
    TOTP_NOT_PENDING = "totp_not_pending"
    CONFLICT = "conflict"
    BLOCKED = "blocked"
    CLIENT_ID_REUSED = "client_id_reused"
    DEVICE_MISMATCH = "device_mismatch"
    STALE_DEVICES = "stale_devices"
    MEMBER_WITHOUT_DEVICE = "member_without_device"
    NOT_ENCRYPTED = "not_encrypted"
    ENCRYPTION_REQUIRED = "encryption_required"
    INVALID_SIGNATURE = "invalid_signature"
    KEYS_MISSING = "keys_missing"
    SENDER_KEY_REQUIRED = "sender_key_required"
    SENDER_KEY_MISSING = "sender_key_missing"
    FILE_TOO_LARGE = "file_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    MEDIA_NOT_READY = "media_not_ready"
    MEDIA_FAILED = "media_failed"
    UPLOAD_INCOMPLETE = "upload_incomplete"
    RANGE_NOT_SATISFIABLE = "range_not_satisfiable"
    LENGTH_REQUIRED = "length_required"
    RATE_LIMITED = "rate_limited"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UNAVAILABLE = "unavailable"
    NOT_CONFIGURED = "not_configured"
    INVALID_EMAIL_TOKEN = "invalid_email_token"
    EMAIL_TAKEN = "email_taken"
    CALL_ENDED = "call_ended"
    NOT_RINGING = "not_ringing"
    INTERNAL = "internal_error"


class DomainError(Exception):
    """A rule was broken; `code` says which, `detail` says it to a person."""

    def __init__(self, code: Code, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.extra = extra


class RateLimited(DomainError):
    def __init__(self, retry_after: float, detail: str = "Too many attempts; try again later.") -> None:
        super().__init__(Code.RATE_LIMITED, detail)
        self.retry_after = retry_after
