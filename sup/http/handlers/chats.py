"""Chats, members and roles under /api/v1/chats."""

from __future__ import annotations

from aiohttp import web

from sup.domain.chats import Chat, ChatPage, MemberPage, Role
from sup.domain.messages import Pin
from sup.http import schemas as s
from sup.http.api import Call, json_response


async def list_chats(call: Call) -> ChatPage:
    """GET /api/v1/chats: my chats, most recent activity first, with last message and unread count."""
    who = call.who
    return await call.services.chats.list_mine(
        who.user_id, call.query.before, call.query.limit, device_id=who.device_id
    )


async def create_chat(call: Call, body: s.ChatCreate) -> web.Response:
    """POST /api/v1/chats: create a direct chat (200 with the existing one if there is one), group or channel."""
    chat, created = await call.services.chats.create(
        call.who.user_id,
        type=body.type,
        member_ids=body.member_ids,
        title=body.title,
        description=body.description,
        encrypted=body.encrypted,
        visibility=body.visibility,
    )
    return json_response(chat, 201 if created else 200)


async def get_chat(call: Call) -> Chat:
    """GET /api/v1/chats/{chat_id}: one of my chats."""
    return await call.services.chats.get(call.who.user_id, call.param("chat_id"), device_id=call.who.device_id)


async def update_chat(call: Call, body: s.ChatUpdate) -> Chat:
    """PATCH /api/v1/chats/{chat_id}: change title, description, avatar or visibility (edit_info)."""
    changes = {
        name: getattr(body, name)
        for name in ("title", "description", "avatar_media_id", "visibility")
        if getattr(body, name) is not s.UNSET
    }
    return await call.services.chats.update(call.who.user_id, call.param("chat_id"), changes)


async def delete_chat(call: Call) -> None:
    """DELETE /api/v1/chats/{chat_id}: delete for everyone (owner; either member of a direct chat)."""
    await call.services.chats.delete(call.who.user_id, call.param("chat_id"))


async def leave_chat(call: Call) -> None:
    """POST /api/v1/chats/{chat_id}/leave: leave a group or channel."""
    await call.services.chats.leave(call.who.user_id, call.param("chat_id"))


async def list_members(call: Call) -> MemberPage:
    """GET /api/v1/chats/{chat_id}/members: members with their roles, cursor-paginated.

    In a channel only those who manage members see the list; a subscriber gets their own
    membership and `member_count`.
    """
    return await call.services.chats.members(
        call.who.user_id, call.param("chat_id"), call.query.after, call.query.limit
    )


async def add_members(call: Call, body: s.MembersAdd) -> s.MembersAdded:
    """POST /api/v1/chats/{chat_id}/members: add users (add_members)."""
    added = await call.services.chats.add_members(call.who.user_id, call.param("chat_id"), body.user_ids)
    return s.MembersAdded(added=added)


async def remove_member(call: Call) -> None:
    """DELETE /api/v1/chats/{chat_id}/members/{user_id}: remove a member (remove_members), or leave."""
    await call.services.chats.remove_member(call.who.user_id, call.param("chat_id"), call.param("user_id"))


async def set_member_role(call: Call, body: s.MemberRole) -> None:
    """PATCH /api/v1/chats/{chat_id}/members/{user_id}: give a member a role (manage_roles)."""
    await call.services.chats.set_member_role(
        call.who.user_id, call.param("chat_id"), call.param("user_id"), body.role_id
    )


async def list_roles(call: Call) -> s.RoleList:
    """GET /api/v1/chats/{chat_id}/roles: the chat's roles and their permissions."""
    return s.RoleList(roles=await call.services.chats.roles(call.who.user_id, call.param("chat_id")))


async def create_role(call: Call, body: s.RoleCreate) -> Role:
    """POST /api/v1/chats/{chat_id}/roles: create a custom role (manage_roles)."""
    return await call.services.chats.create_role(
        call.who.user_id, call.param("chat_id"), body.name, list(body.permissions)
    )


async def update_role(call: Call, body: s.RoleUpdate) -> Role:
    """PATCH /api/v1/chats/{chat_id}/roles/{role_id}: rename a role or change its permissions (manage_roles)."""
    return await call.services.chats.update_role(
        call.who.user_id,
        call.param("chat_id"),
        call.param("role_id"),
        body.name,
        list(body.permissions) if body.permissions is not None else None,
    )


async def list_pins(call: Call) -> s.PinList:
    """GET /api/v1/chats/{chat_id}/pins: pinned messages, newest first."""
    pins: list[Pin] = await call.services.messages.pins(call.who.user_id, call.param("chat_id"))
    return s.PinList(pins=pins)


async def typing(call: Call, body: s.TypingRequest) -> None:
    """POST /api/v1/chats/{chat_id}/typing: tell the others I am typing (lapses by itself)."""
    await call.services.presence.typing(call.who.user_id, call.param("chat_id"), body.active)
