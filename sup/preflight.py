"""What `sup run` will need, checked before it starts: drivers for the configured URL schemes,
and (for `sup config check`) whether the database, Redis and S3 answer.

A configuration can be valid and still unusable: `bus.url = "redis://..."` without the redis
extra, a Postgres that refuses connections, a bucket that does not exist. `sup config check`
says so here, in one line per problem, instead of `sup run` failing later with a traceback.
Nothing here creates anything: no database file, no directory, no bucket.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from sup.config import Config

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True)
class Driver:
    setting: str
    scheme: str
    module: str  # what the backend imports
    install: str


def drivers(config: Config) -> list[Driver]:
    """The driver each configured URL needs."""
    needed = []
    database = config.database_url
    if database.startswith("sqlite://"):
        needed.append(Driver("database.url", "sqlite://", "aiosqlite", "pip install sup-messenger"))
    else:
        needed.append(Driver("database.url", "postgresql://", "asyncpg", "pip install sup-messenger"))
    if config.bus.url.startswith(("redis://", "rediss://")):
        scheme = config.bus.url.split(":", 1)[0] + "://"
        needed.append(Driver("bus.url", scheme, "redis.asyncio", "the redis extra: pip install 'sup-messenger[redis]'"))
    if config.blobs.url.startswith("s3:"):
        needed.append(
            Driver("blobs.url", "s3://", "aiobotocore.session", "the s3 extra: pip install 'sup-messenger[s3]'")
        )
    return needed


def missing_drivers(config: Config) -> dict[str, str]:
    """For each configured URL whose driver cannot be imported, its setting and one line saying so."""
    missing = {}
    for driver in drivers(config):
        try:
            importlib.import_module(driver.module)
        except ImportError as exc:
            missing[driver.setting] = f"{driver.setting}: {driver.scheme} needs {driver.install} ({exc})"
    return missing


def plugin_problem(config: Config) -> str | None:
    """Load the enabled plugins as `sup run` will (without starting them): None, or one line naming the broken one."""
    from sup.plugins.host import PluginError, load_plugins

    try:
        load_plugins(config.plugins.enabled, config.plugins.settings)
    except PluginError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{self.name}: {self.detail}"


async def check_services(
    config: Config,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
    skip: frozenset[str] = frozenset(),
) -> list[Check]:
    """Reach the database, the bus and the blob store, each within `timeout` seconds, all at once.

    `skip` names the ones not to try (their driver is missing: that was said already).
    """
    probes: dict[str, Callable[[], Awaitable[str]]] = {
        "data_dir": lambda: _directory(config.data_dir),
        "database": lambda: _database(config),
        "bus": lambda: _bus(config.bus.url, timeout),
        "blobs": lambda: _blobs(config),
    }
    wanted = [(name, probe) for name, probe in probes.items() if name not in skip]
    return list(await asyncio.gather(*(_bounded(name, probe, timeout) for name, probe in wanted)))


async def _bounded(name: str, probe: Callable[[], Awaitable[str]], timeout: float) -> Check:  # noqa: ASYNC109
    try:
        return Check(name, True, await asyncio.wait_for(probe(), timeout))
    except TimeoutError:
        return Check(name, False, f"no answer within {timeout:g} s")
    except Exception as exc:
        return Check(name, False, one_line(exc))


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class CheckFailed(Exception):
    """A service did not answer as `sup run` needs; the message is one line."""


def _creatable(path: Path) -> str:
    """How `path` stands: there and writable, or creatable by this user. Raises CheckFailed."""
    path = Path(os.path.abspath(path))
    if path.exists():
        if not path.is_dir():
            raise CheckFailed(f"{path} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise CheckFailed(f"{path} is not writable by this user")
        return f"{path} (writable)"
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CheckFailed(f"{path} does not exist and {parent} is not writable by this user: create it first")
    return f"{path} (not there yet: sup run creates it)"


async def _directory(path: Path) -> str:
    return _creatable(path)


def sqlite_missing(config: Config) -> Path | None:
    """The SQLite file, when the configured database is one that does not exist yet."""
    if not config.database_url.startswith("sqlite://"):
        return None
    from sup.db.sqlite import path_from_url

    path = path_from_url(config.database_url)
    return None if path.exists() else path


async def _database(config: Config) -> str:
    from sup.db import migrations
    from sup.db.database import DatabaseError, open_database
    from sup.db.sqlite import path_from_url

    dialect = config.database_url.split(":", 1)[0]
    missing = sqlite_missing(config)
    if missing is not None:
        _creatable(missing.parent)
        pending = len(migrations.discover())
        return f"no database yet at {missing}: {pending} migrations pending (sup run creates it)"
    where = str(path_from_url(config.database_url)) if dialect == "sqlite" else shown(config.database_url)
    try:
        # One connection is enough to ask; the pool settings are for serving.
        db = await open_database(config.database_url, readers=1, pool_min=1, pool_max=1)
    except DatabaseError as exc:
        raise CheckFailed(f"{where}: {one_line(exc)}") from None
    try:
        state = await migrations.status(db)
    finally:
        await db.close()
    if state.unknown:
        raise CheckFailed(f"{where} has migrations this version of SUP does not know ({state.unknown})")
    return f"{dialect} at {where} answers: {len(state.applied)} migrations applied, {len(state.pending)} pending"


async def _bus(url: str, timeout: float) -> str:  # noqa: ASYNC109
    if not url.startswith(("redis://", "rediss://")):
        return f"{url} (in this process: nothing to reach)"
    import redis.asyncio as aioredis

    client = aioredis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        await client.ping()
    except Exception as exc:
        raise CheckFailed(f"{shown(url)}: {one_line(exc)}") from None
    finally:
        await client.aclose()
    return f"redis at {shown(url)} answers"


async def _blobs(config: Config) -> str:
    from sup.blobs.store import BlobSettings, default_url, open_blob_store

    url = config.blobs.url or default_url(config.data_dir)
    if not url.startswith("s3:"):
        parts = urlsplit(url)
        return _creatable(Path(unquote(parts.path)))  # file://: load_config refuses other schemes
    # Never create the bucket from here: HEAD it. A missing bucket is fine when sup run would create it.
    settings = BlobSettings(**{**msgspec.structs.asdict(config.blobs), "s3_create_bucket": False})
    try:
        store = await open_blob_store(settings, data_dir=config.data_dir)
    except Exception as exc:
        if config.blobs.s3_create_bucket and _no_such_bucket(exc):
            return f"{url}: no such bucket yet (sup run creates it: blobs.s3_create_bucket)"
        raise
    await store.close()
    return f"{url}: bucket reachable"


def _no_such_bucket(exc: BaseException) -> bool:
    cause = exc.__cause__
    response = getattr(cause, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code in {"404", "NoSuchBucket", "NotFound"}
