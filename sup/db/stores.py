"""Every table's SQL, built once per database by the composition root.

Services receive the stores they use as constructor arguments; none builds its own, and
none reaches another service's stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from sup.db.accounts import (
    BlockStore,
    ContactStore,
    DeviceStore,
    InviteStore,
    LoginAddressStore,
    RecoveryCodeStore,
    SessionStore,
    UserStore,
)
from sup.db.audit import AuditStore
from sup.db.chats import ChatStore, MemberStore, RoleStore
from sup.db.emails import EmailStore
from sup.db.erasure import ErasureStore
from sup.db.events import EventStore
from sup.db.exports import ExportStore
from sup.db.joining import ChatInviteStore, JoinRequestStore
from sup.db.keydirectory import KeyDirectoryStore
from sup.db.media import MediaStore
from sup.db.messages import MessageStore, PinStore, ReactionStore, RecipientStore
from sup.db.push import PushStore
from sup.db.search import SearchStore
from sup.db.stats import StatsStore
from sup.db.stickers import StickerStore
from sup.db.stories import StoryStore


@dataclass(frozen=True, slots=True)
class Stores:
    users: UserStore
    devices: DeviceStore
    sessions: SessionStore
    recovery_codes: RecoveryCodeStore
    invites: InviteStore
    login_addresses: LoginAddressStore
    contacts: ContactStore
    blocks: BlockStore
    chats: ChatStore
    roles: RoleStore
    members: MemberStore
    messages: MessageStore
    recipients: RecipientStore
    reactions: ReactionStore
    pins: PinStore
    events: EventStore
    keys: KeyDirectoryStore
    media: MediaStore
    stories: StoryStore
    stickers: StickerStore
    audit: AuditStore
    stats: StatsStore
    erasure: ErasureStore
    exports: ExportStore
    emails: EmailStore
    chat_invites: ChatInviteStore
    join_requests: JoinRequestStore
    search: SearchStore
    push: PushStore

    @classmethod
    def for_dialect(cls, dialect: str) -> Stores:
        """The stores for "sqlite" or "postgres": the few statements that differ are chosen here, once."""
        return cls(
            users=UserStore(),
            devices=DeviceStore(),
            sessions=SessionStore(),
            recovery_codes=RecoveryCodeStore(),
            invites=InviteStore(),
            login_addresses=LoginAddressStore(),
            contacts=ContactStore(),
            blocks=BlockStore(),
            chats=ChatStore(),
            roles=RoleStore(),
            members=MemberStore(),
            messages=MessageStore(dialect),
            recipients=RecipientStore(),
            reactions=ReactionStore(),
            pins=PinStore(),
            events=EventStore(dialect),
            keys=KeyDirectoryStore(dialect),
            media=MediaStore(),
            stories=StoryStore(),
            stickers=StickerStore(),
            audit=AuditStore(),
            stats=StatsStore(),
            erasure=ErasureStore(),
            exports=ExportStore(),
            emails=EmailStore(),
            chat_invites=ChatInviteStore(),
            join_requests=JoinRequestStore(),
            search=SearchStore.for_dialect(dialect),
            push=PushStore(dialect),
        )
