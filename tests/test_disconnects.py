"""A client that goes away mid-request is not a server error: no ERROR record, no traceback.

The server here is built as `sup run` builds it (a plain AppRunner), not with aiohttp's
TestServer, which cancels a handler when its client leaves and so never meets the reset
that `sup run` meets when it writes to, or reads from, a closed socket.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sup.app import build_app
from tests.conftest import Account, Api, make_config

BIG = 16 * 1024 * 1024  # more than loopback socket buffers hold, so the server is mid-write when the client leaves


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[int, Account, str]]:
    app = build_app(make_config(str(tmp_path), f"sqlite:///{tmp_path / 'sup.db'}", SUP_SECRET_KEY="k" * 40))
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with aiohttp.ClientSession() as session:
            api = Api(f"http://127.0.0.1:{port}", session)
            account = await api.register()
            upload = await api.upload(account, os.urandom(BIG), encrypted=True)
            assert upload.status == 201, upload.body
        yield port, account, upload.body["id"]
    finally:
        await runner.cleanup()


async def _send_then_vanish(port: int, request: bytes, read: bool) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if read:
        await reader.read(64 * 1024)  # the answer has started
    else:
        await asyncio.sleep(0.3)  # the handler is reading the body
    writer.transport.abort()  # RST: the phone lost its network


async def _until_handled(caplog: pytest.LogCaptureFixture) -> None:
    """Until the server has dealt with the reset, one way (debug) or the other (an error)."""
    for _ in range(100):
        if any(r.levelno >= logging.ERROR or GONE in r.getMessage() for r in caplog.records):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the server never noticed that the client went away")


GONE = "the client went away"


@pytest.mark.parametrize("case", ["download", "upload", "chunk"])
async def test_a_client_that_goes_away_is_logged_at_debug_only(served, caplog, case: str):
    port, account, media_id = served
    auth = f"Authorization: Bearer {account.access_token}\r\n"
    if case == "download":
        request = f"GET /api/v1/media/download/{media_id} HTTP/1.1\r\nHost: sup\r\n{auth}\r\n".encode()
    elif case == "upload":
        request = (
            f"POST /api/v1/media/upload?encrypted=true HTTP/1.1\r\nHost: sup\r\n{auth}"
            "Content-Type: application/octet-stream\r\nContent-Length: 4000000\r\n\r\n"
        ).encode() + os.urandom(100_000)
    else:
        async with aiohttp.ClientSession() as session:
            started = await Api(f"http://127.0.0.1:{port}", session).post(
                "/api/v1/media/uploads", json={"size": BIG, "encrypted": True}, token=account.access_token
            )
        request = (
            f"PUT /api/v1/media/uploads/{started.body['upload_id']}/chunks/0 HTTP/1.1\r\nHost: sup\r\n{auth}"
            f"Content-Length: {started.body['chunk_size']}\r\n\r\n"
        ).encode() + os.urandom(100_000)
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    await _send_then_vanish(port, request, read=case == "download")
    await _until_handled(caplog)
    await asyncio.sleep(0.2)  # anything aiohttp would log after the handler
    errors = [f"{r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == []
    assert any(r.levelno == logging.DEBUG and GONE in r.getMessage() for r in caplog.records)
