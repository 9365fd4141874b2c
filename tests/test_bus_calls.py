"""The bus's call channel, on both buses: every process sees every call command, its own too, in one order.

Call signalling (sup/domain/callsignal.py) decides on each process by applying commands in the order the bus
delivers them; that is only sound if all processes get the same order."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from sup.bus.events import open_bus
from tests.conftest import require_redis


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_every_subscriber_gets_every_call_command_in_one_order(kind: str):
    url = await require_redis() if kind == "redis" else "memory://"
    namespace = f"test-{uuid.uuid4().hex[:8]}"  # this test's own, apart from every other on this Redis
    buses = [open_bus(url, namespace), open_bus(url, namespace)] if kind == "redis" else [open_bus(url)]
    seen: list[list[bytes]] = [[], [], []]
    for bus in buses:
        await bus.start()
    try:
        # Two subscribers per process on the memory bus (one process), one per process on Redis (two processes).
        handlers = [buses[0], buses[0], buses[-1]] if kind == "memory" else [buses[0], buses[1], buses[1]]
        for n, bus in enumerate(handlers):
            bus.subscribe_calls(seen[n].append)
        if kind == "redis":
            await asyncio.sleep(0.3)  # the subscriptions are made in the readers' tasks

        async def publish(bus, tag: bytes) -> None:
            for i in range(200):
                await bus.announce_calls(tag + str(i).encode())
                if i % 20 == 0:
                    await asyncio.sleep(0)  # interleave the two publishers

        await asyncio.gather(publish(buses[0], b"a"), publish(buses[-1], b"b"))
        for _ in range(200):
            if all(len(s) >= 400 for s in seen):
                break
            await asyncio.sleep(0.02)
        assert all(len(s) == 400 for s in seen), [len(s) for s in seen]
        assert seen[0] == seen[1] == seen[2]  # one order for all, publishers included
        assert [p for p in seen[0] if p.startswith(b"a")] == [b"a%d" % i for i in range(200)]
    finally:
        for bus in buses:
            await bus.close()
