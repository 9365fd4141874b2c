"""The devices of the people a device talks to: listed by the directory, met, and their identity keys.

Part of `Client` (see client.py; docs/e2e.md, "How keys are verified"). The first time the SDK lists a
user's devices it records them ("met"); every device of that user first seen later is a `NewDevice`,
shown before anything is encrypted to it. A different identity key for a device met before is an
identity change: accepted and shown as `SafetyNumberChanged` by default, refused with
`UntrustedIdentity` under `accept_identity_changes=False`. The safety number covers every device key
recorded here as well as the directory's current list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from sup.client.chats import Chats
from sup.client.crypto import UntrustedIdentity, safety_number
from sup.client.http import ApiError
from sup.client.state import DeviceState, Work
from sup.client.store import Batch
from sup.client.values import ClientError, NewDevice, SafetyNumberChanged

log = logging.getLogger("sup.client")


class Devices:
    """The directory's device lists (cached) and the devices met (stored, cached in `met`)."""

    def __init__(self, state: DeviceState, chats: Chats) -> None:
        self.state = state
        self.chats = chats
        self.listed: dict[str, dict[str, bytes]] = {}  # user id -> device id -> identity key
        self.names: dict[tuple[str, str], str] = {}  # (user id, device id) -> the name the directory gave
        # The devices met (a cache of the store's `devices`); checked and updated without an await between.
        self.met: dict[str, dict[str, bytes]] = {}
        # devices met in a batch that was not committed are met again (and shown again) on the replay
        state.on_rollback.append(self.met.clear)

    async def user_devices(self, user_id: str) -> dict[str, bytes]:
        devices = self.listed.get(user_id)
        if devices is None:
            records = await self.state.http.user_keys(user_id)
            devices = {d["device_id"]: d["identity_key"] for d in records}
            self.names.update({(user_id, d["device_id"]): str(d.get("device_name") or "") for d in records})
            self.listed[user_id] = devices
        return devices

    def forget_listed(self, user_ids: Iterable[str] | None = None) -> None:
        """Refetch these users' device lists (every user's, with None) before the next send."""
        if user_ids is None:
            self.listed.clear()
        for user_id in user_ids or ():
            self.listed.pop(user_id, None)

    async def recipients(self, chat_id: str) -> dict[str, tuple[str, bytes]]:
        """device id -> (user id, identity key) for every device that must read what I send here."""
        members = await self.chats.member_ids(chat_id)
        users = set(members) | {self.state.user_id}
        listed = await asyncio.gather(*(self.user_devices(u) for u in sorted(users)))
        out: dict[str, tuple[str, bytes]] = {}
        for user_id, devices in zip(sorted(users), listed, strict=True):
            await self.meet(user_id, devices)  # shown before anything is encrypted to a new one
            for device_id, identity_key in devices.items():
                if device_id != self.state.device_id:
                    out[device_id] = (user_id, identity_key)
        return out

    async def without_devices(self, chat_id: str) -> tuple[str, ...]:
        """The other members of a chat that have no device with published keys, as the server says now."""
        self.chats.members.pop(chat_id, None)
        others = [m for m in await self.chats.member_ids(chat_id) if m != self.state.user_id]
        self.forget_listed([m for m in others if not self.listed.get(m)])  # an empty list may be old news
        listed = await asyncio.gather(*(self.user_devices(m) for m in others))
        return tuple(sorted(m for m, devices in zip(others, listed, strict=True) if not devices))

    # -- devices met -------------------------------------------------------------------------

    async def known(self, user_id: str) -> dict[str, bytes]:
        """The devices of a user this device has met (device id -> identity key); empty before first contact."""
        known = self.met.get(user_id)
        if known is None:
            loaded = await self.state.store.known_devices(user_id)
            known = self.met.setdefault(user_id, loaded)  # a concurrent caller may have loaded it first
        return known

    async def meet(self, user_id: str, devices: dict[str, bytes], work: Work | None = None) -> list[NewDevice]:
        """Record devices of a user not met before; after the first contact each one is a NewDevice.

        The first contact with a user trusts the devices listed then (as the first identity key of a device
        is trusted). With `work` the records and notices join that batch; else they are stored and shown now.
        """
        known = await self.known(user_id)
        first_contact = not known
        fresh = {d: k for d, k in devices.items() if d not in known and d != self.state.device_id}
        if not fresh:
            return []
        known.update(fresh)  # no await since the check: one notice per device, however many callers
        notices = (
            []
            if first_contact
            else [NewDevice(user_id, d, k, self.names.get((user_id, d), "")) for d, k in sorted(fresh.items())]
        )
        for notice in notices:
            log.warning("user %s has a device not seen before: %s", user_id, notice.device_id)
        if work is not None:
            for device_id, key in fresh.items():
                work.batch.record_device(user_id, device_id, key)
            work.items.extend(notices)
            return notices
        # Shown before the store is awaited: a send running meanwhile finds the device known and encrypts
        # to it, so the notice must already be out (shown twice after a crash beats shown after use).
        for notice in notices:
            self.state.inbox.put_nowait(notice)
        async with self.state.store.batch() as batch:
            for device_id, key in fresh.items():
                batch.record_device(user_id, device_id, key)
        return notices

    async def meet_own(self, identity_key: bytes) -> None:
        """First contact with my own account: its devices now are known, any later one is a NewDevice."""
        user_id = self.state.user_id
        try:
            listed = await self.state.http.user_keys(user_id)
        except ApiError as error:
            log.warning("could not list my own devices: %s", error)
            listed = []
        async with self.state.store.batch() as batch:
            batch.record_device(user_id, self.state.device_id, identity_key)
            for record in listed:
                batch.record_device(user_id, record["device_id"], record["identity_key"])
        self.met.pop(user_id, None)

    async def check_new(self, user_id: str) -> None:
        """After `keys.changed` (added) for a user already met: show the new device now, not at the next send."""
        if not await self.known(user_id):
            return
        self.listed.pop(user_id, None)
        await self.meet(user_id, await self.user_devices(user_id))

    async def on_keys_changed(self, frame: dict[str, Any], work: Work) -> None:
        """`keys.changed`: a device was added, removed, or published a new identity key."""
        user_id = frame["user_id"]
        device_ids = list(frame.get("device_ids") or [])
        crypto = self.state.crypto
        self.listed.pop(user_id, None)
        if frame.get("change") == "added":
            work.after_commit.append(lambda: self.check_new(user_id))
        if frame.get("change") == "removed":
            known = await self.known(user_id)
            for device_id in device_ids:
                known.pop(device_id, None)
                work.batch.forget_device(user_id, device_id)
                if crypto.forget_sender_keys(user_id, device_id):
                    work.crypto_changed = True
        if frame.get("change") in ("removed", "identity"):
            for chat_id in await self.state.store.chats_shared_with(device_ids):
                work.batch.need_rotation(chat_id)
        if frame.get("change") == "identity":
            for device_id in device_ids:
                if crypto.has_session(user_id, device_id):
                    crypto.forget_session(user_id, device_id)
                    work.crypto_changed = True

    # -- identity keys -----------------------------------------------------------------------

    async def record_identity(self, user_id: str, device_id: str, identity_key: bytes, batch: Batch) -> None:
        """Take `identity_key` as the device's from now on (the crypto state must be saved with `batch`)."""
        self.state.crypto.accept_identity(user_id, device_id, identity_key)
        (await self.known(user_id))[device_id] = identity_key
        batch.record_device(user_id, device_id, identity_key)

    async def identity_changed(self, user_id: str, device_id: str, identity_key: bytes) -> None:
        """Before encrypting (caller holds the lock): the directory or a session names a new identity key."""
        if not self.state.accept_identity_changes:
            raise UntrustedIdentity(user_id, device_id, identity_key)
        self.state.crypto.forget_session(user_id, device_id)
        async with self.state.store.batch() as batch:
            await self.record_identity(user_id, device_id, identity_key, batch)
        self.state.inbox.put_nowait(SafetyNumberChanged(user_id, device_id, identity_key))

    async def safety_number(self, user_id: str) -> str:
        mine = await self._identity_keys(self.state.user_id)
        mine.append(self.state.crypto.identity_key)
        theirs = await self._identity_keys(user_id)
        if not theirs:
            raise ClientError("that user has no device with published keys")
        return await asyncio.to_thread(safety_number, self.state.user_id, mine, user_id, theirs)

    async def _identity_keys(self, user_id: str) -> list[bytes]:
        self.listed.pop(user_id, None)
        await self.meet(user_id, await self.user_devices(user_id))
        keys = []
        for device_id, key in (await self.known(user_id)).items():
            if device_id == self.state.device_id:
                continue
            # The key this device encrypts to where it has met the device; else the one recorded when listed.
            recorded = self.state.crypto.peer_identity(user_id, device_id)
            keys.append(recorded if recorded is not None else key)
        return keys


class DevicePart:
    """The ground the parts of a Client that send, receive and call stand on: this device's state, and the
    chats and other devices it knows (one of each per Client, shared by all parts)."""

    def __init__(self, state: DeviceState, chats: Chats, devices: Devices) -> None:
        self.state = state
        self.chats = chats
        self.devices = devices
