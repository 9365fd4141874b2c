"""Authentication endpoints under /api/v1/auth."""

from __future__ import annotations

from sup.domain.accounts import IssuedSession
from sup.http import schemas as s
from sup.http.api import Call


def _session(issued: IssuedSession) -> s.SessionResponse:
    return s.SessionResponse(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        device_id=issued.device_id,
        user=issued.user,
    )


async def register(call: Call, body: s.RegisterRequest) -> s.SessionResponse:
    """POST /api/v1/auth/register: create an account and log its first device in."""
    return _session(
        await call.services.accounts.register(
            username=body.username,
            password=body.password,
            display_name=body.display_name,
            invite_code=body.invite_code,
            device_name=body.device_name,
            ip=call.ip,
        )
    )


async def login(call: Call, body: s.LoginRequest) -> s.SessionResponse:
    """POST /api/v1/auth/login: log in; every login is a new device."""
    return _session(
        await call.services.accounts.login(
            username=body.username,
            password=body.password,
            totp_code=body.totp_code,
            recovery_code=body.recovery_code,
            device_name=body.device_name,
            refresh_token=body.refresh_token,
            ip=call.ip,
        )
    )


async def refresh(call: Call, body: s.RefreshRequest) -> s.SessionResponse:
    """POST /api/v1/auth/refresh: trade a refresh token for new tokens (the old one dies)."""
    await call.services.accounts.check_ip_rate(call.ip)
    return _session(await call.services.accounts.refresh(body.refresh_token))


async def logout(call: Call) -> None:
    """POST /api/v1/auth/logout: end this device's session."""
    await call.services.accounts.logout(call.who)


async def change_password(call: Call, body: s.PasswordChangeRequest) -> None:
    """POST /api/v1/auth/password: change the password; other devices are logged out."""
    await call.services.accounts.change_password(call.who, body.current_password, body.new_password)


async def enable_2fa(call: Call, body: s.TotpEnableRequest) -> s.TotpEnableResponse:
    """POST /api/v1/auth/2fa/enable: start 2FA setup; confirm with /2fa/verify."""
    setup = await call.services.accounts.begin_totp(call.who, body.password)
    return s.TotpEnableResponse(secret=setup.secret, provisioning_uri=setup.provisioning_uri)


async def verify_2fa(call: Call, body: s.TotpVerifyRequest) -> s.RecoveryCodesResponse:
    """POST /api/v1/auth/2fa/verify: confirm 2FA with a first code; returns recovery codes."""
    return s.RecoveryCodesResponse(recovery_codes=await call.services.accounts.confirm_totp(call.who, body.code))


async def disable_2fa(call: Call, body: s.TotpDisableRequest) -> None:
    """POST /api/v1/auth/2fa/disable: turn 2FA off (password and a code or recovery code)."""
    await call.services.accounts.disable_totp(call.who, body.password, body.totp_code, body.recovery_code)


async def regenerate_recovery_codes(call: Call, body: s.TotpVerifyRequest) -> s.RecoveryCodesResponse:
    """POST /api/v1/auth/2fa/recovery-codes: replace the recovery codes (needs a current code)."""
    codes = await call.services.accounts.regenerate_recovery_codes(call.who, body.code)
    return s.RecoveryCodesResponse(recovery_codes=codes)


async def get_2fa(call: Call) -> s.TwoFactorStatus:
    """GET /api/v1/auth/2fa: whether 2FA is on and how many recovery codes are left."""
    enabled, remaining = await call.services.accounts.two_factor_status(call.who)
    return s.TwoFactorStatus(enabled=enabled, recovery_codes_remaining=remaining)
