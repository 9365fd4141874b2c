"""The event bus: tells every process's WebSocket hub about committed events.

It is a wake-up hint, never the source of truth: an event announced here has already
been committed to the device's stream, and a hub that misses a hint (Redis restarting,
a dropped subscription) finds the event in the database on its periodic catch-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import msgspec

from sup.bus.process import new_origin, stop_task
from sup.delivery import Delivery

log = logging.getLogger("sup.bus")


class Listener(Protocol):
    def holds(self, device_id: str) -> bool:
        """Whether this device has a connection here (another process's hints for the rest are skipped)."""

    def on_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Committed events for device streams (called on the event loop, must not block)."""

    def on_ephemeral(self, user_ids: Sequence[str], payload: bytes) -> None:
        """A frame for every connection of these users, not stored (typing, presence)."""

    def on_revoked(self, device_ids: Sequence[str]) -> None:
        """These devices were logged out (committed): close their connections now."""


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def subscribe(self, listener: Listener) -> None: ...

    async def announce(self, deliveries: Sequence[Delivery]) -> None: ...

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None: ...

    def subscribe_calls(self, handler: Callable[[bytes], None]) -> None: ...

    async def announce_calls(self, payload: bytes) -> None: ...
    async def announce_revoked(self, device_ids: Sequence[str]) -> None: ...


class MemoryBus:
    """One process: listeners are called directly."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._call_handlers: list[Callable[[bytes], None]] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._listeners.clear()
        self._call_handlers.clear()

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        for listener in self._listeners:
            listener.on_deliveries(deliveries)

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        users = list(user_ids)
        for listener in self._listeners:
            listener.on_ephemeral(users, payload)

    def subscribe_calls(self, handler: Callable[[bytes], None]) -> None:
        """Call signalling commands (sup/domain/callsignal.py): every process sees all, in one order."""
        self._call_handlers.append(handler)

    async def announce_calls(self, payload: bytes) -> None:
        for handler in self._call_handlers:
            handler(payload)

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        revoked = list(device_ids)
        for listener in self._listeners:
            listener.on_revoked(revoked)


class _Wire(msgspec.Struct, array_like=True):
    origin: str
    deliveries: list[tuple[str, int, bytes]] = []
    user_ids: list[str] = []
    payload: bytes = b""
    calls: bytes = b""
    revoked: list[str] = []  # last: a process of the previous version decodes the rest as before


# Hints merged into one bus message at most (a message of 256 sends' deliveries is ~100 KiB).
_MAX_MERGED = 256


class RedisBus(MemoryBus):
    """Several processes: local listeners directly, the others through Redis pub/sub.

    The channel carries the install's namespace (`bus.namespace`, by default the database's
    install id), so that installs sharing one Redis do not hear each other.
    """

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__()
        self._url = url
        self.channel = redis_name(namespace, "events")
        self._origin = new_origin()
        self._redis = None
        self._reader: asyncio.Task[None] | None = None
        self._writer: asyncio.Task[None] | None = None
        # Publishing happens off the commit path: a slow or absent Redis must not hold sends.
        self._outbox: asyncio.Queue[_Wire] = asyncio.Queue(maxsize=10_000)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(_Wire)

    async def start(self) -> None:
        try:
            import redis.asyncio as aioredis
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise RuntimeError("the redis:// bus needs the redis extra: pip install 'sup-messenger[redis]'") from exc
        self._redis = aioredis.from_url(self._url, socket_timeout=5, socket_connect_timeout=5)
        self._reader = asyncio.create_task(self._read(), name="redis-bus-reader")
        self._writer = asyncio.create_task(self._write(), name="redis-bus-writer")

    async def close(self) -> None:
        await stop_task(self._reader)
        await stop_task(self._writer)
        if self._redis is not None:
            await self._redis.aclose()
        await super().close()

    async def announce(self, deliveries: Sequence[Delivery]) -> None:
        await super().announce(deliveries)
        await self._publish(_Wire(self._origin, deliveries=[(d.device_id, d.seq, d.payload) for d in deliveries]))

    async def announce_ephemeral(self, user_ids: Iterable[str], payload: bytes) -> None:
        users = list(user_ids)
        await super().announce_ephemeral(users, payload)
        await self._publish(_Wire(self._origin, user_ids=users, payload=payload))

    async def announce_calls(self, payload: bytes) -> None:
        # Not handled here first: every process, this one too, applies call commands in the order
        # Redis delivers them, which is the same order for every subscriber.
        await self._publish(_Wire(self._origin, calls=payload))

    async def announce_revoked(self, device_ids: Sequence[str]) -> None:
        revoked = list(device_ids)
        await super().announce_revoked(revoked)
        # Unlike a delivery hint, a lost notice is not covered at once: the hub's periodic check
        # closes such a socket within websocket.catch_up_seconds, and a send checks its device.
        await self._publish(_Wire(self._origin, revoked=revoked))

    async def _publish(self, wire: _Wire) -> None:
        try:
            self._outbox.put_nowait(wire)
        except asyncio.QueueFull:  # Redis is far behind: the others catch up from the database
            log.warning("bus outbox full; dropping a hint")

    def _take(self, first: _Wire) -> list[bytes]:
        """What is waiting in the outbox, as few messages as it can be: every waiting delivery in one.

        Each message costs every other process a read and a decode, and this one a round trip: one
        per group commit, not one per send, keeps N processes' CPU per message near one process's.
        """
        wires = [first]
        while len(wires) < _MAX_MERGED and not self._outbox.empty():
            wires.append(self._outbox.get_nowait())
        deliveries = [d for w in wires for d in w.deliveries]
        merged = [_Wire(self._origin, deliveries=deliveries)] if deliveries else []
        merged += [w for w in wires if w.user_ids or w.calls or w.revoked]  # in their order
        return [self._encoder.encode(w) for w in merged]

    async def _write(self) -> None:
        failing = False
        while True:
            for data in self._take(await self._outbox.get()):
                try:
                    await self._redis.publish(self.channel, data)
                    if failing:
                        log.info("redis publish works again")
                    failing = False
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Redis down: other processes catch up from the database
                    if not failing:
                        log.warning("redis publish failed (%s); other processes catch up from the database", exc)
                    failing = True

    async def _read(self) -> None:
        while True:
            try:
                pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.channel)
                log.info("subscribed to %s", self.channel)
                async for message in pubsub.listen():
                    self._dispatch(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis subscription lost (%s); retrying", exc)
                await asyncio.sleep(1)

    def _dispatch(self, data: bytes) -> None:
        try:
            wire = self._decoder.decode(data)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed bus message")
            return
        if wire.calls:
            for handler in self._call_handlers:
                handler(wire.calls)
        if wire.origin == self._origin:
            return
        if wire.deliveries:
            # Every process hears every hint, for devices it mostly does not hold (3/4 of them with four):
            # a Delivery is made only for those it does (issue 15: 3 % of a process's CPU at four).
            at = time.monotonic()
            for listener in self._listeners:
                holds = listener.holds
                deliveries = [Delivery(d, s, p, at) for d, s, p in wire.deliveries if holds(d)]
                if deliveries:
                    listener.on_deliveries(deliveries)
        if wire.user_ids:
            for listener in self._listeners:
                listener.on_ephemeral(wire.user_ids, wire.payload)
        if wire.revoked:
            for listener in self._listeners:
                listener.on_revoked(wire.revoked)


def redis_name(namespace: str, *parts: str) -> str:
    """A Redis key or channel of this install: every one SUP uses is made here."""
    if not namespace:
        raise ValueError("a Redis name needs the install's namespace")
    return ":".join(("sup", namespace, *parts))


def open_bus(url: str, namespace: str = "") -> EventBus:
    if url.startswith("memory://"):
        return MemoryBus()
    if url.startswith(("redis://", "rediss://")):
        return RedisBus(url, namespace)
    raise ValueError(f"unsupported bus URL scheme: {url.split(':', 1)[0]!r}; use memory:// or redis://")
