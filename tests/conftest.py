"""Shared fixtures: a real SUP server on a loopback port, once per backend per module.

The behavioural suite runs against SQLite and Postgres. Postgres is the server on
127.0.0.1:5432 (override with TEST_POSTGRES_URL); each module gets a fresh database.
With CI=true a missing Postgres fails the run instead of skipping.
"""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import os
import re
import secrets
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from sup.app import DATABASE, build_app
from sup.clock import Clock
from sup.config import Config, load_config
from sup.db import migrations
from sup.db.database import Database, open_database
from sup.http.runner import AppRunner
from tests.keys import DeviceKeys
from tests.redis_server import RedisServer
from tests.s3server import MotoS3

POSTGRES_ADMIN = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

_postgres_state: dict[str, Any] = {}


async def _postgres_reachable() -> str | None:
    """None if Postgres answers, else the reason it does not."""
    if "reason" not in _postgres_state:
        try:
            conn = await asyncpg.connect(POSTGRES_ADMIN, timeout=3)
            await conn.close()
            _postgres_state["reason"] = None
        except (OSError, asyncpg.PostgresError) as exc:
            _postgres_state["reason"] = f"no Postgres at {POSTGRES_ADMIN}: {exc}"
    return _postgres_state["reason"]


async def require_postgres() -> None:
    reason = await _postgres_reachable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true requires Postgres: {reason}")
        pytest.skip(reason)


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def require_redis() -> str:
    """The Redis URL for bus tests; skip (or, with CI=true, fail) when none answers."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        reason = f"no Redis at {REDIS_URL}: {exc}"
        if IN_CI:
            pytest.fail(f"CI=true requires Redis: {reason}")
        pytest.skip(reason)
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def redis_server() -> AsyncIterator[RedisServer]:
    """A redis-server of this test's own (tests/redis_server.py), stopped at its end."""
    if shutil.which("redis-server") is None:
        if IN_CI:
            pytest.fail("CI=true requires redis-server for the multi-process tests")
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


class FreshPostgres:
    """Creates throwaway databases and drops them afterwards."""

    def __init__(self) -> None:
        self.names: list[str] = []

    async def create(self) -> str:
        await require_postgres()
        name = f"sup_test_{secrets.token_hex(6)}"
        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.names.append(name)
        return POSTGRES_ADMIN.rsplit("/", 1)[0] + "/" + name

    async def drop_all(self) -> None:
        if not self.names:
            return
        conn = await asyncpg.connect(POSTGRES_ADMIN)
        try:
            for name in self.names:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def fresh_postgres() -> AsyncIterator[FreshPostgres]:
    pg = FreshPostgres()
    yield pg
    await pg.drop_all()


BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="module", params=BACKENDS)
async def database_url(request, tmp_path_factory, fresh_postgres: FreshPostgres) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('db') / 'sup.db'}"
    return await fresh_postgres.create()


@pytest.fixture(scope="module")
async def _kv_database(database_url: str) -> AsyncIterator[Database]:
    database = await open_database(database_url)
    await migrations.migrate_up(database, 0)
    await database.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
    yield database
    await database.close()


@pytest.fixture
async def kv_db(_kv_database: Database) -> Database:
    """This module's database, migrated, with a scratch table `kv (k, v)` (for tests of transactions
    themselves), empty when the test starts."""
    await _kv_database.execute("DELETE FROM kv")
    return _kv_database


class MovableClock(Clock):
    """Real time plus an offset that tests can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def now_ms(self) -> int:
        return int(self.now() * 1000)

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoS3]:
    """An S3-compatible server (moto) on a loopback port, for the whole test session."""
    server = MotoS3().start()
    yield server
    server.stop()


def make_config(data_dir: str, database_url: str, **env: str) -> Config:
    environ = {
        "SUP_DATA_DIR": data_dir,
        "SUP_DATABASE_URL": database_url,
        "SUP_RATELIMIT_ENABLED": "false",
        "SUP_LOGGING_ACCESS_LOG": "false",
        **env,
    }
    return load_config(None, environ)


@dataclass
class Reply:
    status: int
    body: Any
    headers: Any

    @property
    def code(self) -> str | None:
        return self.body.get("code") if isinstance(self.body, dict) else None


class Api:
    """A small HTTP client for tests, speaking to one server the way a client app would."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession) -> None:
        self.base_url = base_url
        self.session = session

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | str | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> Reply:
        headers = dict(headers or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if json is not None:
            data = msgspec.json.encode(json)
            headers.setdefault("Content-Type", "application/json")
        async with self.session.request(
            method, self.base_url + path, data=data, headers=headers, params=params
        ) as response:
            raw = await response.read()
            content_type = response.headers.get("Content-Type", "")
            body = msgspec.json.decode(raw) if raw and "json" in content_type else raw
            return Reply(response.status, body, response.headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Reply:
        return await self.request("POST", path, **kw)

    async def patch(self, path: str, **kw: Any) -> Reply:
        return await self.request("PATCH", path, **kw)

    async def delete(self, path: str, **kw: Any) -> Reply:
        return await self.request("DELETE", path, **kw)

    async def register(self, username: str | None = None, password: str = "correct horse battery", **extra: Any):
        username = username or new_username()
        reply = await self.post("/api/v1/auth/register", json={"username": username, "password": password, **extra})
        assert reply.status == 201, reply.body
        return Account(username=username, password=password, **_session_fields(reply.body))

    async def upload(self, who: Account, data: bytes, **params: Any) -> Reply:
        """POST /api/v1/media/upload with the raw bytes as the body."""
        query = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}
        return await self.post(
            "/api/v1/media/upload",
            data=data,
            token=who.access_token,
            headers={"Content-Type": "application/octet-stream"},
            params=query,
        )

    async def put_chunk(self, who: Account, upload_id: str, index: int | str, data: bytes) -> Reply:
        """PUT one chunk of a resumable upload, as the raw body (`index` as it goes into the path)."""
        return await self.request(
            "PUT",
            f"/api/v1/media/uploads/{upload_id}/chunks/{index}",
            data=data,
            token=who.access_token,
            headers={"Content-Type": "application/octet-stream"},
        )

    async def login(self, account: Account, **extra: Any) -> Reply:
        return await self.post(
            "/api/v1/auth/login", json={"username": account.username, "password": account.password, **extra}
        )

    async def publish_keys(self, *devices: Account | str) -> None:
        """Publish E2E keys for these devices (accounts or access tokens): encrypted chats take messages
        only for devices that have published keys."""
        for device in devices:
            token = device if isinstance(device, str) else device.access_token
            reply = await self.post("/api/v1/crypto/keys", json=DeviceKeys().publish_body(one_time=1), token=token)
            assert reply.status == 200, reply.body

    async def new_device(self, account: Account, **extra: Any) -> Account:
        """Log the account in again: a second device of the same user."""
        reply = await self.login(account, **extra)
        assert reply.status == 200, reply.body
        return Account(username=account.username, password=account.password, **_session_fields(reply.body))


def _session_fields(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "user_id": body["user"]["id"],
        "device_id": body["device_id"],
        "access_token": body["access_token"],
        "refresh_token": body["refresh_token"],
    }


@dataclass
class Account:
    username: str
    password: str
    user_id: str
    device_id: str
    access_token: str
    refresh_token: str


def png_bytes(width: int = 64, height: int = 48, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def new_username() -> str:
    return f"u_{uuid.uuid4().hex[:12]}"


@dataclass
class Server:
    api: Api
    clock: MovableClock
    config: Config
    url: str
    app: web.Application

    @property
    def db(self) -> Database:
        return self.app[DATABASE]


ServerFactory = Callable[..., Any]


class SupTestServer(TestServer):
    """aiohttp's test server, on the runner `sup run` uses (problem+json for what the HTTP parser refuses)."""

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        # aiohttp's test server cancels a handler whose client went away; `sup run` lets it finish (a
        # WebSocket session ends with its cleanup and is counted as 101, not as a cancelled 499).
        kwargs["handler_cancellation"] = False
        return AppRunner(self.app, **kwargs)


class RunningServers:
    """Servers started from configs, each on a loopback port with its own clock and client session."""

    def __init__(self) -> None:
        self._started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(self, config: Config) -> Server:
        clock = MovableClock()
        app = build_app(config, clock=clock)
        test_server = SupTestServer(app, host="127.0.0.1")
        await test_server.start_server()
        session = aiohttp.ClientSession()
        self._started.append((test_server, session))
        url = str(test_server.make_url("")).rstrip("/")
        return Server(Api(url, session), clock, config, url, app)

    async def stop_all(self) -> None:
        for test_server, session in reversed(self._started):
            await session.close()
            await test_server.close()


@pytest.fixture(scope="module")
async def server_factory(database_url: str, tmp_path_factory) -> AsyncIterator[ServerFactory]:
    """Start servers (on this module's database) with extra SUP_* settings."""
    servers = RunningServers()

    async def start(**env: str) -> Server:
        return await servers.start(make_config(str(tmp_path_factory.mktemp("data")), database_url, **env))

    yield start
    await servers.stop_all()


@pytest.fixture(scope="module")
async def server(server_factory: ServerFactory) -> Server:
    return await server_factory(SUP_SECRET_KEY="k" * 40)


@pytest.fixture(scope="module")
async def api(server: Server) -> Api:
    return server.api


@pytest.fixture
async def people(server: Server, tmp_path) -> AsyncIterator[Any]:
    """SDK clients on this module's server (tests/people.py), closed at the end of the test."""
    from tests.people import People  # it imports this module

    group = People(server, tmp_path)
    yield group
    await group.close()


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is alive once every module is imported lives for the whole run: kept out of the garbage
    collector's full passes, which otherwise walk it again and again as the run's heap grows."""
    gc.collect()
    gc.freeze()


class _CollectorPauses:
    """When the garbage collector ran (end, seconds): a long test session's heap makes a full
    collection take seconds on a loaded machine, in whichever callback happens to allocate then."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            self._started = now
        else:
            self.pauses.append((now, now - self._started))

    def within(self, start: float, end: float) -> float:
        return sum(seconds for ended, seconds in self.pauses if start <= ended <= end)


class _SlowCallbacks(logging.Handler):
    def __init__(self, threshold: float, collector: _CollectorPauses) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []
        self._threshold = threshold
        self._collector = collector

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        took = re.search(r" took (\d+(?:\.\d+)?) seconds$", message)
        if message.startswith("Executing") and took:
            end = time.perf_counter()  # emitted right after the callback returned
            collecting = self._collector.within(end - float(took[1]), end)
            if float(took[1]) - collecting >= self._threshold:
                self.seen.append(f"{message} ({collecting:.3f} s of it collecting garbage)")


@pytest.fixture(autouse=True)
async def no_blocking_the_event_loop():
    """Fail a test during which one callback held the event loop for too long.

    asyncio's debug mode reports every callback slower than slow_callback_duration;
    hashing, SQLite and file work must run elsewhere (threads, executors).
    """
    loop = asyncio.get_running_loop()
    # Wall-clock time: on a machine loaded beyond its cores a callback is descheduled mid-run.
    threshold = BLOCKING_THRESHOLD * overload()
    collector = _CollectorPauses()
    handler = _SlowCallbacks(threshold, collector)
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    gc.callbacks.append(collector)
    was_debug = loop.get_debug()
    loop.set_debug(True)
    loop.slow_callback_duration = threshold
    try:
        yield
    finally:
        loop.set_debug(was_debug)
        logger.removeHandler(handler)
        gc.callbacks.remove(collector)
    assert not handler.seen, f"the event loop was blocked: {handler.seen}"


# Generous, because a loaded 2-core machine stretches everything: this catches gross
# blocking (a synchronous query over a table, a sleep). A single password hash on the
# loop (~25 ms) is caught functionally instead, by test_parallel_logins_do_not_stall_the_server.
BLOCKING_THRESHOLD = 0.5


def overload(most: float = 10.0) -> float:
    """How far beyond its cores the machine is loaded (1.0 when it is not), for tests that time
    wall-clock intervals: a process that waits its turn for a core sees time pass without running."""
    return min(most, max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1)))


class Socket:
    """A WebSocket client speaking SUP's protocol (JSON, or msgpack under `sup.msgpack`)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, use_msgpack: bool) -> None:
        self.ws = ws
        self.msgpack = use_msgpack
        self.ready: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        base_url: str,
        session: aiohttp.ClientSession,
        token: str,
        *,
        cursor: int | None = None,
        use_msgpack: bool = False,
    ) -> Socket:
        ws = await session.ws_connect(
            base_url + "/api/v1/ws", protocols=("sup.msgpack",) if use_msgpack else (), heartbeat=None
        )
        sock = cls(ws, use_msgpack)
        frame: dict[str, Any] = {"type": "authenticate", "token": token}
        if cursor is not None:
            frame["cursor"] = cursor
        await sock.send(frame)
        sock.ready = await sock.recv()
        assert sock.ready["type"] == "ready", sock.ready
        return sock

    async def send(self, frame: dict[str, Any]) -> None:
        if self.msgpack:
            await self.ws.send_bytes(msgspec.msgpack.encode(frame))
        else:
            await self.ws.send_str(msgspec.json.encode(frame).decode())

    async def recv(self, timeout: float = 10) -> dict[str, Any]:
        message = await self.ws.receive(timeout=timeout)
        if message.type == aiohttp.WSMsgType.TEXT:
            return msgspec.json.decode(message.data)
        if message.type == aiohttp.WSMsgType.BINARY:
            return msgspec.msgpack.decode(message.data)
        raise ConnectionError(f"socket closed: {message.type} {self.ws.close_code} {message.extra}")

    async def until(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        """The first frame that matches, skipping the others."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no matching frame")
            frame = await self.recv(timeout=left)
            if predicate(frame):
                return frame

    async def events(self, count: int, event_type: str | None = None, timeout: float = 10) -> list[dict[str, Any]]:
        """The next `count` durable events (of one type, if given), in arrival order."""
        found = []
        while len(found) < count:
            frame = await self.until(lambda f: f.get("cursor") is not None, timeout)
            if event_type is None or frame["type"] == event_type:
                found.append(frame)
        return found

    async def ack(self, cursor: int) -> None:
        await self.send({"type": "ack", "cursor": cursor})

    async def close(self) -> None:
        await self.ws.close()


async def connect(server: Server, account: Account | dict, **kw: Any) -> Socket:
    """A socket of an account (or of a login's answer) on this server, authenticated and ready."""
    token = account.access_token if isinstance(account, Account) else account["access_token"]
    return await Socket.connect(server.url, server.api.session, token, **kw)


async def plain_group(api: Api, owner: Account, *members: Account, title: str = "group") -> str:
    """An unencrypted group (messages carry plaintext bodies): the chat id."""
    reply = await api.post(
        "/api/v1/chats",
        json={"type": "group", "member_ids": [m.user_id for m in members], "title": title, "encrypted": False},
        token=owner.access_token,
    )
    assert reply.status == 201, reply.body
    return reply.body["id"]


async def two_in_a_group(api: Api) -> tuple[Account, Account, str]:
    """Two new accounts in an unencrypted group the first one made: (alice, bob, the chat id)."""
    alice, bob = await api.register(), await api.register()
    return alice, bob, await plain_group(api, alice, bob)


async def send(api: Api, who: Account, chat_id: str, client_id: str | None = None, **fields: Any) -> Reply:
    """POST /api/v1/messages with these fields (`kind`, `body`, `media_id`...); a fresh client_id unless given."""
    return await api.post(
        "/api/v1/messages",
        json={"chat_id": chat_id, "client_id": client_id or str(uuid.uuid4()), **fields},
        token=who.access_token,
    )


async def say(api: Api, who: Account, chat_id: str, body: str, client_id: str | None = None) -> Reply:
    return await send(api, who, chat_id, client_id, body=body)
