"""The WebSocket hub: which connections this process holds, and what reaches them.

It listens to the event bus and routes each delivery to the connections of its device,
and closes the connections of a device the moment any process announces it logged out.
A periodic check against the database (one query for all connected devices) catches up
connections whose hint was lost, closes those whose device was revoked (should that notice
be lost too), and closes those that stopped taking in what they are sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Sequence
from typing import Any

from aiohttp import web

from sup.bus.process import stop_task
from sup.delivery import Delivery
from sup.domain.stream import EventStream
from sup.observe.metrics import Metrics
from sup.transport.statuses import Close
from sup.ws.acks import AckWriter
from sup.ws.connection import Connection
from sup.ws.masking import MaskCheckingResponse

log = logging.getLogger("sup.ws")

_CHECK_CHUNK = 500
_BEAT_CHUNK = 200  # sockets pinged between two yields to the event loop (a ping is ~10 µs of Python)


class Hub:
    """Owned by the App; reached by the gateway through HUB."""

    def __init__(
        self, stream: EventStream, catch_up_seconds: float, send_timeout: float, stall_min_bytes: int = 16384
    ) -> None:
        self._stream = stream
        self._interval = catch_up_seconds
        self._send_timeout = send_timeout  # the window over which progress is measured
        self._stall_min_bytes = stall_min_bytes
        self._by_device: dict[str, set[Connection]] = {}
        self._by_user: dict[str, set[Connection]] = {}
        self.sockets: set[MaskCheckingResponse] = set()
        self._checker: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.acks = AckWriter(stream.ack_many)
        self.metrics: Metrics | None = None  # set by the App; handed to each connection

    # -- bus listener ----------------------------------------------------------------------

    def holds(self, device_id: str) -> bool:
        return device_id in self._by_device

    def on_deliveries(self, deliveries: Sequence[Delivery]) -> None:
        for delivery in deliveries:
            for connection in self._by_device.get(delivery.device_id, ()):
                connection.push(delivery)

    def on_ephemeral(self, user_ids: Sequence[str], payload: bytes) -> None:
        for user_id in user_ids:
            for connection in self._by_user.get(user_id, ()):
                connection.push_ephemeral(payload)

    def on_revoked(self, device_ids: Sequence[str]) -> None:
        for device_id in device_ids:
            for connection in list(self._by_device.get(device_id, ())):
                connection.close_soon(Close.REVOKED, b"this device was logged out")

    # -- connections -------------------------------------------------------------------------

    def watch(self, ws: MaskCheckingResponse, heartbeat_seconds: float) -> None:
        """Hold this socket until it closes; one heartbeat loop pings all of them (not a timer per socket)."""
        self.sockets.add(ws)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat_forever(heartbeat_seconds / 2), name="ws-heartbeat")

    def add(self, connection: Connection) -> None:
        connection.metrics = self.metrics
        connection.spawn = self.spawn
        self._by_device.setdefault(connection.device_id, set()).add(connection)
        self._by_user.setdefault(connection.user_id, set()).add(connection)

    def connections_of(self, device_id: str) -> list[Connection]:
        """This device's connections on this process."""
        return list(self._by_device.get(device_id, ()))

    def remove(self, connection: Connection) -> None:
        for index, key in ((self._by_device, connection.device_id), (self._by_user, connection.user_id)):
            group = index.get(key)
            if group is not None:
                group.discard(connection)
                if not group:
                    del index[key]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `coro` as a task the hub owns: awaited (with a timeout) when the hub closes."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._checker = asyncio.create_task(self._check_forever(), name="ws-catch-up")

    async def close(self) -> None:
        """Going away: every socket is told so (1001) and closed; clients resume elsewhere."""
        for task in (self._checker, self._heartbeat):
            await stop_task(task)
        if self.sockets:  # at once, each bounded: a client that reads nothing must not hold the shutdown
            await asyncio.gather(*(_going_away(ws) for ws in list(self.sockets)))
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=5)
            for task in late:  # e.g. a dropped socket still flushing its close frame: abort it now
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=1)
        await self.acks.close()

    async def _beat_forever(self, tick: float) -> None:
        while True:
            await asyncio.sleep(tick)
            for i, ws in enumerate(list(self.sockets)):
                if i % _BEAT_CHUNK == _BEAT_CHUNK - 1:  # idle sockets are pinged in the same tick: let others run
                    await asyncio.sleep(0)
                try:
                    await ws.beat()
                except Exception:  # a socket that broke meanwhile: its session ends it
                    log.debug("heartbeat failed", exc_info=True)

    async def _check_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.check()
            except Exception:  # a failed check is retried next round
                log.warning("catch-up check failed", exc_info=True)

    async def check(self) -> None:
        now = time.monotonic()
        for i, connection in enumerate([c for connections in self._by_device.values() for c in connections]):
            if i % _CHECK_CHUNK == _CHECK_CHUNK - 1:  # thousands of sockets: let deliveries run between chunks
                await asyncio.sleep(0)
            if connection.stalled(now, self._send_timeout, self._stall_min_bytes):  # it stopped reading
                connection.close_soon(Close.RESUME, b"you stopped reading: resume from your cursor")
        devices = list(self._by_device)
        for start in range(0, len(devices), _CHECK_CHUNK):
            chunk = devices[start : start + _CHECK_CHUNK]
            active = await self._stream.stream_ends(chunk)
            for device_id in chunk:
                connections = self._by_device.get(device_id, ())
                if device_id not in active:
                    for connection in list(connections):
                        connection.close_soon(Close.REVOKED, b"this device was logged out")
                    continue
                for connection in connections:
                    connection.behind(active[device_id])


async def _going_away(ws: web.WebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await ws.close(code=Close.GOING_AWAY, message=b"server shutting down")


HUB = web.AppKey("hub", Hub)
