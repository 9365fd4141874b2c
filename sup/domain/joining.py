"""Joining chats: public chats anyone may join, invite links, and join requests an admin approves.

- A public chat (a channel or an unencrypted group, see `check_visibility`) is found by search
  and joined directly (`join_public`).
- Any group or channel can have invite links (`invite_users` permission: owner and admins by
  default), each with an optional expiry, use limit and approval. A link that needs approval
  makes a join request; members with `invite_users` approve or decline it.
- Joining makes the user a member with the chat's member role, posts a `member_joined` system
  message and announces `chat.member.added` to every member (the joiner included), as adding
  a member does. In an end-to-end encrypted group the server then refuses every sender's next
  group message until the newcomer's devices have their sender key (sender_key_missing), so
  the clients re-key for them: nothing sent before the join is readable to the newcomer.
- The people who run a chat decide who is in it: whoever the owner or an admin blocks, or the
  person who made the link, cannot join (nor is the public chat listed for them in search). A
  block by an ordinary member does not keep anyone out, as it would not when an admin adds them.
- Codes travel in request bodies, never in URLs, which access logs and proxies keep.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from sup.clock import Clock
from sup.db.chats import ChatRow, ChatStore, MemberStore, RoleStore
from sup.db.database import Database, Queryable, Row, Transaction, from_row
from sup.db.joining import ChatInviteStore, InviteRow, JoinRequestStore
from sup.domain.access import ChatAccess, no_chat
from sup.domain.accounts import check_text
from sup.domain.chats import Chat, ChatService, chat_from_row
from sup.domain.cursors import bad_cursor
from sup.domain.permissions import Permission
from sup.domain.timeline import Timeline
from sup.domain.views import view_of
from sup.errors import Code, DomainError
from sup.ids import is_uuid, uuid7

INVITE_NAME_MAX = 64
CODE_BYTES = 12  # 96 random bits, 16 URL-safe characters
CODE_MAX = 64


# An invite link as its chat's admins see it: the stored row, and whether it still lets anyone in.
class ChatInvite(InviteRow, frozen=True, kw_only=True):
    usable: bool  # not revoked, not expired, not used up


class InvitePage(msgspec.Struct, frozen=True):
    items: list[ChatInvite]
    next_cursor: str | None


class ChatCard(msgspec.Struct, frozen=True, kw_only=True):
    """What anyone may see of a chat they could join (an invite link's, a public one)."""

    id: str
    type: str
    title: str
    description: str
    avatar_media_id: str | None
    visibility: str
    encrypted: bool
    member_count: int
    joined: bool  # whether the user asking is a member


class InvitePreview(msgspec.Struct, frozen=True, kw_only=True):
    chat: ChatCard
    requires_approval: bool
    expires_at: int | None
    requested: bool  # the user asking already waits for approval


class JoinRequest(msgspec.Struct, frozen=True, kw_only=True):
    chat_id: str
    user_id: str
    username: str
    display_name: str
    invite_id: str | None
    created_at: int


class JoinRequestPage(msgspec.Struct, frozen=True):
    items: list[JoinRequest]
    next_cursor: str | None


class JoinResult(msgspec.Struct, frozen=True, kw_only=True):
    """`joined`: a member now; `member`: one already; `requested`: waiting for an admin."""

    status: Literal["joined", "member", "requested"]
    chat_id: str
    chat: Chat | None = None  # when a member
    request: JoinRequest | None = None  # when waiting


def card(chat: ChatRow, member_count: int, joined: bool) -> ChatCard:
    return view_of(ChatCard, chat, member_count=member_count, joined=joined)


def _invite(row: InviteRow, now: int) -> ChatInvite:
    return ChatInvite(
        **msgspec.structs.asdict(row),
        usable=_refusal(row, now) is None,
    )


def _refusal(row: InviteRow, now: int) -> tuple[str, str] | None:
    """Why a link no longer lets anyone in: (reason, detail), or None while it does."""
    if row.revoked_at is not None:
        return "revoked", "This invite link was revoked."
    if row.expires_at is not None and row.expires_at <= now:
        return "expired", "This invite link has expired."
    if row.max_uses is not None and row.uses >= row.max_uses:
        return "used_up", "This invite link has been used as often as it may be."
    return None


def _request(row: Row) -> JoinRequest:
    return from_row(JoinRequest, row)


def _bad_invite(reason: str, detail: str) -> DomainError:
    return DomainError(Code.INVALID_INVITE, detail, reason=reason)


@dataclass(slots=True, eq=False)
class JoinService:
    db: Database
    chats: ChatStore
    members: MemberStore
    roles: RoleStore
    invite_store: ChatInviteStore
    request_store: JoinRequestStore
    access: ChatAccess
    timeline: Timeline
    chat_service: ChatService
    clock: Clock

    # -- links ---------------------------------------------------------------------------

    async def create_invite(
        self,
        who_id: str,
        chat_id: str,
        *,
        name: str = "",
        requires_approval: bool = False,
        expires_in: int | None = None,
        max_uses: int | None = None,
    ) -> ChatInvite:
        """A new link (`expires_in` seconds from now, if set; at most `max_uses` joins, if set)."""
        name = check_text(name, "name", INVITE_NAME_MAX)
        if expires_in is not None and expires_in <= 0:
            raise DomainError(Code.VALIDATION_FAILED, "expires_in is a number of seconds.", field="expires_in")
        if max_uses is not None and max_uses <= 0:
            raise DomainError(Code.VALIDATION_FAILED, "max_uses is at least 1.", field="max_uses")
        now = self.clock.now_ms()
        expires_at = now + expires_in * 1000 if expires_in is not None else None
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            if membership.chat.type == "direct":
                raise DomainError(Code.FORBIDDEN, "A direct chat has exactly two members: it has no invite links.")
            membership.require(Permission.INVITE_USERS, "invite people with a link")
            invite_id = uuid7(now)
            await self.invite_store.insert(
                tx,
                id=invite_id,
                chat_id=chat_id,
                code=secrets.token_urlsafe(CODE_BYTES),
                name=name,
                created_by=who_id,
                requires_approval=requires_approval,
                expires_at=expires_at,
                max_uses=max_uses,
                now=now,
            )
            return _invite(await self.invite_store.get(tx, chat_id, invite_id), now)

    async def invites(self, who_id: str, chat_id: str, after: str | None, limit: int) -> InvitePage:
        """The chat's links, newest first, revoked and spent ones too (they say so)."""
        membership = await self.access.access_chat(self.db, who_id, chat_id)
        membership.require(Permission.INVITE_USERS, "see the invite links")
        rows = await self.invite_store.page(self.db, chat_id, after, limit + 1)
        now = self.clock.now_ms()
        items = [_invite(row, now) for row in rows[:limit]]
        return InvitePage(items, items[-1].id if len(rows) > limit else None)

    async def revoke_invite(self, who_id: str, chat_id: str, invite_id: str) -> None:
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            membership.require(Permission.INVITE_USERS, "revoke invite links")
            if not is_uuid(invite_id) or await self.invite_store.get(tx, chat_id, invite_id) is None:
                raise DomainError(Code.NOT_FOUND, "No such invite link in this chat.")
            await self.invite_store.revoke(tx, invite_id, now)

    async def _usable(self, code: str) -> InviteRow:
        row = await self.invite_store.by_code(self.db, code) if 0 < len(code) <= CODE_MAX else None
        if row is None:
            raise _bad_invite("unknown", "This invite link is not valid.")
        if refusal := _refusal(row, self.clock.now_ms()):
            raise _bad_invite(*refusal)
        return row

    async def preview(self, who_id: str, code: str) -> InvitePreview:
        """What a link leads to, for the user to decide."""
        invite = await self._usable(code)
        chat = await self.chats.get(self.db, invite.chat_id)
        if chat is None:
            raise _bad_invite("unknown", "This invite link is not valid.")
        await self._check_not_kept_out(self.db, invite.chat_id, who_id, invite.created_by)
        member = await self.members.get(self.db, chat.id, who_id)
        count = (await self.members.counts(self.db, [chat.id])).get(chat.id, 0)
        requested = await self.request_store.get(self.db, chat.id, who_id) is not None
        return InvitePreview(
            chat=card(chat, count, member is not None),
            requires_approval=invite.requires_approval and chat.visibility != "public",
            expires_at=invite.expires_at,
            requested=requested,
        )

    # -- joining -------------------------------------------------------------------------

    async def join_public(self, who_id: str, chat_id: str, *, device_id: str | None = None) -> JoinResult:
        """Join a public chat. A private one does not exist for someone outside it (404)."""
        chat = await self.chats.get(self.db, chat_id) if is_uuid(chat_id) else None
        if chat is None:
            raise no_chat()
        if await self.members.get(self.db, chat_id, who_id) is not None:
            return await self._as_member(who_id, chat_id, "member", device_id)
        if chat.visibility != "public":
            raise no_chat()
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            await self._check_not_kept_out(tx, chat_id, who_id, None)
            joined = await self._add(tx, chat_id, who_id, {"via": "public"}, now)
        return await self._as_member(who_id, chat_id, "joined" if joined else "member", device_id)

    async def join_by_invite(self, who_id: str, code: str, *, device_id: str | None = None) -> JoinResult:
        """Join through a link: a member at once, or a join request when the link asks for approval."""
        invite = await self._usable(code)
        chat_id = invite.chat_id
        if await self.members.get(self.db, chat_id, who_id) is not None:
            return await self._as_member(who_id, chat_id, "member", device_id)  # the link is not used up for nothing
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            chat = await self.chats.get(tx, chat_id)
            if chat is None:
                raise _bad_invite("unknown", "This invite link is not valid.")
            await self._check_not_kept_out(tx, chat_id, who_id, invite.created_by)
            if invite.requires_approval and chat.visibility != "public":
                if await self.request_store.add(tx, chat_id, who_id, invite.id, now):
                    request = _request(await self.request_store.get(tx, chat_id, who_id))
                    managers = await self.request_store.managers(tx, chat_id)
                    await self.timeline.to_user_devices(
                        tx, managers, "chat.join_request.new", {"chat_id": chat_id, "request": request}, now
                    )
                return JoinResult(
                    status="requested",
                    chat_id=chat_id,
                    request=_request(await self.request_store.get(tx, chat_id, who_id)),
                )

            async def spend() -> None:
                # Only once the membership is new: a twin request that joined a moment ago spends nothing.
                if not await self.invite_store.use(tx, invite.id, now):  # spent by others meanwhile
                    refusal = _refusal(await self.invite_store.get(tx, chat_id, invite.id), now)
                    raise _bad_invite(*(refusal or ("used_up", "This invite link has been used up.")))

            how = {"via": "invite", "invite_id": invite.id}
            joined = await self._add(tx, chat_id, who_id, how, now, before_announcing=spend)
        return await self._as_member(who_id, chat_id, "joined" if joined else "member", device_id)

    async def _check_not_kept_out(
        self,
        db: Queryable,
        chat_id: str,
        who_id: str,
        link_creator: str | None,
        detail: str = "The people who run this chat do not accept you in it.",
    ) -> None:
        if await self.request_store.blocked_by_managers(db, chat_id, who_id, link_creator):
            raise DomainError(Code.BLOCKED, detail)

    async def _add(
        self,
        tx: Transaction,
        chat_id: str,
        user_id: str,
        how: dict[str, str],
        now: int,
        *,
        before_announcing: Callable[[], Awaitable[None]] | None = None,
    ) -> bool:
        """Make the user a member with the member role; False if they were one already (then
        `before_announcing` is not called; if it raises, the transaction undoes the membership)."""
        chat = await self.chats.get(tx, chat_id)
        member_role = await self.roles.by_kind(tx, chat_id, "member")
        if not await self.members.add(tx, chat_id, user_id, member_role["id"], now, chat.last_seq):
            return False
        if before_announcing is not None:
            await before_announcing()
        await self.request_store.remove(tx, chat_id, user_id)  # a request still waiting is moot now
        if chat.type != "channel":  # a channel's subscribers do not see each other come and go
            notice = {"action": "member_joined", "user_id": user_id, **how}
            await self.timeline.system(tx, chat_id, user_id, notice, now)
        view = chat_from_row(await self.chats.get(tx, chat_id))
        # How they came (a public chat, which invite): in a channel, where no system message says
        # it, this event is what tells the people who manage members.
        event = {"chat": view, "user_ids": [user_id], **how}
        await self.timeline.membership_changed(tx, chat.type, chat_id, [user_id], "chat.member.added", event, now)
        return True

    async def _as_member(
        self, who_id: str, chat_id: str, status: Literal["joined", "member"], device_id: str | None
    ) -> JoinResult:
        chat = await self.chat_service.get(who_id, chat_id, device_id=device_id)
        return JoinResult(status=status, chat_id=chat_id, chat=chat)

    # -- requests ------------------------------------------------------------------------

    async def requests(self, who_id: str, chat_id: str, after: str | None, limit: int) -> JoinRequestPage:
        membership = await self.access.access_chat(self.db, who_id, chat_id)
        membership.require(Permission.INVITE_USERS, "see join requests")
        if after is not None and not _request_cursor(after):
            raise bad_cursor("after")
        rows = await self.request_store.page(self.db, chat_id, after, limit + 1)
        items = [_request(row) for row in rows[:limit]]
        last = items[-1] if len(rows) > limit else None
        return JoinRequestPage(items, f"{last.created_at}_{last.user_id}" if last else None)

    async def decide(self, who_id: str, chat_id: str, user_id: str, *, approve: bool) -> None:
        """Approve (the user becomes a member) or decline a join request."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            membership = await self.access.access_chat(tx, who_id, chat_id)
            membership.require(Permission.INVITE_USERS, "answer join requests")
            request = await self.request_store.get(tx, chat_id, user_id) if is_uuid(user_id) else None
            if request is None:
                raise DomainError(Code.NOT_FOUND, "No such join request.")
            if approve:
                invite = (
                    await self.invite_store.get(tx, chat_id, request["invite_id"]) if request["invite_id"] else None
                )
                await self._check_not_kept_out(
                    tx,
                    chat_id,
                    user_id,
                    invite.created_by if invite else None,
                    "The owner, an admin or the link's maker blocks this user: they cannot join.",
                )
                if invite is not None:
                    await self.invite_store.count_approved(tx, invite.id)
                if not await self._add(tx, chat_id, user_id, {"via": "request", "approved_by": who_id}, now):
                    await self.request_store.remove(tx, chat_id, user_id)  # a member already, by another way
            else:
                await self.request_store.remove(tx, chat_id, user_id)
            await self._tell_resolved(tx, chat_id, user_id, approved=approve, by=who_id, now=now)

    async def cancel_request(self, who_id: str, chat_id: str) -> None:
        """Withdraw my own join request."""
        now = self.clock.now_ms()
        async with self.db.transaction() as tx:
            if not is_uuid(chat_id) or not await self.request_store.remove(tx, chat_id, who_id):
                raise DomainError(Code.NOT_FOUND, "No such join request.")
            await self._tell_resolved(tx, chat_id, who_id, approved=False, by=who_id, now=now)

    async def _tell_resolved(
        self, tx: Transaction, chat_id: str, user_id: str, *, approved: bool, by: str, now: int
    ) -> None:
        """The requester learns the answer (approved, they also hear chat.member.added); so do the
        chat's admins, whose lists of requests shrink."""
        managers = await self.request_store.managers(tx, chat_id)
        await self.timeline.to_user_devices(
            tx,
            sorted({*managers, user_id}),
            "chat.join_request.resolved",
            {"chat_id": chat_id, "user_id": user_id, "approved": approved, "by": by},
            now,
        )


def _request_cursor(cursor: str) -> bool:
    created_at, _, user_id = cursor.partition("_")
    return created_at.isdigit() and len(created_at) <= 18 and is_uuid(user_id)
