"""Email endpoints under /api/v1/auth: the account's address, its verification, password reset."""

from __future__ import annotations

from sup.domain.emails import EmailStatus
from sup.http import schemas as s
from sup.http.api import Call


def _status(status: EmailStatus) -> s.EmailStatusResponse:
    return s.EmailStatusResponse(
        address=status.address, verified_at=status.verified_at, pending=status.pending, available=status.available
    )


async def get_email(call: Call) -> s.EmailStatusResponse:
    """GET /api/v1/auth/email: my verified address, one waiting for its code, and whether email works here."""
    return _status(await call.services.emails.status(call.who))


async def set_email(call: Call, body: s.EmailSet) -> s.EmailStatusResponse:
    """PUT /api/v1/auth/email: mail a code to a new address (needs my password); verify it to make it mine.

    The address becomes the account's only once the code comes back (POST /auth/verify); until then
    the old one, if any, stays. Rate-limited per address and per client address.
    """
    return _status(await call.services.emails.set_address(call.who, body.email, body.password, call.ip))


async def remove_email(call: Call, body: s.EmailRemove) -> None:
    """POST /api/v1/auth/email/remove: take my verified address off (needs my password)."""
    await call.services.emails.remove_address(call.who, body.password)


async def verify_email(call: Call, body: s.EmailVerify) -> s.EmailStatusResponse:
    """POST /api/v1/auth/verify: confirm my new address with the code mailed to it."""
    return _status(await call.services.emails.verify(call.who, body.token, call.ip))


async def request_password_reset(call: Call, body: s.PasswordResetRequest) -> None:
    """POST /api/v1/auth/password-reset: mail a reset code to the account's verified address, if there is one.

    The answer is the same (204), as fast, whether the account or the address exists or not.
    Rate-limited per address or username asked for and per client address.
    """
    await call.services.emails.request_reset(body.login, call.ip)


async def confirm_password_reset(call: Call, body: s.PasswordResetConfirm) -> None:
    """POST /api/v1/auth/password-reset/confirm: set a new password with a mailed code; all devices are logged out."""
    await call.services.emails.confirm_reset(body.token, body.new_password, call.ip)
