"""A new device is announced, by name, before anything is encrypted to it (docs/e2e.md, "How keys are verified").

The server sends `keys.changed` (added) when a device logs in and again when it publishes its keys, the moment
it can be encrypted to; the SDK lists the user's devices again then and yields `NewDevice`, whether or not it
is sending, and the send path shows it anyway before it encrypts to it.
"""

from __future__ import annotations

from typing import Any

from sup.client.client import Client, NewDevice
from tests.people import People, next_of, receive


def watch(client: Client) -> list[tuple[str, Any]]:
    """What `client` shows and encrypts to, in the order it happens."""
    log: list[tuple[str, Any]] = []
    inbox, sender = client._state.inbox, client._sender
    put, encrypt_to = inbox.put_nowait, sender.encrypt_to

    def shown(item: Any) -> None:
        log.append(("shown", item))
        put(item)

    async def encrypting(user_id: str, device_id: str, identity_key: bytes, plaintext: bytes) -> bytes:
        log.append(("encrypted to", device_id))
        return await encrypt_to(user_id, device_id, identity_key, plaintext)

    inbox.put_nowait = shown  # type: ignore[method-assign]
    sender.encrypt_to = encrypting  # type: ignore[method-assign]
    return log


def announced_before_use(log: list[tuple[str, Any]], device_id: str) -> bool:
    shown = [
        n for n, (what, item) in enumerate(log) if what == "shown" and getattr(item, "device_id", None) == device_id
    ]
    used = [n for n, (what, item) in enumerate(log) if what == "encrypted to" and item == device_id]
    return bool(shown) and isinstance(log[shown[0]][1], NewDevice) and (not used or shown[0] < used[0])


async def test_a_new_device_is_announced_by_name_while_nothing_is_sent(people: People):
    alice, bob, _ = await people.in_contact()

    tablet = await people.another_device(bob, device_name="bob's tablet")
    notice = await next_of(alice, NewDevice)  # alice sends nothing: keys.changed alone shows it
    assert notice == NewDevice(bob.user_id, tablet.device_id, tablet.crypto.identity_key, "bob's tablet")

    # my own account: another login of mine is a new device too, named
    laptop = await people.another_device(alice, device_name="work laptop")
    notice = await next_of(alice, NewDevice)
    assert notice == NewDevice(alice.user_id, laptop.device_id, laptop.crypto.identity_key, "work laptop")


async def test_a_new_device_is_announced_before_the_next_send_encrypts_to_it(people: People):
    alice, bob, chat = await people.in_contact()
    log = watch(alice)

    # alice sends at once, before her event stream has brought keys.changed (her device list is cached)
    phone = await people.another_device(bob, device_name="bob's phone")
    await alice.send_text(chat["id"], "who reads this?")
    assert ("encrypted to", phone.device_id) in log
    assert announced_before_use(log, phone.device_id), log
    assert [m.text for m in await receive(phone, 1)] == ["who reads this?"]
    notice = await next_of(alice, NewDevice)
    assert (notice.device_id, notice.device_name) == (phone.device_id, "bob's phone")
