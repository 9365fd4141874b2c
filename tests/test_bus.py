"""The Redis bus between processes: hints waiting together travel as one message, nothing lost or reordered."""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import redis.asyncio as aioredis

from sup.bus.events import RedisBus
from sup.delivery import Delivery
from tests.conftest import require_redis


class _Heard:
    """What reached another process, of this test's devices (other runs may share the Redis and its channel)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.deliveries: list[Delivery] = []
        self.strays: list[Delivery] = []  # hints for devices not held here: the bus should skip them
        self.ephemeral: list[tuple[list[str], bytes]] = []

    def holds(self, device_id: str) -> bool:
        return device_id.startswith(self.prefix) and not device_id.endswith("elsewhere")

    def on_deliveries(self, deliveries) -> None:
        self.deliveries += [d for d in deliveries if d.device_id.startswith(self.prefix)]
        self.strays += [d for d in deliveries if not self.holds(d.device_id)]

    def on_ephemeral(self, user_ids, payload) -> None:
        if list(user_ids) and user_ids[0].startswith(self.prefix):
            self.ephemeral.append((list(user_ids), payload))


async def test_waiting_hints_go_out_as_one_message_in_order():
    """A batch's announcements (one per send) reach the other processes as one bus message, not one each:
    every other process reads and decodes each message, so one per send made N processes cost N times more."""
    url = await require_redis()
    watcher = aioredis.from_url(url)
    pubsub = watcher.pubsub(ignore_subscribe_messages=True)
    prefix = uuid.uuid4().hex
    sender, receiver = RedisBus(url, prefix), RedisBus(url, prefix)  # a namespace of this test's own
    await pubsub.subscribe(sender.channel)
    heard = _Heard(prefix)
    receiver.subscribe(heard)
    await sender.start()
    await receiver.start()
    try:
        await asyncio.sleep(0.5)  # the receiver's subscription is up
        sent = [Delivery(f"{prefix}-device-{i % 3}", i, b'{"n":%d}' % i) for i in range(40)]
        for i in range(0, 40, 4):  # ten commits' announcements, queued before the writer runs
            await sender.announce(sent[i : i + 4])
        await sender.announce([Delivery(f"{prefix}-device-elsewhere", 1, b"{}")])  # held by no listener here
        await sender.announce_ephemeral([f"{prefix}-user"], b'{"type":"typing"}')
        messages = []  # ours: other test runs may share this Redis and its channel
        async with asyncio.timeout(10):
            while len(heard.deliveries) < 40 or not heard.ephemeral:
                await asyncio.sleep(0.05)
            quiet_until = asyncio.get_running_loop().time() + 1.0  # a skipped subscribe reply reads as None too
            while asyncio.get_running_loop().time() < quiet_until:
                message = await pubsub.get_message(timeout=0.2)
                if message is not None:
                    wire = msgspec.msgpack.decode(message["data"])
                    if wire[0] == sender._origin:
                        messages.append(wire)
    finally:
        await sender.close()
        await receiver.close()
        await pubsub.aclose()
        await watcher.aclose()
    assert len(messages) == 2  # in all: the deliveries, and the ephemeral event
    assert len(messages[0][1]) == 41  # the one for a device held elsewhere travels, and is skipped there
    assert [(d.device_id, d.seq, d.payload) for d in heard.deliveries] == [
        (d.device_id, d.seq, d.payload) for d in sent
    ]
    assert heard.ephemeral == [([f"{prefix}-user"], b'{"type":"typing"}')]
    assert heard.strays == []
