"""Accounts: sign-up, sign-in, two-factor, profile, devices, contacts, email, push subscriptions, deletion."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from sup.domain.accounts import (
    BIO_MAX,
    DEVICE_NAME_MAX,
    DISPLAY_NAME_MAX,
    PASSWORD_MAX,
    PASSWORD_MIN,
    USERNAME_REGEX,
    Device,
    User,
)
from sup.domain.emails import EMAIL_MAX, EMAIL_REGEX
from sup.domain.users import BlockedUser, Contact
from sup.http.schemas.common import TEXT, Body
from sup.transport.inputs import Id, whole

Username = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=32,
        # Upper case is accepted and folded: the domain keeps the name in lower case.
        pattern=whole(USERNAME_REGEX.replace("a-z", "A-Za-z")),
        description="ASCII letters, digits, '_' and '.'; stored and shown in lower case, so unique regardless of case.",
    ),
]
NewPassword = Annotated[str, Meta(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX)]
AnyPassword = Annotated[str, Meta(min_length=1, max_length=PASSWORD_MAX)]


DeviceName = Annotated[str, Meta(max_length=DEVICE_NAME_MAX, pattern=TEXT, description="Shown in the device list.")]
DisplayName = Annotated[str, Meta(max_length=DISPLAY_NAME_MAX, pattern=TEXT)]
TotpCode = Annotated[str, Meta(pattern=whole("[0-9]{6}"), description="6-digit code from the authenticator app.")]
RecoveryCode = Annotated[str, Meta(min_length=1, max_length=64, description="One of the one-time recovery codes.")]


class RegisterRequest(Body):
    username: Username
    password: NewPassword
    display_name: DisplayName = ""
    invite_code: Annotated[str, Meta(max_length=128)] | None = None
    device_name: DeviceName = ""


class LoginRequest(Body):
    username: Annotated[str, Meta(min_length=1, max_length=64, description="Found in any case or width.")]
    password: AnyPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None
    device_name: DeviceName = ""
    refresh_token: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=256,
                description="A refresh token this client holds for one of the account's devices, even an expired "
                "one: the login is then not held back by limits that guessing from elsewhere set off.",
            ),
        ]
        | None
    ) = None


class RefreshRequest(Body):
    refresh_token: Annotated[str, Meta(min_length=1, max_length=256)]


class SessionResponse(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: Annotated[int, Meta(description="Seconds until the access token expires.")]
    device_id: str
    user: User


class PasswordChangeRequest(Body):
    current_password: AnyPassword
    new_password: NewPassword


class TotpEnableRequest(Body):
    password: AnyPassword


class TotpEnableResponse(msgspec.Struct, kw_only=True):
    secret: Annotated[str, Meta(description="Base32 secret, for typing into an authenticator app.")]
    provisioning_uri: Annotated[str, Meta(description="otpauth:// URI, for a QR code.")]


class TotpVerifyRequest(Body):
    code: TotpCode


class RecoveryCodesResponse(msgspec.Struct, kw_only=True):
    recovery_codes: Annotated[list[str], Meta(description="Shown once; each works once in place of a code.")]


class TotpDisableRequest(Body):
    password: AnyPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None


class TwoFactorStatus(msgspec.Struct, kw_only=True):
    enabled: bool
    recovery_codes_remaining: int


class ProfileUpdate(Body):
    display_name: DisplayName | UnsetType = UNSET
    bio: Annotated[str, Meta(max_length=BIO_MAX, pattern=TEXT)] | UnsetType = UNSET
    avatar_media_id: Id | UnsetType | None = UNSET


class UserRef(Body):
    user_id: Id


class DeviceRename(Body):
    name: Annotated[str, Meta(min_length=1, max_length=DEVICE_NAME_MAX, pattern=TEXT)]


class DeviceList(msgspec.Struct, kw_only=True):
    devices: list[Device]


class ContactPage(msgspec.Struct, kw_only=True):
    items: list[Contact]
    next_cursor: str | None


class BlockedPage(msgspec.Struct, kw_only=True):
    items: list[BlockedUser]
    next_cursor: str | None


# -- my account: deleting it, exporting its data ---------------------------------------------------


class AccountDelete(Body):
    password: AnyPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None


EmailAddress = Annotated[
    str, Meta(min_length=3, max_length=EMAIL_MAX, pattern=whole(EMAIL_REGEX), description="An email address.")
]
EmailToken = Annotated[str, Meta(min_length=1, max_length=128, description="The code from the mail (or its link).")]


class EmailStatusResponse(msgspec.Struct, kw_only=True):
    address: Annotated[str | None, Meta(description="The verified address: password resets go there.")]
    verified_at: int | None
    pending: Annotated[str | None, Meta(description="An address waiting for its code to be entered.")]
    available: Annotated[bool, Meta(description="Whether this server sends email at all.")]


class EmailSet(Body):
    email: EmailAddress
    password: AnyPassword


class EmailRemove(Body):
    password: AnyPassword


class EmailVerify(Body):
    token: EmailToken


class PasswordResetRequest(Body):
    login: Annotated[
        str,
        Meta(min_length=1, max_length=EMAIL_MAX, pattern=TEXT, description="The account's email address or username."),
    ]


class PasswordResetConfirm(Body):
    token: EmailToken
    new_password: NewPassword


class PushSubscriptionRequest(Body):
    endpoint: Annotated[
        str,
        Meta(
            min_length=1,
            max_length=2048,
            description="The push service's URL for this device (PushSubscription.endpoint, or UnifiedPush's).",
        ),
    ]
    p256dh: Annotated[
        str, Meta(min_length=1, max_length=128, description="The device's P-256 public key, base64url (RFC 8291).")
    ]
    auth: Annotated[str, Meta(min_length=1, max_length=64, description="The device's 16-byte auth secret, base64url.")]


class VapidKeyResponse(msgspec.Struct, kw_only=True):
    public_key: Annotated[
        str,
        Meta(description="The server's VAPID public key (RFC 8292): PushManager.subscribe's applicationServerKey."),
    ]
