"""Backups: the restore drill against real `sup` processes, and the checks around it.

The drill: a real `sup run`, two SDK clients talking end to end and in a plaintext channel while
`sup backup create` runs, the server stopped, the backup restored into a new data directory (and
a new database), the restored server started on the same address. Every message acknowledged
before the backup started must be there; the clients, whose stores went on living after the
backup, must go on working (their cursors and ratchets are ahead of the restored server).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sup.client import Client, ReceivedMessage
from sup.ops.backup import MANIFEST, SEQUENCE_GAP
from tests.processes import Running, sup, sup_env

PASSWORD = "correct horse battery"


@dataclass
class Sent:
    chat_id: str
    message_id: str
    text: str
    acked_at: float  # time.monotonic() when the server answered


@dataclass
class Traffic:
    sent: list[Sent] = field(default_factory=list)
    received: list[str] = field(default_factory=list)  # texts bob decrypted
    attachments: list = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _send_continuously(alice: Client, direct: str, channel: str, traffic: Traffic) -> None:
    n = 0
    while not traffic.stop.is_set():
        n += 1
        for chat_id, label in ((direct, "e2e"), (channel, "channel")):
            text = f"{label} {n}"
            message = await alice.send_text(chat_id, text)
            traffic.sent.append(Sent(chat_id, message["id"], text, time.monotonic()))
        await asyncio.sleep(0.01)


async def _receive(bob: Client, traffic: Traffic) -> None:
    async for item in bob.messages():
        if isinstance(item, ReceivedMessage) and item.text:
            traffic.received.append(item.text)
            traffic.attachments.extend(item.attachments)


async def _history_ids(client: Client, chat_id: str) -> set[str]:
    ids: set[str] = set()
    after = 0
    while True:
        page = await client.http.history(chat_id, limit=100, after=after)
        ids.update(item["id"] for item in page["items"])
        if not page["items"] or page.get("next_after") is None:
            return ids
        after = page["next_after"]


async def _next_text(client: Client, within: float = 15.0) -> ReceivedMessage:
    deadline = time.monotonic() + within
    while True:
        item = await client.next_message(within=max(0.1, deadline - time.monotonic()))
        if isinstance(item, ReceivedMessage) and item.text:
            return item


async def _drill(tmp_path: Path, database_url: str | None, restored_url: str | None) -> None:
    env = sup_env(tmp_path / "data", database_url, SUP_WEBSOCKET_CATCH_UP_SECONDS="0.5")
    running = await Running.start(env)
    stores = tmp_path / "clients"
    stores.mkdir()
    alice = await Client.register(running.url, str(stores / "alice.db"), f"a_{uuid.uuid4().hex[:8]}", PASSWORD)
    bob = await Client.register(running.url, str(stores / "bob.db"), f"b_{uuid.uuid4().hex[:8]}", PASSWORD)
    direct = (await alice.direct_chat(bob.user_id))["id"]
    channel = (await alice.http.create_channel("news", [bob.user_id]))["id"]
    photo = os.urandom(50_000)
    await alice.send_file(direct, photo, name="photo.bin", text="a file")
    traffic = Traffic()
    receiving = asyncio.create_task(_receive(bob, traffic))
    sending = asyncio.create_task(_send_continuously(alice, direct, channel, traffic))
    try:
        while len(traffic.sent) < 20:
            await asyncio.sleep(0.05)
        backup_started = time.monotonic()
        code, out, err = await sup("backup", "create", str(tmp_path / "backup"), env=env)
        assert code == 0, err
        assert "backup written to" in out
        # More traffic after the backup: lost server-side by the restore, but seen by the clients.
        count = len(traffic.sent)
        while len(traffic.sent) < count + 10:
            await asyncio.sleep(0.05)
    finally:
        traffic.stop.set()
        await sending
    deadline = time.monotonic() + 20
    while len(traffic.received) < len(traffic.sent) // 2 + 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    receiving.cancel()
    await alice.close()
    await bob.close()
    assert await running.stop() == 0
    before = [s for s in traffic.sent if s.acked_at < backup_started]
    after = [s for s in traffic.sent if s.acked_at > backup_started]
    assert before and after

    manifest = json.loads((tmp_path / "backup" / MANIFEST).read_text())
    assert manifest["blobs"]["count"] >= 1 and manifest["blobs"]["included"]
    code, out, err = await sup("backup", "verify", str(tmp_path / "backup"), env=env)
    assert code == 0, err

    # Restore into a new data directory (and database), and serve it on the same address.
    restored_env = sup_env(tmp_path / "restored", restored_url, SUP_WEBSOCKET_CATCH_UP_SECONDS="0.5")
    code, out, err = await sup("backup", "restore", str(tmp_path / "backup"), env=restored_env)
    assert code == 0, err
    assert (tmp_path / "restored" / "secrets.json").read_bytes() == (tmp_path / "data" / "secrets.json").read_bytes()
    restored = await Running.start(restored_env, "--port", str(running.port))
    try:
        alice = await Client.open(str(stores / "alice.db"))
        bob = await Client.open(str(stores / "bob.db"))
        try:
            # Every message acknowledged before the backup started is there.
            for chat_id in (direct, channel):
                present = await _history_ids(bob, chat_id)
                missing = [s.text for s in before if s.chat_id == chat_id and s.message_id not in present]
                assert not missing, f"lost: {missing}"
            # The file is there and still decrypts.
            assert [await bob.download(a) for a in traffic.attachments] == [photo]

            # The clients carry on: their cursors and ratchets are ahead of the restored server.
            await bob.start()
            await alice.start()
            sent = await alice.send_text(direct, "after the restore")
            assert sent["seq"] > SEQUENCE_GAP
            received = await _next_text(bob)
            assert received.text == "after the restore" and received.encrypted
            await bob.send_text(direct, "reply after the restore")
            assert (await _next_text(alice)).text == "reply after the restore"
            await alice.send_text(channel, "channel after the restore")
            assert (await _next_text(bob)).text == "channel after the restore"
        finally:
            await alice.close()
            await bob.close()
    finally:
        assert await restored.stop() == 0


async def test_restore_drill_sqlite(tmp_path: Path):
    await _drill(tmp_path, None, None)


async def test_restore_drill_postgres(tmp_path: Path, fresh_postgres):
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("pg_dump and pg_restore are not installed (apt-get install postgresql-client)")
    source = await fresh_postgres.create()
    target = await fresh_postgres.create()
    await _drill(tmp_path, source, target)


async def test_a_damaged_backup_fails_verify_and_is_not_restored(tmp_path: Path):
    env = sup_env(tmp_path / "data")
    code, _, err = await sup("migrate", "up", env=env)
    assert code == 0, err
    code, _, err = await sup("backup", "create", str(tmp_path / "b"), "--archive", env=env)
    assert code == 0, err
    archive = tmp_path / "b.tar"
    assert archive.is_file() and not (tmp_path / "b").exists()
    code, out, err = await sup("backup", "verify", str(archive), env=env)
    assert code == 0, err
    assert "verified" in out

    shutil.unpack_archive(archive, tmp_path / "unpacked")
    db = tmp_path / "unpacked" / "database" / "sup.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM schema_migrations WHERE version = 1")
    conn.close()
    code, out, err = await sup("backup", "verify", str(tmp_path / "unpacked"), env=env)
    assert code == 1
    assert "database/sup.db: damaged" in err
    code, _, err = await sup("backup", "restore", str(tmp_path / "unpacked"), env=sup_env(tmp_path / "other"))
    assert code == 1
    assert "the backup is damaged, nothing was restored" in err
    assert not (tmp_path / "other" / "sup.db").exists()


async def test_restore_refuses_a_live_or_non_empty_database(tmp_path: Path):
    env = sup_env(tmp_path / "data")
    running = await Running.start(env)
    try:
        code, _, err = await sup("backup", "create", str(tmp_path / "b"), env=env)
        assert code == 0, err
        code, _, err = await sup("backup", "restore", str(tmp_path / "b"), "--force", env=env)
        assert code == 1
        assert "is open in another process (is SUP running?)" in err
    finally:
        await running.stop()
    code, _, err = await sup("backup", "restore", str(tmp_path / "b"), env=env)
    assert code == 1
    assert "exists and is not empty" in err and "--force" in err
    code, _, err = await sup("backup", "restore", str(tmp_path / "b"), "--force", env=env)
    assert code == 0, err


async def test_create_refuses_a_directory_that_is_not_empty(tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    code, _, err = await sup("backup", "create", str(tmp_path / "full"), env=sup_env(tmp_path / "data"))
    assert code == 1
    assert "exists and is not empty" in err


async def test_sup_run_takes_scheduled_backups_and_keeps_the_last_ones(tmp_path: Path):
    backups = tmp_path / "backups"
    # 0.0004 h = 1.44 s between backups; the first is taken at start.
    env = sup_env(tmp_path / "data", SUP_BACKUP_DIR=str(backups), SUP_BACKUP_EVERY_HOURS="0.0004", SUP_BACKUP_KEEP="2")
    running = await Running.start(env)
    try:
        deadline = time.monotonic() + 30
        while running.log.count("scheduled backup written to") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert running.log.count("scheduled backup written to") >= 3, running.log
        await asyncio.sleep(0.5)  # the prune after the third
    finally:
        assert await running.stop() == 0
    kept = sorted(p.name for p in backups.iterdir() if not p.name.startswith("."))
    assert len(kept) == 2 and all(name.startswith("sup-backup-") for name in kept), kept
    assert "removed old backup" in running.log
    code, _, err = await sup("backup", "verify", str(backups / kept[-1]), env=env)
    assert code == 0, err


async def test_with_s3_blobs_a_backup_lists_the_objects_or_copies_them(tmp_path: Path, moto_s3):
    import aiohttp

    from tests.conftest import Api

    env = sup_env(
        tmp_path / "data",
        **moto_s3.env(f"s3://sup-backup-{uuid.uuid4().hex[:8]}/prefix"),
    )
    running = await Running.start(env)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(running.url, session)
            alice = await api.register()
            data = os.urandom(20_000)
            reply = await api.upload(alice, data, filename="f.bin", encrypted=True)
            assert reply.status == 201, reply.body
        code, _, err = await sup("backup", "create", str(tmp_path / "listed"), env=env)
        assert code == 0, err
        code, out, err = await sup("backup", "create", str(tmp_path / "copied"), "--include-s3-objects", env=env)
        assert code == 0, err
    finally:
        await running.stop()
    listed = json.loads((tmp_path / "listed" / MANIFEST).read_text())
    assert listed["blobs"]["store"] == "s3" and not listed["blobs"]["included"] and listed["blobs"]["count"] == 1
    assert not (tmp_path / "listed" / "blobs").exists()
    copied = json.loads((tmp_path / "copied" / MANIFEST).read_text())
    assert copied["blobs"]["included"] and copied["blobs"]["bytes"] == len(data)
    code, out, err = await sup("backup", "verify", str(tmp_path / "listed"), env=env)
    assert code == 0, err  # every listed object is still in the configured bucket
    # The copied one restores into a data directory on disk: the blob comes from the backup.
    code, out, err = await sup("backup", "restore", str(tmp_path / "copied"), env=sup_env(tmp_path / "disk"))
    assert code == 0, err
    assert "blobs: 1 restored" in out
