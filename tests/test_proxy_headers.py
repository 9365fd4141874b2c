"""Behind a TLS-terminating proxy: the scheme a client used reaches SUP only as X-Forwarded-Proto,
believed from server.trusted_proxies and from nobody else."""

from __future__ import annotations

import os

from tests.conftest import Server, ServerFactory

HTTPS = {"X-Forwarded-Proto": "https"}


async def _signed_url(server: Server, headers: dict[str, str]) -> str:
    account = await server.api.register()
    upload = await server.api.upload(account, os.urandom(1000), encrypted=True)
    assert upload.status == 201, upload.body
    reply = await server.api.get(f"/api/v1/media/{upload.body['id']}/url", token=account.access_token, headers=headers)
    assert reply.status == 200, reply.body
    return reply.body["url"]


async def test_a_trusted_proxy_makes_signed_urls_https(server_factory: ServerFactory):
    server = await server_factory(SUP_SERVER_TRUSTED_PROXIES="127.0.0.1,::1")
    host = server.url.removeprefix("http://")
    assert (await _signed_url(server, HTTPS)).startswith(f"https://{host}/api/v1/media/download/")
    assert (await _signed_url(server, {"X-Forwarded-Proto": "http"})).startswith(f"http://{host}/")
    # A chain of proxies appends: the value of the one next to SUP counts.
    assert (await _signed_url(server, {"X-Forwarded-Proto": "http, https"})).startswith("https://")
    assert (await _signed_url(server, {"X-Forwarded-Proto": "gopher"})).startswith("http://")


async def test_the_header_from_an_untrusted_peer_is_ignored(server_factory: ServerFactory):
    for trusted in ("", "10.0.0.0/8"):
        server = await server_factory(SUP_SERVER_TRUSTED_PROXIES=trusted)
        assert (await _signed_url(server, HTTPS)).startswith("http://127.0.0.1:")


async def test_public_url_wins(server_factory: ServerFactory):
    server = await server_factory(
        SUP_SERVER_TRUSTED_PROXIES="127.0.0.1", SUP_SERVER_PUBLIC_URL="https://chat.example.org/"
    )
    url = await _signed_url(server, {"X-Forwarded-Proto": "http"})
    assert url.startswith("https://chat.example.org/api/v1/media/download/")
