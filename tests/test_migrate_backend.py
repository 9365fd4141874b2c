"""`sup migrate-backend`: a live SQLite + disk install moved to Postgres + S3 with nothing lost.

Real `sup` processes: the server keeps taking messages and files while the copy runs, then it is
stopped, the final pass runs, the configuration is switched, and the server starts on the new
backends with every acknowledged message and every file.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sqlite3
import sys
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from sup.db import migrations
from tests.conftest import Api, say, two_in_a_group
from tests.processes import Running, sup, sup_env
from tests.s3server import ACCESS_KEY, SECRET_KEY


def _s3_env(endpoint: str) -> dict[str, str]:
    # The s3_* settings are ignored while blobs.url is a file URL: set them first, switch the URL last.
    return {
        "SUP_BLOBS_S3_ENDPOINT_URL": endpoint,
        "SUP_BLOBS_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "SUP_BLOBS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "SUP_BLOBS_S3_ADDRESSING_STYLE": "path",
        "SUP_BLOBS_S3_CREATE_BUCKET": "true",
    }


async def _foreign_keys(url: str) -> list[tuple[str, str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d FROM pg_constraint"
            " WHERE contype = 'f' ORDER BY 1, 2"
        )
        return [(r["t"], r["conname"], r["d"]) for r in rows]
    finally:
        await conn.close()


async def test_a_live_install_moves_to_postgres_and_s3_without_losing_anything(tmp_path: Path, fresh_postgres, moto_s3):
    target = await fresh_postgres.create()
    bucket_url = f"s3://sup-move-{secrets.token_hex(4)}/sup"
    env = sup_env(tmp_path / "data", **_s3_env(moto_s3.endpoint_url))
    running = await Running.start(env)
    acked: list[tuple[str, str]] = []  # (message id, body) the server answered 201 for
    files: dict[str, bytes] = {}
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        api = Api(running.url, session)
        alice, bob, chat = await two_in_a_group(api)

        async def upload() -> None:
            data = os.urandom(30_000)
            reply = await api.upload(alice, data, filename="f.bin", encrypted=True)
            assert reply.status == 201, reply.body
            files[reply.body["id"]] = data

        async def send() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                reply = await say(api, alice, chat, f"m{n}")
                assert reply.status == 201, reply.body
                acked.append((reply.body["id"], f"m{n}"))
                await asyncio.sleep(0.005)

        for _ in range(3):
            await upload()
        sender = asyncio.create_task(send())
        try:
            while len(acked) < 30:
                await asyncio.sleep(0.02)
            # The copy runs while messages keep coming (small batches: many commits, many resume points).
            code, out, err = await sup("migrate-backend", "--to", target, "--batch-rows", "7", env=env)
            assert code == 0, err
            assert "To switch: stop SUP" in out
            code, out, err = await sup("migrate-backend", "--to", bucket_url, env=env)
            assert code == 0, err
            # After the copy: new rows, a changed row, a deleted row, a new blob.
            count = len(acked)
            while len(acked) < count + 20:
                await asyncio.sleep(0.02)
            await upload()
            edited = acked[3][0]
            reply = await api.patch(f"/api/v1/messages/{edited}", json={"body": "edited"}, token=alice.access_token)
            assert reply.status == 200, reply.body
            gone = acked[5][0]
            reply = await api.delete(f"/api/v1/messages/{gone}", token=alice.access_token)
            assert reply.status in (200, 204), reply.body
        finally:
            stop.set()
            await sender
    code, _, err = await sup("migrate-backend", "--to", target, "--final", env=env)
    assert code == 1 and "is SUP running?" in err  # the final pass needs the server stopped
    assert await running.stop() == 0

    code, out, err = await sup("migrate-backend", "--to", target, "--final", env=env)
    assert code == 0, err
    assert "final pass:" in out and "foreign keys restored" in out
    assert 'set [database] url = "' in out
    code, out, err = await sup("migrate-backend", "--to", bucket_url, "--final", env=env)
    assert code == 0, err
    assert f'set [blobs] url = "{bucket_url}"' in out

    # The target has exactly the schema a fresh install gets.
    fresh = await fresh_postgres.create()
    code, _, err = await sup("migrate", "up", env=sup_env(tmp_path / "fresh", fresh))
    assert code == 0, err
    assert await _foreign_keys(target) == await _foreign_keys(fresh)

    # One setting each, and a restart.
    moved = {**env, "SUP_DATABASE_URL": target, "SUP_BLOBS_URL": bucket_url}
    running = await Running.start(moved)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(running.url, session)
            login = await api.post("/api/v1/auth/login", json={"username": bob.username, "password": bob.password})
            assert login.status == 200, login.body
            token = login.body["access_token"]
            history: dict[str, dict] = {}
            after = 0
            while True:
                page = await api.get(
                    f"/api/v1/messages/chat/{chat}", params={"limit": "100", "after": str(after)}, token=token
                )
                history.update({m["id"]: m for m in page.body["items"]})
                if page.body["next_after"] is None:
                    break
                after = page.body["next_after"]
            missing = [body for message_id, body in acked if message_id not in history]
            assert not missing, f"lost: {missing}"
            assert history[edited]["body"] == "edited"
            assert history[gone]["deleted"] is True
            owner = await api.post("/api/v1/auth/login", json={"username": alice.username, "password": alice.password})
            for media_id, data in files.items():
                reply = await api.get(f"/api/v1/media/download/{media_id}", token=owner.body["access_token"])
                assert reply.status == 200 and reply.body == data
            assert (await say(api, owner_account(alice, owner.body), chat, "on the new backends")).status == 201
    finally:
        assert await running.stop() == 0


def owner_account(account, body):
    account.access_token = body["access_token"]
    return account


async def test_an_interrupted_copy_resumes_and_the_target_cannot_serve_before_the_final_pass(
    tmp_path: Path, fresh_postgres
):
    target = await fresh_postgres.create()
    env = sup_env(tmp_path / "data")
    code, _, err = await sup("migrate", "up", env=env)
    assert code == 0, err
    rows = 20_000
    with sqlite3.connect(tmp_path / "data" / "sup.db") as conn:
        conn.executemany(
            "INSERT INTO jobs (id, kind, payload, state, max_attempts, run_at, created_at, updated_at)"
            " VALUES (?, 'test', x'00', 'done', 1, 0, 0, 0)",
            [(str(uuid.uuid4()),) for _ in range(rows)],
        )
    conn.close()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sup", "migrate-backend", "--to", target, "--batch-rows", "50",
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    state = migrations.COPY_STATE_TABLE
    copied = 0
    for _ in range(600):
        await asyncio.sleep(0.05)
        conn = await asyncpg.connect(target)
        try:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", state):
                copied = await conn.fetchval("SELECT count(*) FROM jobs") or 0
        finally:
            await conn.close()
        if copied >= 500:
            break
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    assert 0 < copied < rows, "the copy was not caught halfway"

    # Half a copy is not a database to serve: its foreign keys are off.
    code, _, err = await sup("admin", "invite", env=sup_env(tmp_path / "x", target))
    assert code == 1 and "unfinished `sup migrate-backend`" in err

    code, out, err = await sup("migrate-backend", "--to", target, "--batch-rows", "500", env=env)
    assert code == 0, err
    assert "resuming the copy" in err
    copied_now = int(out.split("rows copied now: ")[1].split()[0])
    assert copied_now < rows  # it went on from where it was, not from the start
    code, out, err = await sup("migrate-backend", "--to", target, "--final", env=env)
    assert code == 0, err
    assert f"jobs: {rows + 3} rows" in out or f"jobs: {rows} rows" in out
    conn = await asyncpg.connect(target)
    try:
        assert await conn.fetchval("SELECT count(*) FROM jobs WHERE kind = 'test'") == rows
        assert not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", state)
    finally:
        await conn.close()


async def test_refuses_a_target_that_is_not_empty(tmp_path: Path, fresh_postgres):
    target = await fresh_postgres.create()
    code, _, err = await sup("migrate", "up", env=sup_env(tmp_path / "other", target))
    assert code == 0, err
    env = sup_env(tmp_path / "data")
    code, _, err = await sup("migrate", "up", env=env)
    assert code == 0, err
    code, _, err = await sup("migrate-backend", "--to", target, env=env)
    assert code == 1 and "already has" in err and "empty database" in err


@pytest.mark.parametrize("to", ["ftp://x", "mysql://x"])
async def test_refuses_an_unknown_target(tmp_path: Path, to: str):
    env = sup_env(tmp_path / "data")
    code, _, err = await sup("migrate-backend", "--to", to, env=env)
    assert code == 1 and "--to: expected postgresql://" in err
