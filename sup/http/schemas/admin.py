"""Administration: users, roles, devices, registration invites, the audit log."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from sup.http.schemas.common import Body, CursorQuery
from sup.transport.inputs import Id, Input, whole


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
