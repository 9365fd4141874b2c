"""The real `sup` command, as a self-hoster runs it: a subprocess on a loopback port."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import stat
from pathlib import Path

import aiohttp
import pytest

from sup.db import migrations
from tests.conftest import Api, Socket, new_username
from tests.processes import Running, sup, sup_env


async def test_run_serves_and_stops_cleanly(database_url: str, tmp_path: Path):
    data_dir = tmp_path / "data"
    running = await Running.start(sup_env(data_dir, database_url, SUP_LOGGING_ACCESS_LOG="true"))
    tokens = []
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(running.url, session)
            assert (await api.get("/health")).status == 200
            assert (await api.get("/health/ready")).status == 200
            account = await api.register()
            login = await api.login(account)
            refreshed = await api.post("/api/v1/auth/refresh", json={"refresh_token": login.body["refresh_token"]})
            assert refreshed.status == 200
            await api.get("/api/v1/users/me", token=refreshed.body["access_token"])
            tokens = [
                account.access_token,
                account.refresh_token,
                login.body["access_token"],
                login.body["refresh_token"],
                refreshed.body["access_token"],
                refreshed.body["refresh_token"],
            ]
    finally:
        code = await running.stop()
    assert code == 0, running.log
    assert "POST /api/v1/auth/refresh 200" in running.log  # the access log is on...
    for token in tokens:  # ...and not one token reached it
        assert token not in running.log
    assert "Traceback" not in running.log
    assert "stopped" in running.log
    assert stat.S_IMODE((data_dir / "secrets.json").stat().st_mode) == 0o600
    if database_url.startswith("sqlite"):
        # The database holds password hashes: only SUP's user may read it.
        db_file = Path(database_url.removeprefix("sqlite:///"))
        assert stat.S_IMODE(db_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


async def test_sigint_also_stops_cleanly(tmp_path: Path):
    running = await Running.start(sup_env(tmp_path))
    assert await running.stop(signal.SIGINT) == 0
    assert "stopped" in running.log


async def test_open_requests_finish_on_sigterm(tmp_path: Path):
    running = await Running.start(sup_env(tmp_path))
    async with aiohttp.ClientSession() as session:
        api = Api(running.url, session)
        account = await api.register()
        # Open the connections first, so the logins below travel on connections the server holds.
        await asyncio.gather(*[api.get("/health") for _ in range(20)])
        logins = [asyncio.ensure_future(api.login(account)) for _ in range(20)]
        await asyncio.sleep(0.2)  # let them reach the server (hashing takes far longer)
        running.proc.send_signal(signal.SIGTERM)
        replies = await asyncio.gather(*logins)
    assert [r.status for r in replies] == [200] * 20
    assert await running.stop() == 0


async def test_restart_keeps_accounts_and_sessions(tmp_path: Path):
    env = sup_env(tmp_path)
    first = await Running.start(env)
    async with aiohttp.ClientSession() as session:
        account = await Api(first.url, session).register()
    assert await first.stop() == 0
    second = await Running.start(env)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(second.url, session)
            assert (await api.get("/api/v1/users/me", token=account.access_token)).status == 200
            assert (await api.login(account)).status == 200
    finally:
        await second.stop()
    assert "applied migration" not in second.log  # nothing pending the second time


@pytest.mark.parametrize(
    "extra_env, toml, key",
    [
        ({"SUP_PORT": "eighty"}, None, "SUP_PORT"),
        ({"SUP_SERVER_PROT": "1"}, None, "SUP_SERVER_PROT"),
        ({}, "[server]\nprot = 1\n", "server.prot"),
        ({}, '[auth]\nregistration = "sometimes"\n', "auth.registration"),
    ],
)
async def test_invalid_settings_exit_2_naming_the_key(tmp_path: Path, extra_env, toml, key):
    args = ["run"]
    if toml is not None:
        (tmp_path / "sup.toml").write_text(toml)
        args += ["--config", str(tmp_path / "sup.toml")]
    code, _, err = await sup(*args, env=sup_env(tmp_path, **extra_env))
    assert code == 2
    assert key in err
    assert "Traceback" not in err


async def test_init_then_config_check(tmp_path: Path):
    env = sup_env(tmp_path)
    code, out, _ = await sup("init", str(tmp_path / "sup.toml"), env=env)
    assert code == 0 and (tmp_path / "sup.toml").exists()
    assert (await sup("init", str(tmp_path / "sup.toml"), env=env))[0] == 1  # no silent overwrite
    code, out, _ = await sup("config", "check", str(tmp_path / "sup.toml"), env=env)
    assert code == 0 and "valid" in out
    (tmp_path / "bad.toml").write_text("[database]\nurll = 'x'\n")
    code, _, err = await sup("config", "check", str(tmp_path / "bad.toml"), env=env)
    assert code == 2 and "database.urll" in err


async def test_migrate_status_down_up(tmp_path: Path):
    env = sup_env(tmp_path)
    code, out, _ = await sup("migrate", "status", env=env)
    assert code == 0 and "pending  0001_accounts" in out and "pending  0002_messaging" in out
    out = (await sup("migrate", "up", env=env))[1]
    assert out.splitlines()[:2] == ["applied 0001_accounts", "applied 0002_messaging"]
    code, out, _ = await sup("migrate", "status", env=env)
    assert "applied  0001_accounts" in out and "applied  0002_messaging" in out
    names = [f"{m.version:04d}_{m.name}" for m in migrations.discover()]  # those of one dialect too
    assert (await sup("migrate", "down", env=env))[1].strip() == f"reverted {names[-1]}"
    assert f"pending  {names[-1]}" in (await sup("migrate", "status", env=env))[1]
    reverted = (await sup("migrate", "down", "--steps", "99", env=env))[1].split()
    assert reverted == [word for name in reversed(names[:-1]) for word in ("reverted", name)]
    assert "pending  0001_accounts" in (await sup("migrate", "status", env=env))[1]
    assert (await sup("migrate", "up", env=env))[0] == 0  # and every migration applies again


async def test_unusable_blob_storage_is_a_clear_error(tmp_path: Path):
    env = sup_env(tmp_path, SUP_BLOBS_URL="file://files.example/sup")  # a scheme it knows, a URL it cannot use
    code, _, err = await sup("run", "--port", "0", env=env)
    assert code == 1 and "blob storage error" in err and "file://files.example" in err and "Traceback" not in err
    code, _, err = await sup("run", "--port", "0", env=sup_env(tmp_path, SUP_BLOBS_URL="ftp://files.example/sup"))
    assert code == 2 and "blobs.url" in err and "ftp" in err and "Traceback" not in err


async def test_a_database_from_a_newer_sup_is_refused(tmp_path: Path):
    env = sup_env(tmp_path)
    assert (await sup("migrate", "up", env=env))[0] == 0
    with sqlite3.connect(tmp_path / "sup.db") as conn:
        conn.execute("INSERT INTO schema_migrations VALUES (9999, 'from_the_future', 0)")
    code, _, err = await sup("run", "--port", "0", env=env)
    assert code == 1
    assert "newer" in err and "Traceback" not in err


async def test_admin_users_and_invite_only_registration(database_url: str, tmp_path: Path):
    env = sup_env(tmp_path, database_url, SUP_AUTH_REGISTRATION="invite")
    admin_name = new_username()
    code, out, err = await sup(
        "admin",
        "create-user",
        admin_name,
        "--admin",
        "--password-stdin",
        env=env,
        stdin=b"admin password 1\n",
    )
    assert code == 0, err
    assert admin_name in out
    code, _, err = await sup(
        "admin", "create-user", admin_name.upper(), "--password-stdin", env=env, stdin=b"admin password 1\n"
    )
    assert code == 1 and "taken" in err
    code, out, _ = await sup("admin", "invite", "--uses", "1", env=env)
    invite = out.strip()
    assert code == 0 and invite.startswith("supi_")

    running = await Running.start(env)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(running.url, session)
            login = await api.post("/api/v1/auth/login", json={"username": admin_name, "password": "admin password 1"})
            assert login.status == 200
            body = {"username": new_username(), "password": "long enough pw"}
            no_invite = await api.post("/api/v1/auth/register", json=body)
            assert no_invite.status == 403 and no_invite.code == "invalid_invite"
            bad = await api.post("/api/v1/auth/register", json={**body, "invite_code": "supi_forged"})
            assert bad.status == 403
            ok = await api.post("/api/v1/auth/register", json={**body, "invite_code": invite})
            assert ok.status == 201
            used = await api.post(
                "/api/v1/auth/register",
                json={"username": new_username(), "password": "long enough pw", "invite_code": invite},
            )
            assert used.status == 403
    finally:
        await running.stop()

    code, _, err = await sup(
        "admin", "reset-password", admin_name, "--password-stdin", env=env, stdin=b"a brand new one\n"
    )
    assert code == 0, err
    running = await Running.start(env)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(running.url, session)
            assert (await api.get("/api/v1/users/me", token=login.body["access_token"])).status == 401
            relog = await api.post("/api/v1/auth/login", json={"username": admin_name, "password": "a brand new one"})
            assert relog.status == 200
    finally:
        await running.stop()


async def test_closed_registration(tmp_path: Path):
    running = await Running.start(sup_env(tmp_path, SUP_AUTH_REGISTRATION="closed"))
    try:
        async with aiohttp.ClientSession() as session:
            reply = await Api(running.url, session).post(
                "/api/v1/auth/register", json={"username": new_username(), "password": "long enough pw"}
            )
        assert reply.status == 403 and reply.code == "registration_closed"
    finally:
        await running.stop()


async def test_port_in_use_is_a_clear_error(tmp_path: Path):
    first = await Running.start(sup_env(tmp_path / "a"))
    try:
        port = first.url.rsplit(":", 1)[1]
        code, _, err = await sup("run", "--port", port, env=sup_env(tmp_path / "b"))
        assert code == 1 and "Traceback" not in err
        assert "address" in err.lower() or "in use" in err.lower()
    finally:
        await first.stop()


async def test_shutdown_closes_websockets_with_going_away(tmp_path: Path):
    running = await Running.start(sup_env(tmp_path))
    async with aiohttp.ClientSession() as session:
        account = await Api(running.url, session).register()
        sock = await Socket.connect(running.url, session, account.access_token)
        running.proc.send_signal(signal.SIGTERM)
        with pytest.raises(ConnectionError):
            while True:
                await sock.recv(timeout=10)
        assert sock.ws.close_code == 1001
    assert await running.stop() == 0
