"""SDK clients (sup.client.Client) for end-to-end tests: `People` makes them, the rest reads what they receive.

The `people` fixture (tests/conftest.py) gives each test its own, closed at its end.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from sup.client.client import Client, NewDevice, ReceivedMessage, SafetyNumberChanged, Undecryptable
from sup.client.crypto import DeviceCrypto
from sup.client.store import ClientStore
from tests.conftest import Server, new_username

PASSWORD = "correct horse battery"

_names = itertools.count()


class People:
    """Clients made for one test, closed at its end."""

    def __init__(self, server: Server, tmp_path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.clients: list[Client] = []

    def _path(self) -> str:
        return str(self.tmp_path / f"device-{next(_names)}.db")

    async def register(self) -> Client:
        client = await Client.register(self.server.url, self._path(), new_username(), PASSWORD)
        self.clients.append(client)
        await client.start()
        return client

    async def in_contact(self, first: str = "first contact") -> tuple[Client, Client, dict[str, Any]]:
        """Alice and Bob and their direct chat, once Alice's `first` message has reached Bob: each
        device has met the other's, as every test of what changes after first contact needs."""
        alice, bob = await self.register(), await self.register()
        chat = await alice.direct_chat(bob.user_id)
        await alice.send_text(chat["id"], first)
        assert [m.text for m in await receive(bob, 1)] == [first]
        return alice, bob, chat

    async def another_device(self, of: Client, device_name: str = "") -> Client:
        client = await Client.login(self.server.url, self._path(), of.username or "", PASSWORD, device_name=device_name)
        self.clients.append(client)
        await client.start()
        return client

    async def with_new_identity(self, client: Client) -> Client:
        """`client`'s device back with its tokens but a new identity key, as after losing its keys."""
        path = str(client.store.path)
        self.clients.remove(client)
        await client.close()
        store = await ClientStore.open(path)
        await store.set(crypto=DeviceCrypto.create().to_bytes(), keys_published=0)
        await store.close()
        reopened = await Client.open(path)
        self.clients.append(reopened)
        await reopened.start()
        return reopened

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))


async def receive(client: Client, count: int, within: float = 15) -> list[ReceivedMessage | Undecryptable]:
    """The next `count` messages (decrypted or not) of one client; safety-number and new-device notices are skipped."""
    found: list[Any] = []
    while len(found) < count:
        item = await client.next_message(within)
        if not isinstance(item, SafetyNumberChanged | NewDevice):
            found.append(item)
    return found


async def next_of(client: Client, *kinds: type, within: float = 10) -> Any:
    """The next item of one of these kinds; the others before it are skipped."""
    while True:
        item = await client.next_message(within)
        if isinstance(item, kinds):
            return item


async def assert_quiet(*clients: Client) -> None:
    for client in clients:
        with pytest.raises(TimeoutError):
            await receive(client, 1, within=0.3)
