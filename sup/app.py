"""The composition root: one Config builds one App that owns every backend.

Backends open in a cleanup context, so whatever was opened is closed again on shutdown,
even when a later step of startup fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiohttp import web

from sup import __version__
from sup.blobs.store import BlobSettings, BlobStore, open_blob_store
from sup.bus.events import EventBus, open_bus
from sup.bus.presence import PresenceTracker, open_presence
from sup.bus.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter, open_rate_limiter
from sup.clock import Clock
from sup.config import Config
from sup.db import migrations
from sup.db.batching import WriteBatcher
from sup.db.database import Database, open_database
from sup.db.install import install_namespace
from sup.db.jobs import DatabaseJobQueue
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
from sup.domain.limits import RequestLimits
from sup.domain.media import MediaService, UrlSigner
from sup.domain.messages import MessageService
from sup.domain.passwords import PasswordHasher
from sup.domain.presence import PresenceService
from sup.domain.push import PushService, PushSettings
from sup.domain.pushtargets import EndpointPolicy
from sup.domain.search import SearchService
from sup.domain.sendrate import SendRate
from sup.domain.stickers import StickerService
from sup.domain.stories import StoryService
from sup.domain.stream import EventStream
from sup.domain.throttle import LoginThrottle
from sup.domain.timeline import Timeline
from sup.domain.tokens import AccessTokens
from sup.domain.totp import TotpBox
from sup.domain.users import UserService
from sup.http.api import hide_admin_paths
from sup.http.handlers.web_client import REGISTRATION
from sup.http.middleware import add_security_headers, cors_middleware
from sup.http.observe import METRICS, METRICS_ACCESS, MetricsAccess, add_request_id, observe_middleware
from sup.http.problems import problems_middleware
from sup.http.routes import ROUTES, add_routes
from sup.http.runner import LISTENER
from sup.jobs.scheduler import JobSettings, Scheduler
from sup.keys import ServerKeys, load_or_create_master, vapid_public_key
from sup.observe.metrics import Metrics, replace_gauge
from sup.ops.schedule import BackupSchedule
from sup.plugins.host import Hooks, load_plugins
from sup.plugins.smtp import SmtpMailer
from sup.plugins.turn import CoturnSecret
from sup.transport import webpush
from sup.transport.services import SERVICES, Services
from sup.transport.webpush import WebPushSender
from sup.ws.calls import CALLS, CallRelay
from sup.ws.gateway import error_frame
from sup.ws.hub import HUB, Hub

log = logging.getLogger("sup")

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
# The open database, for what runs beside the transports (tests, operations); handlers use the services.
DATABASE = web.AppKey("database", Database)
SCHEDULER = web.AppKey("scheduler", Scheduler)
HOOKS = web.AppKey("hooks", Hooks)


async def open_configured_database(config: Config) -> Database:
    return await open_database(
        config.database_url,
        synchronous=config.database.sqlite_synchronous,
        readers=config.database.sqlite_readers,
        pool_min=config.database.pool_min,
        pool_max=config.database.pool_max,
    )


def build_hasher(config: Config) -> PasswordHasher:
    auth = config.auth
    return PasswordHasher(
        memory_kib=auth.argon2_memory_kib,
        time_cost=auth.argon2_time_cost,
        parallelism=auth.argon2_parallelism,
        workers=auth.hash_workers,
    )


def server_keys(config: Config) -> ServerKeys:
    return ServerKeys.derive(load_or_create_master(config.data_dir, config.security.secret_key))


def turn_secret(config: Config) -> str:
    """coturn's static-auth-secret: the configured one, else one derived from the master secret."""
    return config.calls.turn_secret or server_keys(config).turn.hex()


def load_configured_plugins(config: Config, clock: Clock) -> Hooks:
    """The enabled plugins, after the built-in ones their settings turn on (docs/plugins.md)."""
    builtins: list[tuple[str, object]] = []
    if config.email.smtp_host:
        builtins.append(("smtp", SmtpMailer(config.email)))
    if config.calls.turn_uris:
        calls = config.calls
        builtins.append(("turn", CoturnSecret(turn_secret(config), calls.turn_uris, calls.turn_ttl_seconds, clock)))
    if config.push.enabled:
        policy = EndpointPolicy.from_config(config.push)
        key = server_keys(config).vapid_key()
        builtins.append(("webpush", WebPushSender(key, webpush.contact(config), policy, config.push.timeout_seconds)))
    return load_plugins(config.plugins.enabled, config.plugins.settings, builtins)


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
        hooks,
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


@dataclass
class Realtime:
    """The parts that move events: bus, presence, group commit, the event stream and the WebSocket hub;
    and the rate limiter, which counts where the bus is (in Redis, every process spends one budget)."""

    bus: EventBus
    tracker: PresenceTracker
    batcher: WriteBatcher
    stream: EventStream
    hub: Hub
    limiter: MemoryRateLimiter | RedisRateLimiter

    @classmethod
    def build(cls, config: Config, db: Database, stores: Stores, clock: Clock, namespace: str = "") -> Realtime:
        """`namespace`: what the install's Redis keys and channel carry (`bus.namespace` or the install id)."""
        bus = open_bus(config.bus.url, namespace)
        stream = EventStream(db, stores.events, clock, retention_ms=config.websocket.event_retention_days * 86_400_000)
        ws = config.websocket
        hub = Hub(stream, ws.catch_up_seconds, ws.send_timeout_seconds, ws.stall_min_bytes)
        bus.subscribe(hub)
        # The install's namespace keeps its budgets apart from another install's on a shared Redis.
        limiter = open_rate_limiter(config.bus.url, prefix=f"sup:{namespace}:" if namespace else "sup:")
        workers = config.database.batch_workers or (4 if db.dialect == "postgres" else 1)
        presence = open_presence(config.bus.url, namespace)
        return cls(bus, presence, WriteBatcher(db, workers=workers), stream, hub, limiter)

    async def start(self) -> None:
        await self.bus.start()
        await self.tracker.start()
        await self.limiter.start()
        await self.batcher.start()
        await self.hub.start()

    async def close(self) -> None:
        await self.batcher.close()
        await self.tracker.close()
        await self.limiter.close()
        await self.bus.close()


def _sweep_scratch(scratch: Path, older_than: float) -> None:
    """Media jobs copy files here while FFmpeg reads them; a crash mid-job leaves them behind.

    Only old entries go: another process may share the data directory and be mid-job.
    """
    for entry in scratch.iterdir():
        with contextlib.suppress(OSError):
            if entry.lstat().st_mtime < older_than:
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()


@dataclass
class Background:
    """Files and jobs: the blob store and the durable job scheduler."""

    blobs: BlobStore
    scheduler: Scheduler
    backups: BackupSchedule | None = None

    @classmethod
    async def open(cls, config: Config, db: Database, clock: Clock) -> Background:
        # Before the blob store makes <data_dir>/blobs: parents it creates would not be private.
        config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        scratch = config.data_dir / "tmp"
        scratch.mkdir(mode=0o700, exist_ok=True)
        await asyncio.to_thread(_sweep_scratch, scratch, clock.now() - 3600)
        settings = BlobSettings(**msgspec.structs.asdict(config.blobs))
        blobs = await open_blob_store(settings, data_dir=config.data_dir)
        jobs = config.jobs
        scheduler = Scheduler(
            DatabaseJobQueue(db, clock),
            clock,
            JobSettings(
                workers=jobs.workers,
                poll_interval_seconds=jobs.poll_interval_seconds,
                timeout_seconds=max(60.0, config.media.probe_timeout_seconds + 60),
                max_attempts=jobs.max_attempts,
                backoff_base_seconds=jobs.backoff_base_seconds,
                backoff_cap_seconds=jobs.backoff_cap_seconds,
                retention_days=jobs.retention_days,
            ),
        )
        backups = BackupSchedule.from_config(config)
        if backups is not None:
            backups.register(scheduler)
        return cls(blobs, scheduler, backups)

    async def close(self) -> None:
        await self.scheduler.stop()  # running jobs still use the blob store and database
        if self.backups is not None:
            await self.backups.close()
        await self.blobs.close()


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
    access = ChatAccess(stores.members, stores.blocks)
    secrets = server_keys(config)
    policy, settings = EndpointPolicy.from_config(config.push), PushSettings.from_config(config.push)
    vapid = vapid_public_key(secrets.vapid_key())
    push = PushService(db, stores.push, policy, rt.tracker, bg.scheduler, hooks, clock, settings, vapid)
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
        limiter=limiter if limits.enabled else None,
        bundles_per_minute=limits.prekey_bundles_per_user,
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
        limiter=limiter if limits.enabled else None,
        uploads_per_minute=limits.uploads_per_user,
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
        accounts.throttle,
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
            limiter=limiter if limits.enabled else None,
            invites_per_minute=limits.call_invites_per_user,
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
        send_rate=SendRate(limiter if limits.enabled else None, limits.sends_per_device),
        push=push,
    )


async def prepare_schema(config: Config, db: Database, clock: Clock) -> None:
    await migrations.refuse_unfinished_copy(db)
    if config.database.auto_migrate:
        applied = await migrations.migrate_up(db, clock.now_ms())
        for migration in applied:
            log.info("applied migration %04d_%s", migration.version, migration.name)
    else:
        state = await migrations.status(db)
        migrations.refuse_newer(state)
        if state.pending:
            raise migrations.DatabaseError(
                f"{len(state.pending)} migration(s) pending and database.auto_migrate is off: run `sup migrate up`"
            )


def instrument(metrics: Metrics, db: Database, realtime: Realtime, background: Background) -> None:
    """Hand the App's metrics to what reports, and read the rest (pool, sockets, jobs) at scrape time."""
    realtime.batcher.metrics = metrics
    realtime.hub.metrics = metrics
    background.scheduler.metrics = metrics
    hub, scheduler = realtime.hub, background.scheduler
    # Which version each process runs, during a rolling upgrade.
    metrics.gauge(
        "sup_build_info", "Always 1; the version of SUP is its label.", lambda: {(__version__,): 1.0}, ("version",)
    )
    metrics.gauge("sup_websocket_connections", "WebSocket connections open on this process.", lambda: len(hub.sockets))
    metrics.gauge(
        "sup_db_connections",
        "Database connections by state (busy or idle): the Postgres pool, or SQLite's readers and its writer.",
        lambda: {(state,): n for state, n in db.pool_usage().items() if state != "max"},
        labels=("state",),
    )
    metrics.gauge(
        "sup_db_connections_max", "The most database connections there may be.", lambda: db.pool_usage()["max"]
    )
    metrics.gauge("sup_jobs_running_here", "Background jobs this process runs now.", lambda: scheduler.running)
    seen: set[tuple[str, ...]] = set()

    async def count_jobs() -> None:
        replace_gauge(metrics.jobs, {key: float(n) for key, n in (await scheduler.waiting()).items()}, seen)

    metrics.refresh_with(count_jobs)


async def _backends(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    hooks = load_configured_plugins(config, clock)  # a broken plugin stops the start before anything opens
    try:
        await hooks.start()
        db = await open_configured_database(config)
    except BaseException:
        await hooks.close()  # what the plugins that did start opened is closed again
        raise
    app[HOOKS] = hooks
    hasher = realtime = background = services = calls = None
    try:
        await prepare_schema(config, db, clock)
        hasher = build_hasher(config)
        # Every process of one install gets the same namespace from its database; no other install does.
        shared = not config.bus.url.startswith("memory://")
        namespace = config.bus.namespace or (await install_namespace(db, clock.now_ms()) if shared else "")
        realtime = Realtime.build(config, db, Stores.for_dialect(db.dialect), clock, namespace)
        await realtime.start()
        background = await Background.open(config, db, clock)
        app[SERVICES] = services = build_services(config, db, hasher, clock, realtime, background, hooks)
        app[DATABASE] = db
        app[SCHEDULER] = background.scheduler
        app[HUB] = realtime.hub
        app[CALLS] = calls = CallRelay(realtime.hub, services.signalling, error_frame)
        if METRICS in app:
            instrument(app[METRICS], db, realtime, background)
        await services.push.start()
        await background.scheduler.start()
        yield
    finally:
        if background is not None:
            await background.close()
        if calls is not None:
            await calls.close()
        if services is not None:
            await services.signalling.close()  # its last history lines are written before the database closes
        if realtime is not None:
            await realtime.hub.close()  # normally done already, at on_shutdown
            await realtime.close()
        if services is not None:
            await services.emails.close()
            await services.push.close()
        await hooks.close()  # after the realtime parts: no more events to observe
        if hasher is not None:
            hasher.close()
        await db.close()


async def _close_websockets(app: web.Application) -> None:
    # Before the runner waits for open requests: a WebSocket would otherwise hold it open.
    if HUB in app:
        await app[HUB].close()


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    trusted = tuple(ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies)
    metrics = Metrics() if config.metrics.enabled else None
    uploads = frozenset(route.path for route in ROUTES if route.raw_body is not None)
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[
            observe_middleware(metrics, trusted, uploads),
            cors_middleware(config.server.cors_origins),
            problems_middleware,
            hide_admin_paths,
        ],
    )
    if metrics is not None:
        app[METRICS] = metrics
    allow = tuple(ipaddress.ip_network(a, strict=False) for a in config.metrics.allow)
    app[METRICS_ACCESS] = MetricsAccess(config.metrics.enabled, allow, config.metrics.token, trusted)
    app[CONFIG] = config
    app[LISTENER] = config.server  # the runner's timeouts
    app[CLOCK] = clock or Clock()
    app[REGISTRATION] = config.auth.registration  # the web client's sign-up screen shows it
    app.cleanup_ctx.append(_backends)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(add_security_headers)
    app.on_response_prepare.append(add_request_id)
    add_routes(app)
    return app
