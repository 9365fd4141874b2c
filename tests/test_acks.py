"""The ack writer: acks are stored together, and `flush` and `close` return only once they are stored."""

from __future__ import annotations

import asyncio

from sup.ws.acks import AckWriter


class SlowStore:
    """Writes of the `held` devices wait until let go, as a Postgres transaction may; records what committed."""

    def __init__(self, *held: str) -> None:
        self.held = set(held)
        self.go = asyncio.Event()
        self.started: list[dict[str, int]] = []
        self.committed: list[dict[str, int]] = []

    async def write(self, due: dict[str, int]) -> None:
        self.started.append(due)
        if self.held & set(due):
            await self.go.wait()
        self.committed.append(due)


async def until(condition, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_flush_waits_for_a_write_already_under_way():
    # A socket that closed stores its device's ack on its own; a flush right after must not return first.
    store = SlowStore("a")
    acks = AckWriter(store.write, interval=60)
    acks.ack("a", 5)
    closing = asyncio.create_task(acks.flush_device("a"))
    await until(lambda: store.started == [{"a": 5}])
    acks.ack("b", 7)
    flushing = asyncio.create_task(acks.flush())
    await asyncio.sleep(0.05)
    assert store.committed == [{"b": 7}]  # its own write is done,
    assert not flushing.done()  # but a's, taken before it, is not yet: the flush waits for it
    store.go.set()
    await asyncio.wait_for(asyncio.gather(closing, flushing), 2)
    assert store.committed == [{"b": 7}, {"a": 5}]
    await acks.close()


async def test_close_does_not_cancel_the_acks_the_interval_took():
    store = SlowStore("a")
    acks = AckWriter(store.write, interval=0.01)
    acks.ack("a", 3)
    acks.ack("b", 4)
    await until(lambda: store.started == [{"a": 3, "b": 4}])  # the interval's write holds them now
    closing = asyncio.create_task(acks.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    store.go.set()
    await asyncio.wait_for(closing, 2)
    assert store.committed == [{"a": 3, "b": 4}]


async def test_later_acks_of_a_device_replace_earlier_ones_and_never_go_back():
    store = SlowStore()
    acks = AckWriter(store.write, interval=60)
    acks.ack("a", 3)
    acks.ack("a", 9)
    acks.ack("a", 4)
    acks.ack("b", 1)
    await acks.flush()
    assert store.committed == [{"a": 9, "b": 1}]
    await acks.flush()  # nothing new: no write
    assert store.committed == [{"a": 9, "b": 1}]
    await acks.close()
