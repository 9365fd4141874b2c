"""Request and response bodies. Each type is also a schema in /api/v1/openapi.json."""

from __future__ import annotations

from typing import Annotated, Literal

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
from sup.domain.chats import Role
from sup.domain.emails import EMAIL_MAX, EMAIL_REGEX
from sup.domain.keydirectory import (
    Bundle,
    DeviceKeys,
    OneTimePrekey,
    SenderKeyDistribution,
    SignedPrekey,
)
from sup.domain.messages import Pin
from sup.domain.stickers import TITLE_MAX as STICKER_TITLE_MAX
from sup.domain.stories import CAPTION_MAX, LIST_NAME_MAX, AudienceList
from sup.domain.timeline import Reaction
from sup.domain.users import BlockedUser, Contact
from sup.e2ekeys import MAX_KEY_ID
from sup.integers import INT64_MAX
from sup.transport.inputs import Count, Id, Input, whole
from sup.transport.sends import MessageSendFields, Recipient

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
# Names and descriptions people read: no control characters but newline and tab (check_text).
_TEXT = whole(r"[^\x00-\x08\x0b-\x1f]*")
DeviceName = Annotated[str, Meta(max_length=DEVICE_NAME_MAX, pattern=_TEXT, description="Shown in the device list.")]
DisplayName = Annotated[str, Meta(max_length=DISPLAY_NAME_MAX, pattern=_TEXT)]
TotpCode = Annotated[str, Meta(pattern=whole("[0-9]{6}"), description="6-digit code from the authenticator app.")]
RecoveryCode = Annotated[str, Meta(min_length=1, max_length=64, description="One of the one-time recovery codes.")]


class Body(Input):
    """Base of request bodies: unknown fields are refused, not ignored; ids come out canonical."""


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
    bio: Annotated[str, Meta(max_length=BIO_MAX, pattern=_TEXT)] | UnsetType = UNSET
    avatar_media_id: Id | UnsetType | None = UNSET


class UserRef(Body):
    user_id: Id


class DeviceRename(Body):
    name: Annotated[str, Meta(min_length=1, max_length=DEVICE_NAME_MAX, pattern=_TEXT)]


class DeviceList(msgspec.Struct, kw_only=True):
    devices: list[Device]


class PageQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    after: Id | None = None


class ContactPage(msgspec.Struct, kw_only=True):
    items: list[Contact]
    next_cursor: str | None


class BlockedPage(msgspec.Struct, kw_only=True):
    items: list[BlockedUser]
    next_cursor: str | None


class HealthStatus(msgspec.Struct, kw_only=True):
    status: str
    version: str


# -- chats and messages ---------------------------------------------------------------------

PermissionName = Literal[
    "send_messages",
    "send_media",
    "add_members",
    "remove_members",
    "pin",
    "delete_others",
    "edit_info",
    "manage_roles",
    "invite_users",
]
Visibility = Annotated[
    Literal["private", "public"],
    Meta(description="public: found by search and joined by anyone (channels and unencrypted groups only)."),
]
Title = Annotated[str, Meta(max_length=128, pattern=_TEXT, description="Required for groups and channels.")]
Description = Annotated[str, Meta(max_length=2000, pattern=_TEXT)]


class ChatCreate(Body):
    type: Literal["direct", "group", "channel"]
    member_ids: Annotated[list[Id], Meta(max_length=1000)] = []
    title: Title = ""
    description: Description = ""
    encrypted: bool | None = None
    visibility: Visibility = "private"


class ChatUpdate(Body):
    title: Title | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    avatar_media_id: Id | UnsetType | None = UNSET
    visibility: Visibility | UnsetType = UNSET


class ChatListQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: Annotated[str, Meta(max_length=80)] | None = None


class MembersAdd(Body):
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=1000)]


class MembersAdded(msgspec.Struct, kw_only=True):
    added: list[str]


class MemberRole(Body):
    role_id: Id


class RoleCreate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=64)]
    permissions: list[PermissionName] = []


class RoleUpdate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    permissions: list[PermissionName] | None = None


class RoleList(msgspec.Struct, kw_only=True):
    roles: list[Role]


class TypingRequest(Body):
    active: bool = True


class MessageSend(MessageSendFields):
    """A message to send (REST: POST /api/v1/messages); the WebSocket's `message.send` has the same fields."""


class MessageEdit(Body):
    body: Annotated[str, Meta(max_length=16384)] | None = None
    ciphertext: bytes | None = None
    recipients: Annotated[list[Recipient], Meta(max_length=5000)] = []


class HistoryQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: Count | None = None
    after: Count | None = None


class DeleteQuery(Input):
    scope: Literal["everyone", "me"] = "everyone"


class ReactionBody(Body):
    emoji: Annotated[str, Meta(min_length=1, max_length=32)]


class ReactionQuery(Input):
    emoji: Annotated[str, Meta(min_length=1, max_length=32)]


class ReactionList(msgspec.Struct, kw_only=True):
    reactions: list[Reaction]


class Forward(Body):
    chat_id: Id
    client_id: Annotated[str, Meta(min_length=1, max_length=64)]


class ReadMarker(Body):
    seq: Count


class ReadState(msgspec.Struct, kw_only=True):
    chat_id: str
    last_read_seq: int


class PinList(msgspec.Struct, kw_only=True):
    pins: list[Pin]


class PresenceVisibility(Body):
    visibility: Literal["everyone", "contacts", "nobody"]


# -- E2E key directory -------------------------------------------------------------------

KeyId = Annotated[int, Meta(ge=0, le=MAX_KEY_ID, description="Chosen by the device; unique per device.")]
PublicKey = Annotated[bytes, Meta(description="Base64 of a 32-byte public key.")]


class SignedPrekeyBody(Body):
    key_id: KeyId
    public_key: Annotated[bytes, Meta(description="Base64 of the 32-byte X25519 public key.")]
    signature: Annotated[bytes, Meta(description="Base64 of the 64-byte Ed25519 signature over 0x05 || public_key.")]

    def domain(self) -> SignedPrekey:
        return SignedPrekey(self.key_id, self.public_key, self.signature)


class OneTimePrekeyBody(Body):
    key_id: KeyId
    public_key: PublicKey


def one_time(keys: list[OneTimePrekeyBody]) -> list[OneTimePrekey]:
    return [OneTimePrekey(k.key_id, k.public_key) for k in keys]


class KeysPublish(Body):
    identity_key: Annotated[bytes, Meta(description="Base64 of this device's 32-byte Ed25519 identity key.")]
    signed_prekey: SignedPrekeyBody
    one_time_prekeys: Annotated[list[OneTimePrekeyBody], Meta(max_length=100)] = []


class PrekeysUpload(Body):
    signed_prekey: SignedPrekeyBody | None = None
    one_time_prekeys: Annotated[list[OneTimePrekeyBody], Meta(max_length=100)] = []


class PrekeyCount(msgspec.Struct, kw_only=True):
    one_time_prekeys: int


class DeviceKeysList(msgspec.Struct, kw_only=True):
    devices: list[DeviceKeys]


class BundleList(msgspec.Struct, kw_only=True):
    devices: list[Bundle]


class SenderKeyPost(Body):
    distribution_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[\x21-\x7e]+"))]
    recipients: Annotated[list[Recipient], Meta(min_length=1, max_length=5000)]


class SenderKeyList(msgspec.Struct, kw_only=True):
    distributions: list[SenderKeyDistribution]


# -- media -----------------------------------------------------------------------------------

Purpose = Literal["attachment", "avatar", "sticker"]


class MediaUploadQuery(Input):
    purpose: Purpose = "attachment"
    encrypted: Annotated[bool, Meta(description="Client-encrypted: stored and served as opaque bytes.")] = False
    filename: Annotated[str, Meta(max_length=1024, description="For raw-body uploads (multipart names its part).")] = ""


CHUNK_INDEX_MAX = 999_999_999
ChunkIndex = Annotated[int, Meta(ge=0, le=CHUNK_INDEX_MAX, description="From 0.")]


class UploadStart(Body, kw_only=True):
    size: Annotated[int, Meta(ge=1, le=INT64_MAX, description="The whole file's size in bytes.")]
    filename: Annotated[str, Meta(max_length=1024)] = ""
    purpose: Purpose = "attachment"
    encrypted: bool = False


class SignedQuery(Input):
    expires: Annotated[Count, Meta(description="Unix time, seconds: from a signed URL.")] | None = None
    signature: Annotated[str, Meta(pattern=whole("[0-9a-f]{64}"))] | None = None


class DownloadQuery(SignedQuery, kw_only=True):
    variant: Literal["original", "small", "large"] = "original"


class ThumbnailQuery(SignedQuery, kw_only=True):
    size: Literal["small", "large"] = "small"


class VariantQuery(Input):
    variant: Literal["original", "small", "large"] = "original"


class SignedUrl(msgspec.Struct, kw_only=True):
    url: str
    expires_at: Annotated[int, Meta(description="Unix time, seconds.")]


# Files travel as they are, not as JSON: these describe them in the OpenAPI document.
_BINARY = {"type": "string", "format": "binary"}
FILE_UPLOAD = {
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "required": ["file"],
            "properties": {"file": {**_BINARY, "description": "The file; the part's filename names it."}},
        }
    },
    "application/octet-stream": {"schema": {**_BINARY, "description": "The file as the body; ?filename= names it."}},
}
CHUNK_UPLOAD = {
    "application/octet-stream": {
        "schema": {
            **_BINARY,
            "description": "Chunk `index`: `chunk_size` bytes, the last chunk the rest. Send Content-Length.",
        }
    }
}
FILE_DOWNLOAD = {
    "200": {"description": "The file.", "content": {"*/*": {"schema": _BINARY}}},
    "206": {"description": "The byte range asked for with Range.", "content": {"*/*": {"schema": _BINARY}}},
    "304": {"description": "Not modified: If-None-Match named its ETag."},
}


# -- stories ----------------------------------------------------------------------------------

CursorQuery = Annotated[str, Meta(max_length=80, description="The next_cursor of the previous page.")]
UserIdList = Annotated[list[Id], Meta(max_length=5000)]


class StoryPost(Body):
    media_id: Annotated[Id, Meta(description="My photo or video, uploaded unencrypted (purpose=attachment).")]
    audience: Literal["chats", "contacts", "close_friends", "contacts_except"]
    caption: Annotated[str, Meta(max_length=CAPTION_MAX)] = ""
    list_id: Annotated[Id, Meta(description="contacts_except: my list of people to leave out.")] | None = None


class StoryFeedQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=100, description="Authors per page.")] = 50
    before: CursorQuery | None = None


class StoryViewsQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: CursorQuery | None = None


class AudienceListCreate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=LIST_NAME_MAX)]
    user_ids: UserIdList = []


class AudienceListUpdate(Body):
    name: Annotated[str, Meta(min_length=1, max_length=LIST_NAME_MAX)] | None = None
    user_ids: Annotated[UserIdList, Meta(description="Replaces who is on the list.")] | None = None


class UserIds(Body):
    user_ids: Annotated[list[Id], Meta(min_length=1, max_length=5000)]


class AudienceLists(msgspec.Struct, kw_only=True):
    lists: list[AudienceList]


# -- sticker packs ----------------------------------------------------------------------------


class StickerPackCreate(Body):
    title: Annotated[str, Meta(min_length=1, max_length=STICKER_TITLE_MAX)]
    cover_media_id: Annotated[Id, Meta(description="My image uploaded with purpose=sticker.")] | None = None


class StickerPackUpdate(Body):
    title: Annotated[str, Meta(min_length=1, max_length=STICKER_TITLE_MAX)] | UnsetType = UNSET
    cover_media_id: Id | UnsetType | None = UNSET


class StickerAdd(Body):
    media_id: Annotated[Id, Meta(description="My PNG or WebP uploaded with purpose=sticker, processed.")]
    emoji: Annotated[str, Meta(min_length=1, max_length=32, description="The emoji the sticker stands for.")]


class PackRef(Body):
    pack_id: Id


class PackOrder(Body):
    pack_ids: Annotated[list[Id], Meta(max_length=1000, description="Every installed pack, once, in the new order.")]


# -- administration ---------------------------------------------------------------------------


class AdminUsersQuery(Input):
    q: Annotated[str, Meta(min_length=1, max_length=64, description="A part of a username or display name.")] | None = (
        None
    )
    status: Literal["active", "deactivated", "deleted"] | None = None
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    after: Id | None = None


class AdminRole(Body):
    is_admin: bool


class RevokedDevices(msgspec.Struct, kw_only=True):
    revoked_device_ids: list[str]


RegistrationInviteRef = Annotated[
    str, Meta(pattern=whole("[0-9a-f]{64}"), description="An invite's id (not its code).")
]


InviteLifetime = Annotated[
    int, Meta(ge=60, le=365 * 86_400, description="Seconds. Absent: 7 days. null: until it is used up.")
]


class RegistrationInviteCreate(Body):
    max_uses: Annotated[int, Meta(ge=1, le=10_000)] = 1
    expires_in_seconds: InviteLifetime | UnsetType | None = UNSET


class RegistrationInvitesQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: CursorQuery | None = None


class AuditQuery(Input):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    before: Annotated[Id, Meta(description="The next_cursor of the previous page.")] | None = None
    action: Annotated[str, Meta(min_length=1, max_length=64, pattern=whole("[a-z0-9_.]+"))] | None = None
    target_id: Annotated[str, Meta(min_length=1, max_length=64, pattern=whole("[0-9a-fA-F-]+"))] | None = None
    actor_id: Id | None = None


# -- my account: deleting it, exporting its data ---------------------------------------------------


class AccountDelete(Body):
    password: AnyPassword
    totp_code: TotpCode | None = None
    recovery_code: RecoveryCode | None = None


# -- calls and email ---------------------------------------------------------------------------


class TurnCredentialsResponse(msgspec.Struct, kw_only=True):
    username: Annotated[str, Meta(description="`<expiry unix time>:<user id>`, coturn's use-auth-secret form.")]
    credential: Annotated[str, Meta(description="The password: base64 of HMAC-SHA1(secret, username).")]
    ttl: Annotated[int, Meta(description="Seconds the credentials are good for.")]
    expires_at: Annotated[int, Meta(description="Unix time, in seconds, when they stop working.")]
    uris: Annotated[list[str], Meta(description="The TURN servers: an RTCIceServer's `urls`.")]


class CallTokenResponse(msgspec.Struct, kw_only=True):
    url: Annotated[str, Meta(description="The media server (LiveKit) to connect to.")]
    token: Annotated[str, Meta(description="Its access token for this device, for this room only.")]
    room: Annotated[str, Meta(description="The chat's room: the same for every member, not the chat id.")]
    expires_at: Annotated[int, Meta(description="Unix time, in seconds, after which the token no longer joins.")]


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
        Meta(min_length=1, max_length=EMAIL_MAX, pattern=_TEXT, description="The account's email address or username."),
    ]


class PasswordResetConfirm(Body):
    token: EmailToken
    new_password: NewPassword


# -- search and joining ------------------------------------------------------------------


class NameSearchQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    q: Annotated[str, Meta(max_length=64, description="A name, or part of one; case does not matter.")]
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


class MessageSearchQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    q: Annotated[
        str,
        Meta(
            max_length=256,
            description="Words, every one required, in any order; no operators. The last word also matches"
            " longer words that start with it, unless a space follows it.",
        ),
    ]
    chat_id: Id | None = None
    order: Literal["newest", "relevance"] = "newest"
    before: Annotated[str, Meta(max_length=200, description="The next_cursor of the previous page.")] | None = None
    limit: Annotated[int, Meta(ge=1, le=50)] = 20


class InviteCreate(Body):
    name: Annotated[str, Meta(max_length=64, description="A label for admins.")] = ""
    requires_approval: Annotated[bool, Meta(description="Joining through it makes a join request.")] = False
    expires_in: Annotated[int, Meta(ge=60, le=366 * 86400, description="Seconds from now.")] | None = None
    max_uses: Annotated[int, Meta(ge=1, le=100_000)] | None = None


class InviteCode(Body):
    code: Annotated[str, Meta(min_length=1, max_length=64, description="The code of an invite link.")]


class JoinRequestQuery(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=200)] = 50
    after: Annotated[str, Meta(max_length=80)] | None = None


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
