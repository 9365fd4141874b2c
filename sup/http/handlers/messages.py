"""Messages under /api/v1/messages."""

from __future__ import annotations

from aiohttp import web

from sup.domain.messages import MessagePage
from sup.domain.timeline import Message
from sup.http import schemas as s
from sup.http.api import Call, json_response


async def send_message(call: Call, body: s.MessageSend) -> web.Response:
    """POST /api/v1/messages: send; 201 when stored, 200 with the original when client_id was seen already.

    The same checks as a WebSocket `message.send`: no NUL in any text, at most 5,000 recipients.
    The sending device must still be active when the message is stored: one revoked a moment
    earlier (after this request was authenticated) gets 401 invalid_token, and nothing is stored.
    """
    await call.services.send_rate.check(call.who.device_id)  # shared with WebSocket sends
    sent = await call.services.messages.send(call.who.user_id, call.who.device_id, body.to_outgoing())
    return json_response(sent.message, 201 if sent.created else 200)


async def history(call: Call) -> MessagePage:
    """GET /api/v1/messages/chat/{chat_id}: history by seq; `before` pages back, `after` pages forward."""
    q = call.query
    return await call.services.messages.history(
        call.who.user_id, call.who.device_id, call.param("chat_id"), before=q.before, after=q.after, limit=q.limit
    )


async def mark_read(call: Call, body: s.ReadMarker) -> s.ReadState:
    """POST /api/v1/messages/chat/{chat_id}/read: move my read marker to a seq."""
    chat_id = call.param("chat_id")
    seq = await call.services.messages.mark_read(call.who.user_id, chat_id, body.seq)
    return s.ReadState(chat_id=chat_id, last_read_seq=seq)


async def get_message(call: Call) -> Message:
    """GET /api/v1/messages/{message_id}: one message."""
    return await call.services.messages.get(call.who.user_id, call.who.device_id, call.param("message_id"))


async def edit_message(call: Call, body: s.MessageEdit) -> Message:
    """PATCH /api/v1/messages/{message_id}: edit my message (new body, or new ciphertexts)."""
    return await call.services.messages.edit(
        call.who.user_id,
        call.who.device_id,
        call.param("message_id"),
        body=body.body,
        ciphertext=body.ciphertext,
        recipients=[(r.device_id, r.ciphertext) for r in body.recipients],
    )


async def delete_message(call: Call) -> None:
    """DELETE /api/v1/messages/{message_id}: delete for everyone (a tombstone stays) or, with scope=me, for me."""
    await call.services.messages.delete(
        call.who.user_id, call.param("message_id"), for_everyone=call.query.scope == "everyone"
    )


async def add_reaction(call: Call, body: s.ReactionBody) -> s.ReactionList:
    """POST /api/v1/messages/{message_id}/reactions: react with an emoji."""
    reactions = await call.services.messages.react(call.who.user_id, call.param("message_id"), body.emoji, add=True)
    return s.ReactionList(reactions=reactions)


async def remove_reaction(call: Call) -> s.ReactionList:
    """DELETE /api/v1/messages/{message_id}/reactions: take my reaction back (?emoji=...)."""
    reactions = await call.services.messages.react(
        call.who.user_id, call.param("message_id"), call.query.emoji, add=False
    )
    return s.ReactionList(reactions=reactions)


async def forward_message(call: Call, body: s.Forward) -> web.Response:
    """POST /api/v1/messages/{message_id}/forward: forward to another chat (keeps forwarded_from)."""
    sent = await call.services.messages.forward(
        call.who.user_id, call.who.device_id, call.param("message_id"), body.chat_id, body.client_id
    )
    return json_response(sent.message, 201 if sent.created else 200)


async def pin_message(call: Call) -> None:
    """POST /api/v1/messages/{message_id}/pin: pin in its chat (pin)."""
    await call.services.messages.pin(call.who.user_id, call.param("message_id"), pinned=True)


async def unpin_message(call: Call) -> None:
    """DELETE /api/v1/messages/{message_id}/pin: unpin (pin)."""
    await call.services.messages.pin(call.who.user_id, call.param("message_id"), pinned=False)
