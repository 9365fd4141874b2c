"""The domain services, each built from the stores and services it uses (and `sup admin`'s own few)."""

from __future__ import annotations

import ipaddress

from sup.app.backends import Background, Realtime, server_keys
from sup.bus.ratelimit import MemoryRateLimiter, RateLimiter
from sup.clock import Clock
from sup.config import Config
from sup.db.database import Database
from sup.db.stores import Stores
from sup.domain.access import ChatAccess
from sup.domain.accounts import AccountService
from sup.domain.admin import AdminService
from sup.domain.attachments import MediaAttachments
from sup.domain.audit import AuditLog
from sup.domain.calls import CallService
from sup.domain.callsignal import CallSignalling
from sup.domain.chats import ChatService
from sup.domain.emails import EmailService
from sup.domain.erasure import AccountErasure
from sup.domain.events import EventWriter, SilentAnnouncer
from sup.domain.exports import ExportService, ExportSources
from sup.domain.health import Health
from sup.domain.joining import JoinService
from sup.domain.keychanges import KeyChanges
from sup.domain.keydirectory import KeyDirectory
from sup.domain.limits import Budget, RequestLimits
from sup.domain.media import MediaService, UrlSigner
from sup.domain.messages import MessageService
from sup.domain.passwords import PasswordHasher
from sup.domain.presence import PresenceService
from sup.domain.push import PushService
from sup.domain.pushtargets import EndpointPolicy
from sup.domain.search import SearchService
from sup.domain.sendrate import SendRate
from sup.domain.stickers import StickerService
from sup.domain.stories import StoryService
from sup.domain.throttle import LoginThrottle
from sup.domain.timeline import Timeline
from sup.domain.tokens import AccessTokens
from sup.domain.totp import TotpBox
from sup.domain.users import UserService
from sup.keys import ServerKeys, vapid_public_key
from sup.plugins.host import Hooks
from sup.transport.services import Services


def build_accounts(
    config: Config,
    db: Database,
    stores: Stores,
    hasher: PasswordHasher,
    clock: Clock,
    key_changes: KeyChanges,
    keys: ServerKeys,
    limiter: RateLimiter,
    hooks: Hooks | None = None,
) -> AccountService:
    return AccountService(
        db,
        stores.users,
        stores.devices,
        stores.sessions,
        stores.recovery_codes,
        stores.invites,
        hasher,
        AccessTokens(keys.access_tokens, keys.refresh_rotation),
        TotpBox(keys.totp_encryption, keys.recovery_codes),
        LoginThrottle(
            db,
            limiter,
            config.ratelimit,
            stores.login_addresses,
            stores.sessions,
            stores.devices,
            keys.login_addresses,
            clock,
            remember_seconds=config.auth.refresh_token_ttl,
        ),
        clock,
        config.auth,
        key_changes,
        hooks or Hooks.none(),
    )


def build_admin_accounts(
    config: Config, db: Database, hasher: PasswordHasher, clock: Clock, hooks: Hooks | None = None
) -> AccountService:
    """Accounts for `sup admin`, with no server running in this process."""
    stores = Stores.for_dialect(db.dialect)
    writer = EventWriter(stores.events, SilentAnnouncer())
    key_changes = KeyChanges(writer, stores.members, stores.devices)
    keys = server_keys(config)
    return build_accounts(config, db, stores, hasher, clock, key_changes, keys, MemoryRateLimiter(), hooks)


def build_admin(config: Config, db: Database, stores: Stores, key_changes: KeyChanges, clock: Clock) -> AdminService:
    audit = AuditLog(db, stores.audit)
    return AdminService(
        db,
        stores.users,
        stores.devices,
        stores.recovery_codes,
        stores.invites,
        stores.stats,
        audit,
        key_changes,
        clock,
        quota_bytes=config.media.quota_bytes,
    )


def build_admin_service(config: Config, db: Database, clock: Clock) -> AdminService:
    """Administration for `sup admin`, with no server running in this process (changes are audited all the same)."""
    stores = Stores.for_dialect(db.dialect)
    key_changes = KeyChanges(EventWriter(stores.events, SilentAnnouncer()), stores.members, stores.devices)
    return build_admin(config, db, stores, key_changes, clock)


def build_services(
    config: Config,
    db: Database,
    hasher: PasswordHasher,
    clock: Clock,
    rt: Realtime,
    bg: Background,
    hooks: Hooks | None = None,
) -> Services:
    """Every domain service, each given the stores and services it uses and nothing else."""
    stores = Stores.for_dialect(db.dialect)
    hooks = hooks or Hooks.none()
    limiter = rt.limiter  # keys are prefixed by what they count
    limits = config.ratelimit

    def budget(per_minute: int) -> Budget:
        return Budget(limiter if limits.enabled else None, per_minute)

    access = ChatAccess(stores.members, stores.blocks)
    secrets = server_keys(config)
    policy = EndpointPolicy.from_config(config.push)
    vapid = vapid_public_key(secrets.vapid_key())
    push = PushService(db, stores.push, policy, rt.tracker, bg.scheduler, hooks, clock, config.push, vapid)
    # New messages reach push after the bus: a device with no socket anywhere is woken that way.
    writer = EventWriter(stores.events, push.announcer(rt.bus))
    timeline = Timeline(writer, stores.chats, stores.members, stores.messages, stores.recipients, stores.devices)
    attachments = MediaAttachments(stores.media, stores.stickers, config.media)
    key_changes = KeyChanges(writer, stores.members, stores.devices)
    keys = KeyDirectory(
        db,
        stores.keys,
        stores.members,
        access,
        writer,
        key_changes,
        clock,
        low_threshold=config.crypto.prekey_low_threshold,
        max_one_time=config.crypto.max_one_time_prekeys,
        signed_prekey_grace_ms=config.crypto.signed_prekey_grace_days * 86_400_000,
        bundle_budget=budget(limits.prekey_bundles_per_user),
    )
    media = MediaService(
        db,
        stores.media,
        stores.devices,
        bg.blobs,
        bg.scheduler,
        writer,
        clock,
        config.media,
        UrlSigner(secrets.media_urls),
        config.data_dir / "tmp",
        budget(limits.uploads_per_user),
    )
    chats = ChatService(
        db,
        stores.chats,
        stores.members,
        stores.roles,
        stores.users,
        stores.messages,
        access,
        timeline,
        attachments,
        keys,
        clock,
    )
    messages = MessageService(
        db,
        stores.chats,
        stores.members,
        stores.devices,
        stores.messages,
        stores.recipients,
        stores.reactions,
        stores.pins,
        access,
        timeline,
        attachments,
        rt.batcher,
        keys,
        clock,
        hooks,
    )
    presence = PresenceService(db, stores.users, stores.contacts, stores.members, access, rt.tracker, rt.bus, clock)
    stories = StoryService(
        db,
        stores.stories,
        stores.users,
        stores.devices,
        stores.media,
        attachments,
        media.files,
        writer,
        bg.scheduler,
        clock,
        config.stories,
    )
    stickers = StickerService(db, stores.stickers, stores.devices, attachments, writer, clock, config.stickers)
    bg.scheduler.every("prune-events", 3600, rt.stream.prune)
    accounts = build_accounts(config, db, stores, hasher, clock, key_changes, secrets, limiter, hooks)
    audit = AuditLog(db, stores.audit)
    erasure = AccountErasure(
        db,
        stores.users,
        stores.devices,
        stores.members,
        stores.erasure,
        stores.exports,
        stores.media,
        accounts,
        chats,
        messages,
        media.files,
        bg.blobs,
        key_changes,
        audit,
        bg.scheduler,
        clock,
    )
    sources = ExportSources(
        users=stores.users,
        devices=stores.devices,
        emails=stores.emails,
        contacts=stores.contacts,
        blocks=stores.blocks,
        chats=stores.chats,
        members=stores.members,
        messages=stores.messages,
        media=stores.media,
        stories=stores.stories,
        stickers=stores.stickers,
        blobs=bg.blobs,
    )
    exports = ExportService(db, stores.exports, sources, media.files, bg.scheduler, clock, config.data_dir / "tmp")
    emails = EmailService(
        db,
        stores.users,
        stores.devices,
        stores.emails,
        hasher,
        accounts,
        key_changes,
        hooks,
        limiter,
        limits,
        config.email,
        config.server.public_url,
        clock,
    )
    return Services(
        accounts=accounts,
        users=UserService(db, stores.users, stores.contacts, stores.blocks, attachments, clock),
        chats=chats,
        messages=messages,
        keys=keys,
        media=media,
        stories=stories,
        stickers=stickers,
        presence=presence,
        stream=rt.stream,
        health=Health(db),
        max_body_bytes=config.server.max_body_bytes,
        trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies),
        ws=config.websocket,
        public_url=config.server.public_url.rstrip("/"),
        admin=build_admin(config, db, stores, key_changes, clock),
        audit=audit,
        erasure=erasure,
        exports=exports,
        calls=CallService(db, access, stores.users, hooks, secrets.call_rooms),
        signalling=CallSignalling(
            db,
            access,
            stores.members,
            timeline,
            rt.bus,
            clock,
            ring_timeout_seconds=config.calls.ring_timeout_seconds,
            invite_budget=budget(limits.call_invites_per_user),
        ),
        emails=emails,
        search=SearchService(db, stores.search, stores.members, access),
        joining=JoinService(
            db,
            stores.chats,
            stores.members,
            stores.roles,
            stores.chat_invites,
            stores.join_requests,
            access,
            timeline,
            chats,
            clock,
        ),
        limits=RequestLimits(limiter, limits),
        send_rate=SendRate(budget(limits.sends_per_device)),
        push=push,
    )
