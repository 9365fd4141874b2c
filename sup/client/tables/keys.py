"""The devices met and events held for an untrusted identity, and who holds my sender keys: what the
client store keeps about keys (store.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from sup.client.tables import Reads, Writes, json_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS sender_key_shares (
    chat_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    distribution_id TEXT NOT NULL,
    PRIMARY KEY (chat_id, device_id)
);
CREATE TABLE IF NOT EXISTS sender_key_rotations (chat_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    identity_key BLOB NOT NULL,
    first_seen REAL NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE IF NOT EXISTS held (
    frame_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    frame TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS held_by_sender ON held (user_id, device_id);
"""


class KeyWrites(Writes):
    """What a batch writes to the devices, held and sender-key tables."""

    def shared_sender_key(self, chat_id: str, distribution_id: str, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            self.statements.append(
                (
                    "INSERT INTO sender_key_shares (chat_id, device_id, distribution_id) VALUES (?, ?, ?)"
                    " ON CONFLICT (chat_id, device_id) DO UPDATE SET distribution_id = excluded.distribution_id",
                    (chat_id, device_id, distribution_id),
                )
            )

    def unshare_sender_key(self, chat_id: str, device_ids: Iterable[str]) -> None:
        """These devices do not hold my sender key after all (the server said so): send it again."""
        for device_id in device_ids:
            self.statements.append(
                ("DELETE FROM sender_key_shares WHERE chat_id = ? AND device_id = ?", (chat_id, device_id))
            )

    def record_device(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        """A device of a user as met (first contact, a notice shown, or a new identity accepted)."""
        self.statements.append(
            (
                "INSERT INTO devices (user_id, device_id, identity_key, first_seen) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id, device_id) DO UPDATE SET identity_key = excluded.identity_key",
                (user_id, device_id, identity_key, time.time()),
            )
        )

    def forget_device(self, user_id: str, device_id: str) -> None:
        self.statements.append(("DELETE FROM devices WHERE user_id = ? AND device_id = ?", (user_id, device_id)))

    def hold(self, frame_id: str, user_id: str, device_id: str, frame: dict[str, Any]) -> None:
        """An event from a device whose new identity key is not trusted yet, kept until it is (or is rejected)."""
        self.statements.append(
            (
                "INSERT INTO held (frame_id, user_id, device_id, frame, added_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (frame_id) DO NOTHING",
                (frame_id, user_id, device_id, json_text(frame), time.time()),
            )
        )

    def release(self, frame_id: str) -> None:
        self.statements.append(("DELETE FROM held WHERE frame_id = ?", (frame_id,)))

    def forget_sender_key_shares(self, chat_id: str) -> None:
        self.statements.append(("DELETE FROM sender_key_shares WHERE chat_id = ?", (chat_id,)))

    def need_rotation(self, chat_id: str) -> None:
        self.statements.append(
            ("INSERT INTO sender_key_rotations (chat_id) VALUES (?) ON CONFLICT DO NOTHING", (chat_id,))
        )

    def rotated(self, chat_id: str) -> None:
        self.statements.append(("DELETE FROM sender_key_rotations WHERE chat_id = ?", (chat_id,)))
        self.forget_sender_key_shares(chat_id)


class KeyReads(Reads):
    """What the store reads from the devices, held and sender-key tables."""

    async def known_devices(self, user_id: str) -> dict[str, bytes]:
        """device id -> identity key of every device of a user this device has met (and not seen removed)."""
        rows = await self._query("SELECT device_id, identity_key FROM devices WHERE user_id = ?", (user_id,))
        return {device_id: bytes(key) for device_id, key in rows}

    async def held(self, user_id: str, device_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(frame id, frame) held for one sender device, oldest first."""
        rows = await self._query(
            "SELECT frame_id, frame FROM held WHERE user_id = ? AND device_id = ? ORDER BY added_at, frame_id",
            (user_id, device_id),
        )
        return [(frame_id, msgspec.json.decode(frame)) for frame_id, frame in rows]

    async def sender_key_shares(self, chat_id: str) -> dict[str, str]:
        """device id -> the distribution id of my sender key it holds, for one chat."""
        rows = await self._query(
            "SELECT device_id, distribution_id FROM sender_key_shares WHERE chat_id = ?", (chat_id,)
        )
        return dict(rows)

    async def chats_shared_with(self, device_ids: Iterable[str]) -> list[str]:
        """Chats where any of these devices holds my sender key."""
        ids = list(device_ids)
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        rows = await self._query(
            f"SELECT DISTINCT chat_id FROM sender_key_shares WHERE device_id IN ({marks})",  # noqa: S608
            tuple(ids),
        )
        return [r[0] for r in rows]

    async def needs_rotation(self, chat_id: str) -> bool:
        return bool(await self._query("SELECT 1 FROM sender_key_rotations WHERE chat_id = ?", (chat_id,)))
