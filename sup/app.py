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
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiohttp import web

from sup.blobs.store import BlobSettings, BlobStore, open_blob_store
from sup.bus.events import EventBus, open_bus
from sup.bus.presence import PresenceTracker, open_presence
from sup.bus.ratelimit import MemoryRateLimiter
from sup.clock import Clock
from sup.config import Config
from sup.db import migrations
from sup.db.batching import WriteBatcher
from sup.db.database import Database, open_database
from sup.db.jobs import DatabaseJobQueue
from sup.db.stores import Stores
from sup.delivery import Delivery
from sup.domain.access import ChatAccess
from sup.domain.accounts import AccountService
from sup.domain.attachments import MediaAttachments
from sup.domain.chats import ChatService
from sup.domain.events import EventWriter
from sup.domain.health import Health
from sup.domain.joining import JoinService
from sup.domain.keychanges import KeyChanges
from sup.domain.keydirectory import KeyDirectory
from sup.domain.media import MediaService, UrlSigner
from sup.domain.messages import MessageService
from sup.domain.passwords import PasswordHasher
from sup.domain.presence import PresenceService
from sup.domain.search import SearchService
from sup.domain.stream import EventStream
from sup.domain.timeline import Timeline
from sup.domain.tokens import AccessTokens
from sup.domain.totp import TotpBox
from sup.domain.users import UserService
from sup.http.middleware import add_security_headers, cors_middleware
from sup.http.problems import problems_middleware
from sup.http.routes import add_routes
from sup.jobs.scheduler import JobSettings, Scheduler
from sup.keys import ServerKeys, load_or_create_master
from sup.transport.services import SERVICES, Services
from sup.ws.hub import HUB, Hub

log = logging.getLogger("sup")

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
# The open database, for what runs beside the transports (tests, operations); handlers use the services.
DATABASE = web.AppKey("database", Database)
SCHEDULER = web.AppKey("scheduler", Scheduler)


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


class _Silent:
    """An announcer for commands that run no event delivery (`sup admin`): events are still stored,
    and a running server's catch-up delivers them."""

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        return None


def build_accounts(
    config: Config,
    db: Database,
    stores: Stores,
    hasher: PasswordHasher,
    clock: Clock,
    key_changes: KeyChanges,
    keys: ServerKeys,
    limiter: MemoryRateLimiter,
) -> AccountService:
    return AccountService(
        db,
        stores.users,
        stores.devices,
        stores.sessions,
        stores.recovery_codes,
        stores.invites,
        hasher,
        AccessTokens(keys.access_tokens),
        TotpBox(keys.totp_encryption, keys.recovery_codes),
        limiter,
        clock,
        config.auth,
        config.ratelimit,
        key_changes,
    )


def build_admin_accounts(config: Config, db: Database, hasher: PasswordHasher, clock: Clock) -> AccountService:
    """Accounts for `sup admin`, with no server running in this process."""
    stores = Stores.for_dialect(db.dialect)
    writer = EventWriter(stores.events, _Silent())
    key_changes = KeyChanges(writer, stores.members, stores.devices)
    return build_accounts(config, db, stores, hasher, clock, key_changes, server_keys(config), MemoryRateLimiter())


@dataclass
class Realtime:
    """The parts that move events: bus, presence, group commit, the event stream and the WebSocket hub."""

    bus: EventBus
    tracker: PresenceTracker
    batcher: WriteBatcher
    stream: EventStream
    hub: Hub

    @classmethod
    def build(cls, config: Config, db: Database, stores: Stores, clock: Clock) -> Realtime:
        bus = open_bus(config.bus.url)
        stream = EventStream(db, stores.events, clock, retention_ms=config.websocket.event_retention_days * 86_400_000)
        hub = Hub(stream, config.websocket.catch_up_seconds, config.websocket.send_timeout_seconds)
        bus.subscribe(hub)
        return cls(bus, open_presence(config.bus.url), WriteBatcher(db), stream, hub)

    async def start(self) -> None:
        await self.bus.start()
        await self.tracker.start()
        await self.batcher.start()
        await self.hub.start()

    async def close(self) -> None:
        await self.batcher.close()
        await self.tracker.close()
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
        return cls(blobs, scheduler)

    async def close(self) -> None:
        await self.scheduler.stop()  # running jobs still use the blob store and database
        await self.blobs.close()


def build_services(
    config: Config, db: Database, hasher: PasswordHasher, clock: Clock, rt: Realtime, bg: Background
) -> Services:
    """Every domain service, each given the stores and services it uses and nothing else."""
    stores = Stores.for_dialect(db.dialect)
    limiter = MemoryRateLimiter()  # one per process; keys are prefixed by what they count
    limits = config.ratelimit
    access = ChatAccess(stores.members, stores.blocks)
    writer = EventWriter(stores.events, rt.bus)
    timeline = Timeline(writer, stores.chats, stores.members, stores.messages, stores.recipients, stores.devices)
    attachments = MediaAttachments(stores.media)
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
    secrets = server_keys(config)
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
    )
    presence = PresenceService(db, stores.users, stores.contacts, stores.members, access, rt.tracker, rt.bus, clock)
    bg.scheduler.every("prune-events", 3600, rt.stream.prune)
    return Services(
        accounts=build_accounts(config, db, stores, hasher, clock, key_changes, secrets, limiter),
        users=UserService(db, stores.users, stores.contacts, stores.blocks, attachments, clock),
        chats=chats,
        messages=messages,
        keys=keys,
        media=media,
        presence=presence,
        stream=rt.stream,
        health=Health(db),
        max_body_bytes=config.server.max_body_bytes,
        trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies),
        ws=config.websocket,
        public_url=config.server.public_url.rstrip("/"),
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
    )


async def prepare_schema(config: Config, db: Database, clock: Clock) -> None:
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


async def _backends(app: web.Application) -> AsyncIterator[None]:
    config, clock = app[CONFIG], app[CLOCK]
    db = await open_configured_database(config)
    hasher = realtime = background = None
    try:
        await prepare_schema(config, db, clock)
        hasher = build_hasher(config)
        realtime = Realtime.build(config, db, Stores.for_dialect(db.dialect), clock)
        await realtime.start()
        background = await Background.open(config, db, clock)
        app[SERVICES] = build_services(config, db, hasher, clock, realtime, background)
        app[DATABASE] = db
        app[SCHEDULER] = background.scheduler
        app[HUB] = realtime.hub
        await background.scheduler.start()
        yield
    finally:
        if background is not None:
            await background.close()
        if realtime is not None:
            await realtime.hub.close()  # normally done already, at on_shutdown
            await realtime.close()
        if hasher is not None:
            hasher.close()
        await db.close()


async def _close_websockets(app: web.Application) -> None:
    # Before the runner waits for open requests: a WebSocket would otherwise hold it open.
    if HUB in app:
        await app[HUB].close()


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[cors_middleware(config.server.cors_origins), problems_middleware],
    )
    app[CONFIG] = config
    app[CLOCK] = clock or Clock()
    app.cleanup_ctx.append(_backends)
    app.on_shutdown.append(_close_websockets)
    app.on_response_prepare.append(add_security_headers)
    add_routes(app)
    return app
