"""Chats and messages: creating and running chats, sending and reading messages, search and joining."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from sup.domain.chats import Role
from sup.domain.messages import Pin
from sup.domain.timeline import Reaction
from sup.http.schemas.common import TEXT, Body
from sup.transport.inputs import Count, Id, Input
from sup.transport.sends import MessageSendFields, Recipient

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
Title = Annotated[str, Meta(max_length=128, pattern=TEXT, description="Required for groups and channels.")]
Description = Annotated[str, Meta(max_length=2000, pattern=TEXT)]


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
