"""The composition root: one Config builds one App that owns every backend.

Backends open in a cleanup context, so whatever was opened is closed again on shutdown,
even when a later step of startup fails.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from sup.bus.ratelimit import MemoryRateLimiter
from sup.clock import Clock
from sup.config import Config
from sup.domain.accounts import AccountService
from sup.domain.passwords import PasswordHasher
from sup.domain.tokens import AccessTokens
from sup.domain.totp import TotpBox
from sup.domain.users import UserService
from sup.http.middleware import add_security_headers, cors_middleware
from sup.http.problems import problems_middleware
from sup.http.routes import add_routes
from sup.http.services import SERVICES, Services
from sup.keys import ServerKeys, load_or_create_master
from sup.storage import migrations
from sup.storage.database import Database, open_database

log = logging.getLogger("sup")

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)


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


def build_services(config: Config, db: Database, hasher: PasswordHasher, clock: Clock) -> Services:
    keys = ServerKeys.derive(load_or_create_master(config.data_dir, config.security.secret_key))
    accounts = AccountService(
        db,
        hasher,
        AccessTokens(keys.access_tokens),
        TotpBox(keys.totp_encryption, keys.recovery_codes),
        MemoryRateLimiter(),
        clock,
        config.auth,
        config.ratelimit,
    )
    return Services(
        accounts=accounts,
        users=UserService(db, clock),
        db=db,
        max_body_bytes=config.server.max_body_bytes,
        trusted_proxies=tuple(ipaddress.ip_network(p, strict=False) for p in config.server.trusted_proxies),
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
    hasher = None
    try:
        await prepare_schema(config, db, clock)
        hasher = build_hasher(config)
        app[SERVICES] = build_services(config, db, hasher, clock)
        yield
    finally:
        if hasher is not None:
            hasher.close()
        await db.close()


def build_app(config: Config, *, clock: Clock | None = None) -> web.Application:
    app = web.Application(
        client_max_size=config.server.max_body_bytes,
        middlewares=[cors_middleware(config.server.cors_origins), problems_middleware],
    )
    app[CONFIG] = config
    app[CLOCK] = clock or Clock()
    app.cleanup_ctx.append(_backends)
    app.on_response_prepare.append(add_security_headers)
    add_routes(app)
    return app
