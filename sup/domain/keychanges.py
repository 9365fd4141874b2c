"""Key-change events: a device added or removed changes whom an encrypted message must name.

Everyone who shares a chat with the user (and the user's other devices) gets a durable
`keys.changed` event in the same transaction as the change, so clients re-fetch the
device list (and, with the E2E key directory, re-verify identity keys) before encrypting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sup.db.accounts import DeviceStore
from sup.db.chats import MemberStore
from sup.db.database import Transaction
from sup.domain.events import EventWriter, encode

Change = Literal["added", "removed", "identity"]


@dataclass(slots=True, eq=False)
class KeyChanges:
    events: EventWriter
    members: MemberStore
    devices: DeviceStore

    async def record(self, tx: Transaction, user_id: str, device_ids: Sequence[str], change: Change, now: int) -> None:
        """Append `keys.changed` for the user's peers and own devices (not the changed ones)."""
        if not device_ids:
            return
        audience = [*await self.members.peers(tx, user_id), user_id]
        targets = [d for d in await self.devices.active_ids_of(tx, audience) if d not in set(device_ids)]
        body = encode({"user_id": user_id, "device_ids": list(device_ids), "change": change})
        await self.events.append(tx, "keys.changed", targets, body, now)
        if change == "removed":  # every way a device is logged out comes through here
            self.events.revoked(tx, device_ids)
