"""Nothing a user wrote in an end-to-end encrypted chat is ever stored by the server.

After a conversation full of random markers (a direct chat between two users with two
devices each, a five-member group, edits, an encrypted attachment, the sender-key
distributions), every column of every row of every table, and every file under the
server's data directory (the blobs, and the SQLite files themselves), is searched for each
marker and secret key: raw, hex, and base64 at every alignment. None may be found. A
plaintext channel message and file, made the same way, must be found by the same scan,
so a scan that silently sees nothing fails too.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sup.client.client import Client, ReceivedMessage
from sup.client.crypto import wire
from tests import media_samples as samples
from tests.conftest import Server
from tests.people import PASSWORD, People, receive

Needles = dict[str, set[bytes]]  # what a secret is called -> the byte strings that would give it away


def encodings(secret: bytes) -> set[bytes]:
    """The forms a secret could take at rest: raw, hex, and base64 (standard and URL-safe).

    In a longer base64 text the secret's characters depend on where it starts modulo 3
    bytes, so each alignment contributes the characters made of the secret's bits alone.
    """
    forms = {secret, secret.hex().encode(), secret.hex().upper().encode()}
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(bytes(shift) + secret)
            first, last = -(-shift * 8 // 6), (shift + len(secret)) * 8 // 6
            forms.add(encoded[first:last])
    return forms


def cell_bytes(value: Any) -> Iterator[bytes]:
    """Every text or binary piece of a database value (JSON and arrays taken apart)."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, str):
        yield value.encode()
    elif isinstance(value, bytes | bytearray | memoryview):
        yield bytes(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from cell_bytes(key)
            yield from cell_bytes(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from cell_bytes(item)
    else:
        yield str(value).encode()


def search(needles: Needles, haystacks: Iterable[tuple[str, bytes]]) -> dict[str, set[str]]:
    """secret -> where it was found (table.column or file path)."""
    found: dict[str, set[str]] = {}
    for where, data in haystacks:
        for name, forms in needles.items():
            if any(form in data for form in forms):
                found.setdefault(name, set()).add(where)
    return found


async def database_cells(server: Server) -> list[tuple[str, bytes]]:
    """(table.column, bytes) for every non-empty text or binary value of every table."""
    db = server.db
    if server.config.database.url.startswith("sqlite"):
        tables = [r["name"] for r in await db.fetch("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        rows = await db.fetch(
            "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
        tables = [r["name"] for r in rows]
    cells = []
    for table in tables:
        quoted = ".".join(f'"{part}"' for part in table.split("."))
        for row in await db.fetch(f"SELECT * FROM {quoted}"):
            for column in row.keys():  # noqa: SIM118 (iterating a sqlite3.Row gives values)
                pieces = cell_bytes(row[column])
                cells.extend((f"{table.split('.')[-1]}.{column}", piece) for piece in pieces if piece)
    return cells


def files_under(*roots: Path) -> list[tuple[str, bytes]]:
    return [(str(p), p.read_bytes()) for root in roots for p in sorted(root.rglob("*")) if p.is_file()]


def sqlite_files(server: Server) -> list[tuple[str, bytes]]:
    """The database file with its WAL: freed pages and the log would keep what rows no longer show."""
    url = server.config.database.url
    if not url.startswith("sqlite"):
        return []
    path = url.removeprefix("sqlite:///")
    found = [Path(path + suffix) for suffix in ("", "-wal", "-shm", "-journal")]
    return [(str(p), p.read_bytes()) for p in found if p.exists()]


class Markers:
    def __init__(self) -> None:
        self.needles: Needles = {}

    def new(self, name: str) -> str:
        marker = secrets.token_hex(16)
        self.secret(name, marker.encode())
        return marker

    def secret(self, name: str, value: bytes) -> None:
        assert name not in self.needles
        self.needles[name] = encodings(value)


async def send_and_receive(sender: Client, chat_id: str, text: str, devices: list[Client]) -> dict[str, Any]:
    sent = await sender.send_text(chat_id, text)
    for device in devices:
        if device is not sender:
            (got,) = await receive(device, 1)
            assert isinstance(got, ReceivedMessage) and (got.message_id, got.text) == (sent["id"], text), got
    return sent


async def offline_device(people: People, of: Client) -> Client:
    """A device that logs in and never connects: every event for it stays stored on the server."""
    client = await Client.login(people.server.url, people._path(), of.username or "", PASSWORD)
    people.clients.append(client)
    return client


async def test_the_scanner_finds_base64_at_every_alignment():
    marker = secrets.token_hex(16).encode()
    for prefix in (b"", b"x", b"xy", b'{"v":1,"text":"'):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            stored = b"data:" + encode(prefix + marker + b'"}')
            assert search({"m": encodings(marker)}, [("cell", stored)]) == {"m": {"cell"}}
    assert search({"m": encodings(marker)}, [("cell", marker.hex().encode())]) == {"m": {"cell"}}
    assert search({"m": encodings(marker)}, [("cell", base64.b64encode(secrets.token_bytes(4096)))]) == {}


async def test_no_plaintext_at_rest(people: People, server: Server):
    marks = Markers()

    # a direct chat, two users with two devices each (and one of bob's that stays offline)
    alice, bob = await people.register(), await people.register()
    alice_tablet, bob_phone = await people.another_device(alice), await people.another_device(bob)
    await offline_device(people, bob)
    four = [alice, alice_tablet, bob, bob_phone]
    direct = (await alice.direct_chat(bob.user_id))["id"]
    for sender in four:
        await send_and_receive(sender, direct, f"hello {marks.new(f'direct from {sender.device_id}')}", four)

    # an edited message: neither version is kept readable
    sent = await send_and_receive(alice, direct, marks.new("before the edit"), four)
    edited = marks.new("after the edit")
    await alice.edit_text(direct, sent["id"], edited)
    for device in four[1:]:
        (got,) = await receive(device, 1)
        assert isinstance(got, ReceivedMessage) and got.edited and got.text == edited

    # an encrypted attachment whose bytes, name and caption are secret
    photo = samples.jpeg(96, 64) + marks.new("inside the photo").encode()
    name, caption = f"{marks.new('file name')}.jpg", marks.new("caption")
    sent = await bob.send_file(direct, photo, name=name, mime="image/jpeg", text=caption)
    for device in (alice, alice_tablet, bob_phone):
        (got,) = await receive(device, 1)
        assert isinstance(got, ReceivedMessage) and got.text == caption
        (attachment,) = got.attachments
        assert attachment.name == name and await device.download(attachment) == photo
    marks.secret("attachment key", attachment.key)

    # a five-member group: sender keys go out pairwise, then every member speaks
    carol, dave, erin = [await people.register() for _ in range(3)]
    members = [alice, bob, carol, dave, erin]
    group = (await alice.create_group("five", [m.user_id for m in members[1:]]))["id"]
    everyone = [*members, alice_tablet, bob_phone]
    distributed = {}
    for device in everyone:
        # made now, this is the key each device's first message distributes (no rotation follows)
        distribution_id, distribution = device.crypto.sender_key_distribution(group)
        distributed[device.device_id] = distribution_id
        marks.secret(f"sender key of {device.device_id}", wire.SenderKeyDistribution.decode(distribution).chain_key)
    for sender in everyone:
        await send_and_receive(sender, group, f"group {marks.new(f'group from {sender.device_id}')}", everyone)
    sent = await send_and_receive(carol, group, marks.new("group before the edit"), everyone)
    edited = marks.new("group after the edit")
    await carol.edit_text(group, sent["id"], edited)
    for device in everyone:
        if device is not carol:
            (got,) = await receive(device, 1)
            assert isinstance(got, ReceivedMessage) and got.edited and got.text == edited
    for device in everyone:
        assert device.crypto.sender_key_distribution(group)[0] == distributed[device.device_id]
    group_photo = samples.jpeg(32, 32, gps=False) + marks.new("inside the group photo").encode()
    sent = await erin.send_file(group, group_photo, name="g.jpg")
    for device in everyone:
        if device is not erin:
            (got,) = await receive(device, 1)
            assert isinstance(got, ReceivedMessage) and await device.download(got.attachments[0]) == group_photo

    # the positive control: a plaintext channel message and file, marked the same way
    control = Markers()
    channel = (await alice.http.create_channel("news", [bob.user_id]))["id"]
    control_text = control.new("channel message")
    await send_and_receive(alice, channel, f"news: {control_text}", [bob])
    control_file = b"plain notes " + control.new("channel file").encode()
    await alice.send_file(channel, control_file, name="notes.txt")
    (got,) = await receive(bob, 1)
    assert isinstance(got, ReceivedMessage) and await bob.download(got.attachments[0]) == control_file

    cells = await database_cells(server)
    tables = {where.split(".")[0] for where, _ in cells}
    assert {"messages", "message_recipients", "device_events", "sender_key_distributions", "media"} <= tables
    stored_files = await asyncio.to_thread(files_under, Path(server.config.data_dir))
    assert any("blobs" in where for where, _ in stored_files)
    raw_database = await asyncio.to_thread(sqlite_files, server)

    leaks = await asyncio.to_thread(search, marks.needles, [*cells, *stored_files, *raw_database])
    assert leaks == {}, f"plaintext or keys at rest: {leaks}"

    found = await asyncio.to_thread(search, control.needles, [*cells, *stored_files, *raw_database])
    assert "messages.body" in found["channel message"]
    assert any("blobs" in where for where in found["channel file"])
    if raw_database:
        assert any(where.startswith(raw_database[0][0]) for where in found["channel message"])
