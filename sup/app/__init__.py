"""The composition root: one Config builds one App that owns every backend.

Backends open in a cleanup context, so whatever was opened is closed again on shutdown,
even when a later step of startup fails.

The package: `backends` opens what the services stand on, `services` builds the domain services,
and this module puts them in the aiohttp application and owns their lifetime.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

from aiohttp import web

from sup import __version__
from sup.app.backends import (
    Background,
    Realtime,
    build_hasher,
    load_configured_plugins,
    open_configured_database,
    prepare_schema,
    server_keys,
    turn_secret,
)
from sup.app.services import build_admin_accounts, build_admin_service, build_services
from sup.clock import Clock
from sup.config import Config
from sup.db.database import Database
from sup.db.install import install_namespace
from sup.db.stores import Stores
from sup.http.api import hide_admin_paths
from sup.http.handlers.web_client import REGISTRATION
from sup.http.middleware import add_security_headers, cors_middleware
from sup.http.observe import METRICS, METRICS_ACCESS, MetricsAccess, add_request_id, observe_middleware
from sup.http.problems import problems_middleware
from sup.http.routes import ROUTES, add_routes
from sup.http.runner import LISTENER
from sup.jobs.scheduler import Scheduler
from sup.observe.metrics import Metrics, replace_gauge
from sup.plugins.host import Hooks
from sup.transport.services import SERVICES
from sup.ws.calls import CALLS, CallRelay
from sup.ws.gateway import error_frame
from sup.ws.hub import HUB

CONFIG = web.AppKey("config", Config)
CLOCK = web.AppKey("clock", Clock)
# The open database, for what runs beside the transports (tests, operations); handlers use the services.
DATABASE = web.AppKey("database", Database)
SCHEDULER = web.AppKey("scheduler", Scheduler)
HOOKS = web.AppKey("hooks", Hooks)


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


__all__ = [
    "CLOCK",
    "CONFIG",
    "DATABASE",
    "HOOKS",
    "SCHEDULER",
    "SERVICES",
    "build_admin_accounts",
    "build_admin_service",
    "build_app",
    "build_hasher",
    "load_configured_plugins",
    "open_configured_database",
    "prepare_schema",
    "server_keys",
    "turn_secret",
]
