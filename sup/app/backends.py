"""The backends the services stand on: database, password hasher, keys, plugins, the realtime parts
(bus, presence, group commit, event stream, WebSocket hub) and the background parts (blobs, jobs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgspec

from sup.blobs.store import BlobSettings, BlobStore, open_blob_store
from sup.bus.events import EventBus, open_bus
from sup.bus.presence import PresenceTracker, open_presence
from sup.bus.process import stop_task
from sup.bus.ratelimit import MemoryRateLimiter, RedisRateLimiter, open_rate_limiter
from sup.clock import Clock
from sup.config import Config
from sup.db import migrations
from sup.db.batching import WriteBatcher
from sup.db.database import Database, open_database
from sup.db.jobs import DatabaseJobQueue
from sup.db.statistics import watch_first_statistics
from sup.db.stores import Stores
from sup.domain.passwords import PasswordHasher
from sup.domain.pushtargets import EndpointPolicy
from sup.domain.stream import EventStream
from sup.jobs.scheduler import JobSettings, Scheduler
from sup.keys import ServerKeys, load_or_create_master
from sup.ops.schedule import BackupSchedule
from sup.plugins.host import Hooks, load_plugins
from sup.plugins.smtp import SmtpMailer
from sup.plugins.turn import CoturnSecret
from sup.transport import webpush
from sup.transport.webpush import WebPushSender
from sup.ws.hub import Hub

log = logging.getLogger("sup")


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
        workers = config.database.batch_workers or default_batch_workers(db.dialect, config.bus.url)
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


def default_batch_workers(dialect: str, bus_url: str) -> int:
    """Group-commit workers when `database.batch_workers` is 0.

    SQLite has one writer: one. Postgres, one process (the in-process bus): four, whose transactions
    overlap their round trips. Postgres with a shared bus (several processes): one each, since
    the lanes of all processes add up; at four processes, four lanes each made transactions half the
    size, and cost a third more CPU per message, than one lane each (docs/performance.md).
    """
    if dialect != "postgres":
        return 1
    return 4 if bus_url.startswith("memory://") else 1


@dataclass
class Background:
    """Files and jobs: the blob store, the durable job scheduler, and (on Postgres) the first statistics."""

    blobs: BlobStore
    scheduler: Scheduler
    backups: BackupSchedule | None = None
    statistics: asyncio.Task[None] | None = None

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
        statistics = None
        if db.dialect == "postgres":
            statistics = asyncio.create_task(watch_first_statistics(db), name="first-statistics")
        return cls(blobs, scheduler, backups, statistics)

    async def close(self) -> None:
        await stop_task(self.statistics)
        await self.scheduler.stop()  # running jobs still use the blob store and database
        if self.backups is not None:
            await self.backups.close()
        await self.blobs.close()


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
