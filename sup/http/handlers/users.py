"""Users, contacts and blocks under /api/v1/users."""

from __future__ import annotations

from sup.domain.accounts import User
from sup.domain.presence import PresenceStatus
from sup.domain.users import BlockedUser, Contact
from sup.errors import Code, DomainError
from sup.http import schemas as s
from sup.http.api import Call


async def get_user(call: Call) -> User:
    """GET /api/v1/users/{user_id}: a user's profile (`me` for mine)."""
    return await call.services.users.get_user(call.param("user_id"))


async def get_user_by_username(call: Call) -> User:
    """GET /api/v1/users/by-username/{username}: find a user by exact username."""
    return await call.services.users.get_by_username(call.param("username"))


async def update_user(call: Call, body: s.ProfileUpdate) -> User:
    """PATCH /api/v1/users/{user_id}: change my display name, bio or avatar."""
    return await call.services.users.update_profile(
        call.who,
        call.param("user_id"),
        display_name=body.display_name,
        bio=body.bio,
        avatar_media_id=body.avatar_media_id,
    )


async def list_contacts(call: Call) -> s.ContactPage:
    """GET /api/v1/users/{user_id}/contacts: my contacts, by id, cursor-paginated."""
    page = await call.services.users.list_contacts(call.who, call.param("user_id"), call.query.after, call.query.limit)
    return s.ContactPage(items=page.items, next_cursor=page.next_cursor)


async def add_contact(call: Call, body: s.UserRef) -> Contact:
    """POST /api/v1/users/{user_id}/contacts: add a user to my contacts."""
    return await call.services.users.add_contact(call.who, call.param("user_id"), body.user_id)


async def remove_contact(call: Call) -> None:
    """DELETE /api/v1/users/{user_id}/contacts/{contact_id}: remove a contact."""
    await call.services.users.remove_contact(call.who, call.param("user_id"), call.param("contact_id"))


async def list_blocked(call: Call) -> s.BlockedPage:
    """GET /api/v1/users/{user_id}/blocks: the users I block, cursor-paginated."""
    page = await call.services.users.list_blocked(call.who, call.param("user_id"), call.query.after, call.query.limit)
    return s.BlockedPage(items=page.items, next_cursor=page.next_cursor)


async def block_user(call: Call, body: s.UserRef) -> BlockedUser:
    """POST /api/v1/users/{user_id}/block: block a user."""
    return await call.services.users.block(call.who, call.param("user_id"), body.user_id)


async def unblock_user(call: Call) -> None:
    """DELETE /api/v1/users/{user_id}/block/{blocked_id}: unblock a user."""
    await call.services.users.unblock(call.who, call.param("user_id"), call.param("blocked_id"))


async def get_presence(call: Call) -> PresenceStatus:
    """GET /api/v1/users/{user_id}/presence: online and last seen, if that user lets me see it."""
    return await call.services.presence.status(call.who.user_id, call.param("user_id"))


async def set_presence_visibility(call: Call, body: s.PresenceVisibility) -> None:
    """PUT /api/v1/users/{user_id}/presence: who may see my presence (everyone, contacts, nobody)."""
    user_id = call.param("user_id")
    if user_id != call.who.user_id:
        raise DomainError(Code.FORBIDDEN, "You can only do this for your own account.")
    await call.services.presence.set_visibility(user_id, body.visibility)
