"""What the parts of one device's client share: its store, REST client, crypto state and lock, and the inbox.

`Client` makes one `DeviceState` and hands it to each part (chats, devices, sending, receiving, prekeys);
each part keeps its own caches. Changes that belong together are collected in a `Work` and committed in
one store transaction by `commit`; what the items and actions of a `Work` announce is published only after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from sup.client.crypto import DeviceCrypto
from sup.client.http import SupHttp
from sup.client.store import Batch, ClientStore, StoreInUse
from sup.client.values import ClientError, Item

log = logging.getLogger("sup.client")


class Stop:
    """The end of `messages()`: the client closed (error None) or the event stream ended with `error`."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


@dataclass
class Work:
    """What one batch of events changed, committed together."""

    batch: Batch = field(default_factory=Batch)
    items: list[Item] = field(default_factory=list)
    crypto_changed: bool = False
    # group messages set aside in this batch, not yet in the store: (chat, user, device) -> frames
    pending: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    after_commit: list[Callable[[], Any]] = field(default_factory=list)
    shown: set[str] = field(default_factory=set)  # message ids delivered or reported in this batch
    # what this batch stored for each message it delivered (not in the store until the commit)
    known: dict[str, dict[str, Any]] = field(default_factory=dict)


class DeviceState:
    """One logged-in device's shared state; `crypto` is replaced when a failed commit rolls it back."""

    def __init__(
        self, store: ClientStore, http: SupHttp, crypto: DeviceCrypto, *, accept_identity_changes: bool = True
    ) -> None:
        self.store = store
        self.http = http
        self.crypto = crypto
        # Signal's default: a changed identity key is accepted and shown (SafetyNumberChanged); with
        # False, encryption to it fails with UntrustedIdentity until `trust_identity` is called.
        self.accept_identity_changes = accept_identity_changes
        self.lock = asyncio.Lock()  # the crypto state and its persistence, one change at a time
        self.inbox: asyncio.Queue[Item | Stop] = asyncio.Queue()
        self.closed = False
        self.tasks: set[asyncio.Task[Any]] = set()
        # Caches that a failed commit leaves ahead of the store register how to forget what they learnt.
        self.on_rollback: list[Callable[[], None]] = []

    @property
    def user_id(self) -> str:
        return self.store.user_id or ""

    @property
    def device_id(self) -> str:
        return self.store.device_id or ""

    @contextlib.asynccontextmanager
    async def changing_crypto(self) -> AsyncIterator[None]:
        """Hold the crypto state for a change that is persisted before the block ends."""
        async with self.lock:
            if self.closed:
                # The event pump may have stopped mid-batch: the state in memory is ahead of the store
                # and must never be written now.
                raise ClientError("the client is closed")
            yield

    async def save_crypto(self) -> None:
        await self.store.set(crypto=self.crypto.to_bytes())

    async def commit(self, work: Work) -> None:
        """Store what a batch changed, in one transaction (caller holds the lock)."""
        if work.crypto_changed:
            work.batch.set(crypto=self.crypto.to_bytes())
        try:
            await self.store.apply(work.batch)
        except BaseException:
            # Nothing was kept: forget the ratchet steps taken in memory, so the replay decrypts again.
            if self.store.crypto is not None:
                self.crypto = load_crypto(self.store)
            for forget in self.on_rollback:
                forget()
            raise

    def publish(self, work: Work) -> None:
        """After the commit: hand out the items, start the follow-up actions."""
        for item in work.items:
            self.inbox.put_nowait(item)
        for action in work.after_commit:
            self.spawn(action())

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        """Run `coro` in the background, owned here: cancelled and awaited when the client closes."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed: %r", task.exception())

    async def cancel_tasks(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def load_crypto(store: ClientStore) -> DeviceCrypto:
    assert store.crypto is not None and store.user_id and store.device_id
    crypto = DeviceCrypto.from_bytes(store.crypto)
    # Sessions authenticate both ends' addresses; a state saved without its own address learns it here.
    crypto.set_address(store.user_id, store.device_id)
    return crypto


async def open_store(store_path: str) -> ClientStore:
    try:
        return await ClientStore.open(store_path)
    except StoreInUse as error:
        raise ClientError(str(error)) from error
