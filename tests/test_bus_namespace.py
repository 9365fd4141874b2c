"""Every Redis key and pub/sub channel carries the install's namespace: installs sharing one
Redis never see each other's events or presence, while the processes of one install (one
database) still share theirs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sup.config import load_config
from sup.db.install import install_namespace
from tests.conftest import (
    FreshPostgres,
    RunningServers,
    Server,
    Socket,
    make_config,
    plain_group,
    require_redis,
    say,
)

SECRET = "n" * 40


@pytest.fixture
async def start(tmp_path_factory) -> AsyncIterator:
    """Start a server on a given database with the Redis bus; all are stopped afterwards."""
    servers = RunningServers()
    redis_url = await require_redis()

    async def start_on(database_url: str, **env: str) -> Server:
        config = make_config(
            str(tmp_path_factory.mktemp("data")),
            database_url,
            SUP_BUS_URL=redis_url,
            SUP_SECRET_KEY=SECRET,
            SUP_WEBSOCKET_CATCH_UP_SECONDS="30",  # deliveries here come over Redis, not from catch-up
            **env,
        )
        return await servers.start(config)

    yield start_on
    await servers.stop_all()


async def another_database(database_url: str, tmp_path: Path, fresh_postgres: FreshPostgres) -> str:
    if database_url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'other.db'}"
    return await fresh_postgres.create()


async def subscribers(channel: bytes) -> int:
    client = aioredis.from_url(await require_redis())
    try:
        return dict(await client.pubsub_numsub(channel))[channel]
    finally:
        await client.aclose()


async def presence_keys(user_id: str) -> list[bytes]:
    client = aioredis.from_url(await require_redis())
    try:
        return [key async for key in client.scan_iter(match=f"sup*{user_id}")]
    finally:
        await client.aclose()


async def namespace_of(server: Server) -> str:
    return await install_namespace(server.db, 0)


async def test_two_installs_on_one_redis_stay_apart_and_one_installs_processes_share(
    start, database_url: str, tmp_path: Path, fresh_postgres: FreshPostgres
):
    first = await start(database_url)
    second_process = await start(database_url)  # the same install: its database
    other_install = await start(await another_database(database_url, tmp_path, fresh_postgres))
    names = [await namespace_of(s) for s in (first, second_process, other_install)]
    assert names[0] == names[1] != names[2], names
    assert await subscribers(f"sup:{names[0]}:events".encode()) == 2  # both processes of the first install
    assert await subscribers(f"sup:{names[2]}:events".encode()) == 1

    # Presence: one install's processes see each other's connections, under the install's own keys.
    api = first.api
    alice, bob = await api.register(), await api.register()
    await plain_group(api, alice, bob)
    sock = await Socket.connect(first.url, api.session, alice.access_token)
    status = await second_process.api.get(f"/api/v1/users/{alice.user_id}/presence", token=bob.access_token)
    assert status.body["online"] is True, status.body
    assert await presence_keys(alice.user_id) == [f"sup:{names[0]}:presence:{alice.user_id}".encode()]
    carol = await other_install.api.register()
    elsewhere = await Socket.connect(other_install.url, other_install.api.session, carol.access_token)
    assert await presence_keys(carol.user_id) == [f"sup:{names[2]}:presence:{carol.user_id}".encode()]
    await sock.close()
    await elsewhere.close()


async def test_a_copy_of_a_database_on_the_same_redis_hears_nothing_of_the_original(start, tmp_path: Path):
    """A restored backup beside the original: the same users, devices and tokens, another file.
    What the original announces must not reach the copy's sockets (once it did: one channel)."""
    original_path = tmp_path / "original.db"
    original = await start(f"sqlite:///{original_path}")
    api = original.api
    alice, bob = await api.register(), await api.register()
    chat = await plain_group(api, alice, bob)
    assert (await say(api, bob, chat, "before the copy")).status == 201

    copy_path = tmp_path / "copy.db"
    await asyncio.to_thread(_copy_sqlite, original_path, copy_path)
    copy = await start(f"sqlite:///{copy_path}")
    # The copy knows alice: her token opens a socket there, for the same device.
    on_copy = await Socket.connect(copy.url, copy.api.session, alice.access_token)
    on_original = await Socket.connect(original.url, api.session, alice.access_token)

    assert (await say(api, bob, chat, "only for the original")).status == 201
    heard = await on_original.until(lambda f: new_message(f) not in (None, "before the copy"))
    assert heard["message"]["body"] == "only for the original"
    assert (await say(copy.api, bob, chat, "marker on the copy")).status == 201
    first = await on_copy.until(lambda f: new_message(f) not in (None, "before the copy"))
    assert first["message"]["body"] == "marker on the copy", first
    await on_copy.close()
    await on_original.close()


def new_message(frame: dict) -> str | None:
    return frame["message"]["body"] if frame["type"] == "message.new" else None


def _copy_sqlite(source: Path, target: Path) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_the_namespace_setting_is_checked():
    config = load_config(None, {"SUP_BUS_NAMESPACE": "prod-1", "SUP_DATABASE_URL": "sqlite:///x.db"})
    assert config.bus.namespace == "prod-1"
    with pytest.raises(Exception, match="namespace"):
        load_config(None, {"SUP_BUS_NAMESPACE": "a b:c", "SUP_DATABASE_URL": "sqlite:///x.db"})
