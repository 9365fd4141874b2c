"""My account as a whole under /api/v1/account: deleting it, and exporting its data."""

from __future__ import annotations

from aiohttp import web

from sup.domain.exports import AccountExport, AccountExports
from sup.http import schemas as s
from sup.http.api import Call
from sup.http.handlers.media import stream_file


async def delete_account(call: Call, body: s.AccountDelete) -> None:
    """POST /api/v1/account/delete: delete my account for good (password, and a 2FA code if on)."""
    await call.services.erasure.delete_own(
        call.who, password=body.password, totp_code=body.totp_code, recovery_code=body.recovery_code
    )


async def request_export(call: Call) -> AccountExport:
    """POST /api/v1/account/exports: start building a zip of my data (one a day); 202 while it is built."""
    return await call.services.exports.request(call.who.user_id)


async def list_exports(call: Call) -> AccountExports:
    """GET /api/v1/account/exports: my data exports, newest first."""
    return await call.services.exports.list_mine(call.who.user_id)


async def get_export(call: Call) -> AccountExport:
    """GET /api/v1/account/exports/{export_id}: one export: pending, ready (until it expires) or failed."""
    return await call.services.exports.get(call.who.user_id, call.param("export_id"))


async def download_export(call: Call) -> web.StreamResponse:
    """GET /api/v1/account/exports/{export_id}/download: the zip, once ready (Range, ETag)."""
    download = await call.services.exports.download(call.who.user_id, call.param("export_id"))
    return await stream_file(call.request, download)
