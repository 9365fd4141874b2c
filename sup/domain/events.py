"""Durable events: appended to device streams in the writer's transaction, announced after its commit.

An event is stored exactly as the WebSocket sends it (JSON with `type` and `cursor` first),
so delivering it, live or on replay, is a copy of bytes, not a re-encoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
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


class SilentAnnouncer:
    """For commands that run no event delivery (`sup admin`, `sup backup restore`): events are still
    stored, and a running server's catch-up delivers them when clients come."""

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        return None

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        return None

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        return None


@dataclass(slots=True)
class _Append:
    """One `EventWriter.append`, waiting for its transaction's flush to number it."""

    event_type: str
    device_ids: Sequence[str]
    body: bytes
    per_device: dict[str, bytes] | None
    now: int
    deliveries: list[Delivery] = field(default_factory=list)  # filled by the flush


@dataclass(slots=True, eq=False)
class EventWriter:
    """The one way events enter device streams: stored in the caller's transaction, and
    announced to connected clients by that transaction once it has committed.

    Appends are numbered and stored just before the commit, every append of the transaction at
    once (a group-committed batch of sends: two statements, not two per send). Holding the device
    rows' locks only from then to the commit also keeps them short, and takes them in one
    statement in id order, whatever the operations' order: no lock-order deadlock between batches.
    """

    store: EventStore
    announcer: Announcer

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
        tx.defer(self._flush, _Append(event_type, device_ids, body, per_device, now))

    async def _flush(self, tx: Transaction, appends: list[_Append]) -> None:
        """Number and store a transaction's appends, in the order they were made."""
        unique = [sorted(set(a.device_ids)) for a in appends]
        counts: dict[str, int] = {}
        for devices in unique:
            for d in devices:
                counts[d] = counts.get(d, 0) + 1
        last = await self.store.bump_seqs(tx, counts)
        next_seq = {d: last[d] - counts[d] + 1 for d in last}  # absent: a device that no longer exists
        rows: list[Delivery] = []
        times: list[int] = []
        for a, devices in zip(appends, unique, strict=True):
            for d in devices:
                seq = next_seq.get(d)
                if seq is None:
                    continue
                next_seq[d] = seq + 1
                own = a.per_device.get(d, a.body) if a.per_device else a.body
                a.deliveries.append(Delivery(d, seq, frame(a.event_type, seq, own)))
            rows += a.deliveries
            times += [a.now] * len(a.deliveries)
        await self.store.insert(tx, rows, times)
        if rows:  # one announcement for the transaction (a batch of sends), not one per append
            tx.after_commit(partial(self.announcer.announce, rows))

    def revoked(self, tx: Transaction, device_ids: Sequence[str]) -> None:
        """Once `tx` commits, every process closes these (logged-out) devices' open connections."""
        if device_ids:
            tx.after_commit(partial(self.announcer.announce_revoked, list(device_ids)))
