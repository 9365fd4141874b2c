"""Access checks shared by chats and messages: fetch with permission, or refuse.

A chat I am not in does not exist for me (404, the same as an unknown id); a chat I am
in but whose rule I lack answers 403. Never data.
"""

from __future__ import annotations

from dataclasses import dataclass

from sup.db.accounts import BlockStore
from sup.db.chats import ChatRow, MemberRow, MemberStore
from sup.db.database import Queryable
from sup.domain.permissions import ALL, MANAGE_MEMBERS, RANK, Permission
from sup.errors import Code, DomainError
from sup.ids import is_uuid


@dataclass(frozen=True, slots=True)
class Membership:
    chat: ChatRow
    member: MemberRow
    retry_of: str | None = None  # with a client_id: my message already sent with it

    @property
    def permissions(self) -> Permission:
        if self.member.kind == "owner":
            return ALL
        return Permission(self.member.permissions)

    @property
    def rank(self) -> int:
        return RANK[self.member.kind]

    @property
    def sees_members(self) -> bool:
        """Whether I may see who else is here: in a channel only those who manage members do."""
        return self.chat.type != "channel" or bool(self.permissions & MANAGE_MEMBERS)

    def require(self, permission: Permission, what: str) -> None:
        if not self.permissions & permission:
            raise DomainError(Code.FORBIDDEN, f"Your role in this chat does not allow you to {what}.")


def no_chat() -> DomainError:
    return DomainError(Code.NOT_FOUND, "No such chat.")


@dataclass(slots=True, eq=False)
class ChatAccess:
    members: MemberStore
    blocks: BlockStore

    async def access_chat(
        self, db: Queryable, user_id: str, chat_id: str, *, client_id: str | None = None
    ) -> Membership:
        """The chat and my membership in it; 404 if it does not exist or I am not a member.

        With a client_id, `membership.retry_of` names my message already sent with it.
        """
        if not is_uuid(chat_id):
            raise no_chat()
        found = await self.members.with_chat(db, chat_id, user_id, client_id)
        if found is None:
            raise no_chat()
        return Membership(*found)

    async def check_not_blocked(self, db: Queryable, actor_id: str, target_id: str) -> None:
        """Refuse when the target blocks the actor (the actor may not reach them)."""
        if await self.blocks.is_blocked(db, target_id, actor_id):
            raise DomainError(Code.BLOCKED, "This user does not accept that from you.")

    async def check_direct_open(self, db: Queryable, membership: Membership, user_id: str) -> None:
        """In a direct chat, a block either way stops new messages."""
        if membership.chat.type != "direct":
            return
        if await self.members.blocked_between(db, membership.chat.id, user_id):
            raise DomainError(Code.BLOCKED, "Messages between you and this user are blocked.")
