"""My devices under /api/v1/devices: every login is one."""

from __future__ import annotations

from sup.domain.accounts import Device
from sup.http import schemas as s
from sup.http.api import Call


async def list_devices(call: Call) -> s.DeviceList:
    """GET /api/v1/devices: my logged-in devices."""
    return s.DeviceList(devices=await call.services.accounts.list_devices(call.who))


async def rename_device(call: Call, body: s.DeviceRename) -> Device:
    """PATCH /api/v1/devices/{device_id}: rename one of my devices."""
    return await call.services.accounts.rename_device(call.who, call.param("device_id"), body.name)


async def revoke_device(call: Call) -> None:
    """DELETE /api/v1/devices/{device_id}: log one of my devices out at once."""
    await call.services.accounts.revoke_device(call.who, call.param("device_id"))
