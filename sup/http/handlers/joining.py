"""Joining chats: public chats, invite links and join requests."""

from __future__ import annotations

from aiohttp import web

from sup.domain.joining import ChatInvite, InvitePage, InvitePreview, JoinRequestPage, JoinResult
from sup.http import schemas as s
from sup.http.api import Call, json_response

_JOIN_STATUS = {"joined": 201, "member": 200, "requested": 202}


def _answer(result: JoinResult) -> web.Response:
    return json_response(result, _JOIN_STATUS[result.status])


async def join_chat(call: Call) -> web.Response:
    """POST /api/v1/chats/{chat_id}/join: join a public chat (201; 200 if a member already)."""
    result = await call.services.joining.join_public(
        call.who.user_id, call.param("chat_id"), device_id=call.who.device_id
    )
    return _answer(result)


async def create_invite(call: Call, body: s.InviteCreate) -> ChatInvite:
    """POST /api/v1/chats/{chat_id}/invites: make an invite link (invite_users)."""
    return await call.services.joining.create_invite(
        call.who.user_id,
        call.param("chat_id"),
        name=body.name,
        requires_approval=body.requires_approval,
        expires_in=body.expires_in,
        max_uses=body.max_uses,
    )


async def list_invites(call: Call) -> InvitePage:
    """GET /api/v1/chats/{chat_id}/invites: the chat's invite links, newest first (invite_users)."""
    return await call.services.joining.invites(
        call.who.user_id, call.param("chat_id"), call.query.after, call.query.limit
    )


async def revoke_invite(call: Call) -> None:
    """DELETE /api/v1/chats/{chat_id}/invites/{invite_id}: revoke an invite link (invite_users)."""
    await call.services.joining.revoke_invite(call.who.user_id, call.param("chat_id"), call.param("invite_id"))


async def list_join_requests(call: Call) -> JoinRequestPage:
    """GET /api/v1/chats/{chat_id}/join-requests: requests waiting for approval, oldest first (invite_users)."""
    return await call.services.joining.requests(
        call.who.user_id, call.param("chat_id"), call.query.after, call.query.limit
    )


async def approve_join_request(call: Call) -> None:
    """POST /api/v1/chats/{chat_id}/join-requests/{user_id}/approve: let the user in (invite_users)."""
    await call.services.joining.decide(call.who.user_id, call.param("chat_id"), call.param("user_id"), approve=True)


async def delete_join_request(call: Call) -> None:
    """DELETE /api/v1/chats/{chat_id}/join-requests/{user_id}: decline (invite_users), or withdraw mine (`me`)."""
    who, user_id = call.who.user_id, call.param("user_id")
    if user_id in ("me", who):
        await call.services.joining.cancel_request(who, call.param("chat_id"))
    else:
        await call.services.joining.decide(who, call.param("chat_id"), user_id, approve=False)


async def preview_invite(call: Call, body: s.InviteCode) -> InvitePreview:
    """POST /api/v1/chat-invites/preview: the chat an invite link leads to, before joining it."""
    return await call.services.joining.preview(call.who.user_id, body.code)


async def join_by_invite(call: Call, body: s.InviteCode) -> web.Response:
    """POST /api/v1/chat-invites/join: join through an invite link (201; 202 when it waits for approval)."""
    result = await call.services.joining.join_by_invite(call.who.user_id, body.code, device_id=call.who.device_id)
    return _answer(result)
