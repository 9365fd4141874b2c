"""Server administration under /api/v1/admin: for administrators only, a 404 for anyone else."""

from __future__ import annotations

from msgspec import UNSET

from sup.domain.admin import (
    INVITE_DEFAULT_SECONDS,
    AdminUser,
    AdminUserDetail,
    AdminUserPage,
    NewRegistrationInvite,
    RegistrationInvitePage,
    ServerStats,
)
from sup.domain.audit import AuditPage
from sup.http import schemas as s
from sup.http.api import Call


async def list_users(call: Call) -> AdminUserPage:
    """GET /api/v1/admin/users: every account, in the order they were made; `q` searches names."""
    query: s.AdminUsersQuery = call.query
    return await call.services.admin.list_users(
        search=query.q, status=query.status, after=query.after, limit=query.limit
    )


async def get_user(call: Call) -> AdminUserDetail:
    """GET /api/v1/admin/users/{user_id}: an account, its logged-in devices and its storage use."""
    return await call.services.admin.get_user(call.param("user_id"))


async def deactivate_user(call: Call) -> AdminUser:
    """POST /api/v1/admin/users/{user_id}/deactivate: no more logins; every device logged out at once."""
    return await call.services.admin.deactivate(call.who, call.param("user_id"))


async def reactivate_user(call: Call) -> AdminUser:
    """POST /api/v1/admin/users/{user_id}/reactivate: the account may log in again."""
    return await call.services.admin.reactivate(call.who, call.param("user_id"))


async def delete_user(call: Call) -> None:
    """DELETE /api/v1/admin/users/{user_id}: delete an account, its files; its messages become tombstones."""
    await call.services.erasure.delete_by_admin(call.who, call.param("user_id"))


async def reset_two_factor(call: Call) -> None:
    """POST /api/v1/admin/users/{user_id}/2fa/reset: turn a user's 2FA off (a lost phone)."""
    await call.services.admin.reset_two_factor(call.who, call.param("user_id"))


async def set_admin(call: Call, body: s.AdminRole) -> AdminUser:
    """PUT /api/v1/admin/users/{user_id}/admin: make a user an administrator, or not."""
    return await call.services.admin.set_admin(call.who, call.param("user_id"), body.is_admin)


async def revoke_devices(call: Call) -> s.RevokedDevices:
    """DELETE /api/v1/admin/users/{user_id}/devices: log every device of a user out at once."""
    revoked = await call.services.admin.revoke_devices(call.who, call.param("user_id"))
    return s.RevokedDevices(revoked_device_ids=revoked)


async def revoke_device(call: Call) -> None:
    """DELETE /api/v1/admin/users/{user_id}/devices/{device_id}: log one device of a user out."""
    await call.services.admin.revoke_device(call.who, call.param("user_id"), call.param("device_id"))


async def list_invites(call: Call) -> RegistrationInvitePage:
    """GET /api/v1/admin/invites: every invite, newest first, with how far it was used."""
    query: s.RegistrationInvitesQuery = call.query
    return await call.services.admin.list_invites(before=query.before, limit=query.limit)


async def create_invite(call: Call, body: s.RegistrationInviteCreate) -> NewRegistrationInvite:
    """POST /api/v1/admin/invites: a new invite code (shown once), for some uses, until it expires."""
    seconds = INVITE_DEFAULT_SECONDS if body.expires_in_seconds is UNSET else body.expires_in_seconds
    return await call.services.admin.create_invite(call.who, max_uses=body.max_uses, expires_in_seconds=seconds)


async def revoke_invite(call: Call) -> None:
    """DELETE /api/v1/admin/invites/{invite}: revoke an invite; its code registers no one any more."""
    await call.services.admin.revoke_invite(call.who, call.param("invite"))


async def server_stats(call: Call) -> ServerStats:
    """GET /api/v1/admin/stats: users, devices, chats, messages, storage and jobs, counted now."""
    return await call.services.admin.stats()


async def audit_log(call: Call) -> AuditPage:
    """GET /api/v1/admin/audit: what administrators did, newest first, cursor-paginated."""
    query: s.AuditQuery = call.query
    return await call.services.audit.page(
        before=query.before,
        limit=query.limit,
        action=query.action,
        target_id=query.target_id.lower() if query.target_id else None,
        actor_id=query.actor_id,
    )
