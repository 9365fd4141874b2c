"""This device's published keys: the identity key, a signed prekey rotated weekly, one-time prekeys topped up.

Part of `Client` (see client.py). Private keys are always stored before their public halves leave: a prekey
the server hands out must be one this device can still use.
"""

from __future__ import annotations

import time

from sup.client.http import ApiError
from sup.client.state import DeviceState

ONE_TIME_PREKEYS = 100
SIGNED_PREKEY_MAX_AGE = 7 * 86400  # seconds; Signal rotates weekly too


class Prekeys:
    def __init__(self, state: DeviceState) -> None:
        self.state = state

    async def publish(self) -> None:
        """Publish this device's keys, once. The private keys are stored before the public ones leave."""
        state = self.state
        try:
            published = await state.http.device_keys(state.user_id, state.device_id)
        except ApiError as error:
            if error.status != 404:
                raise
            published = None
        if published is None or published["identity_key"] != state.crypto.identity_key:
            async with state.changing_crypto():
                prekeys = state.crypto.generate_one_time_prekeys(ONE_TIME_PREKEYS)
                await state.save_crypto()
            await state.http.publish_keys(state.crypto.identity_key, state.crypto.signed_prekey(), prekeys)
        await state.store.set(keys_published=1)

    async def top_up(self, count: int = ONE_TIME_PREKEYS) -> int:
        """Make and upload more one-time prekeys; the number the server now holds."""
        async with self.state.changing_crypto():
            prekeys = self.state.crypto.generate_one_time_prekeys(count)
            await self.state.save_crypto()  # before upload: a prekey handed out must be one we can use
        return await self.state.http.upload_prekeys(prekeys)

    async def rotate_signed_prekey_if_old(self) -> None:
        status = await self.state.http.prekey_status()
        created = status.get("signed_prekey_created_at")
        if created is not None and time.time() - created / 1000 < SIGNED_PREKEY_MAX_AGE:
            return
        async with self.state.changing_crypto():
            signed = self.state.crypto.rotate_signed_prekey()
            await self.state.save_crypto()
        await self.state.http.upload_prekeys([], signed_prekey=signed)
