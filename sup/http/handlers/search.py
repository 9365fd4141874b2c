"""Search under /api/v1/search: users, chats and messages."""

from __future__ import annotations

from sup.domain.search import ChatResults, MessageResults, UserResults
from sup.http.api import Call


async def search_users(call: Call) -> UserResults:
    """GET /api/v1/search/users: users by username or display name (prefix, substring, similar spelling)."""
    return await call.services.search.users(call.who.user_id, call.query.q, call.query.limit)


async def search_chats(call: Call) -> ChatResults:
    """GET /api/v1/search/chats: my groups and channels, and public ones, by title."""
    return await call.services.search.chats(call.who.user_id, call.query.q, call.query.limit)


async def search_messages(call: Call) -> MessageResults:
    """GET /api/v1/search/messages: messages the server can read in my chats, newest or most relevant first."""
    query = call.query
    return await call.services.search.messages(
        call.who.user_id, query.q, chat_id=query.chat_id, order=query.order, before=query.before, limit=query.limit
    )
