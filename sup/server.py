"""`sup run`: serve the App until SIGINT/SIGTERM, then shut down in order."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time

from aiohttp import web

from sup import __version__
from sup.app import build_app
from sup.config import Config
from sup.http.access_log import AccessLogger
from sup.http.runner import AppRunner
from sup.observe.logs import configure as configure_logs

log = logging.getLogger("sup")


def setup_logging(config: Config) -> None:
    configure_logs(config.logging.level, config.logging.format, sys.stderr)


async def serve(config: Config) -> None:
    started = time.monotonic()
    app = build_app(config)
    runner = AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("sup.access") if config.logging.access_log else None,
        shutdown_timeout=config.server.shutdown_timeout,
    )
    await runner.setup()  # opens the database, migrates
    try:
        # A deeper accept queue than aiohttp's 128: during a burst of connects (clients reconnecting
        # after a restart) the kernel would drop SYNs, and each drop costs its client a 1 s retry.
        site = web.TCPSite(runner, config.server.host, config.server.port, backlog=config.server.listen_backlog)
        await site.start()
        _settle_garbage_collector()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        host, port = runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "SUP %s listening on http://%s:%d (database: %s, ready in %.0f ms)",
            __version__,
            shown,
            port,
            config.database_url.split(":", 1)[0],
            (time.monotonic() - started) * 1000,
        )
        await stop.wait()
        log.info("shutting down")
    finally:
        # Stops accepting, lets open requests finish (shutdown_timeout), then closes backends.
        await runner.cleanup()
    log.info("stopped")


# Collections of the youngest generation every this many allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def _settle_garbage_collector() -> None:
    """Keep the collector off what start-up built, and let it run less often.

    The modules, the app and its services live as long as the process: frozen, the collector's older
    passes stop walking them. The send path allocates many short-lived objects freed by their reference
    counts, not by the collector: at CPython's default threshold it ran every few sends, 5.6 % of both
    the event loop's and the SQLite writer's samples (py-spy, issue 15); cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run(config: Config) -> None:
    setup_logging(config)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
