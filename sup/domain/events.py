"""Durable events: appended to device streams in the writer's transaction, announced after its commit.

An event is stored exactly as the WebSocket sends it (JSON with `type` and `cursor` first),
so delivering it, live or on replay, is a copy of bytes, not a re-encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any, Protocol

import msgspec

from sup.db.database import Transaction
from sup.db.events import EventStore
from sup.delivery import Delivery


def frame(event_type: str, cursor: int | None, body: bytes) -> bytes:
    """`{"type": ..., "cursor": ..., <the fields of body>}`; body is an encoded JSON object."""
    head = b'{"type":"%s","cursor":%s' % (event_type.encode(), b"null" if cursor is None else str(cursor).encode())
    return head + (b"," + body[1:] if len(body) > 2 else b"}")


def encode(value: Any) -> bytes:
    # The module function, not a shared Encoder: this also runs in SQLite's writer thread.
    return msgspec.json.encode(value)


class Announcer(Protocol):
    """Tells connected clients (in this process and others) about committed events."""

    async def announce(self, deliveries: Sequence[Delivery]) -> None: ...

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None: ...

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        """These devices were logged out: every process closes their open connections."""


class EventWriter:
    """The one way events enter device streams: stored in the caller's transaction, and
    announced to connected clients by that transaction once it has committed."""

    def __init__(self, store: EventStore, announcer: Announcer) -> None:
        self._store = store
        self._announcer = announcer

    async def append(
        self,
        tx: Transaction,
        event_type: str,
        device_ids: Sequence[str],
        body: bytes,
        now: int,
        *,
        per_device: dict[str, bytes] | None = None,
    ) -> None:
        """Append one event to each device's stream; `per_device` replaces the body for some devices."""
        if not device_ids:
            return
        seqs = await self._store.next_seqs(tx, device_ids)
        deliveries = []
        for device_id, seq in seqs.items():
            own = per_device.get(device_id, body) if per_device else body
            deliveries.append(Delivery(device_id, seq, frame(event_type, seq, own)))
        await self._store.insert(tx, deliveries, now)
        tx.after_commit(partial(self._announcer.announce, deliveries))

    def revoked(self, tx: Transaction, device_ids: Sequence[str]) -> None:
        """Once `tx` commits, every process closes these (logged-out) devices' open connections."""
        if device_ids:
            tx.after_commit(partial(self._announcer.announce_revoked, list(device_ids)))
