"""Bad input gets a clear 4xx problem+json — never a 500, a hang or a partial write."""

from __future__ import annotations

import asyncio
import json

import pytest
from yarl import URL

from tests.conftest import Api, Server, new_username

REGISTER = "/api/v1/auth/register"


def assert_problem(reply, status: int, code: str | None = None) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/problem+json")
    assert {"type", "title", "status", "detail", "code"} <= set(reply.body)
    assert reply.body["status"] == status
    if code:
        assert reply.body["code"] == code


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"{'username': 'x'}",
        b"not json",
        b'{"username": "a",}',
        b"\xff\xfe\x00",
        b'{"a": NaN}',
        b"[1, 2",
        b'{"username": "a\xff", "password": "correct horse battery"}',  # invalid UTF-8 inside a string
    ],
)
async def test_malformed_json_is_400(api: Api, raw: bytes):
    reply = await api.post(REGISTER, data=raw, headers={"Content-Type": "application/json"})
    assert_problem(reply, 400, "malformed_json")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"password": "long enough pw"}, None),  # missing username
        ({"username": "valid_name"}, None),  # missing password
        ({"username": 123, "password": "long enough pw"}, "username"),
        ({"username": ["a"], "password": "long enough pw"}, "username"),
        ({"username": None, "password": "long enough pw"}, "username"),
        ({"username": "valid_name", "password": {"$ne": ""}}, "password"),
        ({"username": "valid_name", "password": "long enough pw", "is_admin": True}, None),
        ({"username": "valid_name", "password": "long enough pw", "display_name": 5}, "display_name"),
        ({"username": "valid_name", "password": "x" * 5000}, "password"),
    ],
)
async def test_missing_extra_and_wrong_typed_fields_are_422(api: Api, body, field):
    reply = await api.post(REGISTER, json=body)
    assert_problem(reply, 422, "validation_failed")
    if field:
        assert reply.body["field"] == field
        assert field in reply.body["detail"]


@pytest.mark.parametrize("payload", [[], "string", 42, None, True])
async def test_json_that_is_not_an_object_is_422(api: Api, payload):
    reply = await api.post(
        REGISTER, data=__import__("json").dumps(payload), headers={"Content-Type": "application/json"}
    )
    assert_problem(reply, 422, "validation_failed")


async def test_empty_body_is_400(api: Api):
    reply = await api.post(REGISTER, data=b"", headers={"Content-Type": "application/json"})
    assert_problem(reply, 400, "invalid_request")


async def test_wrong_content_type_is_415(api: Api):
    reply = await api.post(
        REGISTER, data=b"username=a&password=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_problem(reply, 415, "unsupported_media_type")


async def test_oversized_body_is_413_and_writes_nothing(server: Server):
    api = server.api
    username = new_username()
    limit = server.config.server.max_body_bytes
    big = b'{"username": "%s", "password": "long enough pw", "display_name": "%s"}' % (
        username.encode(),
        b"x" * (limit + 10),
    )
    reply = await api.post(REGISTER, data=big, headers={"Content-Type": "application/json"})
    assert_problem(reply, 413, "body_too_large")
    assert await server.db.fetchval("SELECT COUNT(*) FROM users WHERE username_key = $1", username) == 0


async def test_oversized_chunked_body_is_413(api: Api):
    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    reply = await api.request("POST", REGISTER, data=chunks(), headers={"Content-Type": "application/json"})
    assert_problem(reply, 413)


async def test_huge_declared_content_length_is_refused_before_reading(api: Api):
    reader, writer = await __import__("asyncio").open_connection(*api.base_url.removeprefix("http://").split(":"))
    writer.write(
        b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000000000\r\n\r\n{"
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 413")


async def test_unknown_path_and_method_are_problem_json(api: Api):
    assert_problem(await api.get("/api/v1/nothing-here"), 404, "not_found")
    reply = await api.request("PUT", "/api/v1/auth/login", json={})
    assert_problem(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["Allow"]


async def test_odd_unicode_is_handled(api: Api):
    account = await api.register()
    for name in ["😀" * 64, "\u202eevil"]:
        reply = await api.patch("/api/v1/users/me", json={"display_name": name}, token=account.access_token)
        assert reply.status == 200, reply.body
    # NUL has no place in text (and Postgres would refuse it): 422 wherever it appears.
    reply = await api.patch("/api/v1/users/me", json={"display_name": "a\u0000b"}, token=account.access_token)
    assert_problem(reply, 422, "validation_failed")
    reply = await api.post("/api/v1/auth/login", json={"username": "\u0000" * 10, "password": "whatever pw"})
    assert_problem(reply, 422, "validation_failed")
    reply = await api.get("/api/v1/users/by-username/a%00b", token=account.access_token)
    assert_problem(reply, 422, "validation_failed")
    reply = await api.get("/api/v1/users/me/contacts", params={"after": "\x00"}, token=account.access_token)
    assert_problem(reply, 422, "validation_failed")
    reply = await api.post("/api/v1/auth/login", json={"username": "\\u0000", "password": "whatever pw"})
    assert_problem(reply, 401, "invalid_credentials")


async def test_control_characters_are_refused_in_names(api: Api):
    reply = await api.post(
        REGISTER, json={"username": new_username(), "password": "long enough pw", "display_name": "bell\u0007"}
    )
    assert_problem(reply, 422, "validation_failed")
    reply = await api.post(
        REGISTER, json={"username": new_username(), "password": "long enough pw", "device_name": "esc\u001b[31m"}
    )
    assert_problem(reply, 422, "validation_failed")


async def test_head_is_answered_where_get_is(api: Api):
    reply = await api.request("HEAD", "/health")
    assert reply.status == 200


async def test_another_users_token_cannot_change_my_profile(api: Api):
    me = await api.register()
    other = await api.register()
    reply = await api.patch(f"/api/v1/users/{me.user_id}", json={"display_name": "hacked"}, token=other.access_token)
    assert_problem(reply, 403, "forbidden")


async def test_failed_registration_leaves_nothing_behind(server: Server):
    api = server.api
    taken = await api.register()
    before = await server.db.fetchval("SELECT COUNT(*) FROM user_devices")
    reply = await api.post(REGISTER, json={"username": taken.username.upper(), "password": "long enough pw"})
    assert reply.status == 409
    assert await server.db.fetchval("SELECT COUNT(*) FROM user_devices") == before


async def test_security_headers_are_on_every_answer(api: Api):
    for reply in [await api.get("/health"), await api.get("/nope"), await api.post(REGISTER, data=b"{")]:
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert "aiohttp" not in reply.headers.get("Server", "")


async def _raw_exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (no client would build such a request) and read the answer."""
    url = URL(server.url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=10)  # the server closes after an error
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /api/v1/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line over 8 KiB
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",  # one header too long
        b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(200)) + b"\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Name: y\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",  # TLS to a plain port
    ],
    ids=["long-request-line", "long-header", "too-many-headers", "bad-header", "tls-hello"],
)
async def test_requests_the_http_parser_refuses_get_problem_json(server: Server, request_bytes: bytes):
    status, headers, body = await _raw_exchange(server, request_bytes)
    assert status == 400
    assert headers["content-type"].startswith("application/problem+json"), (headers, body[:200])
    problem = json.loads(body)
    assert problem["code"] == "invalid_request" and problem["status"] == 400 and problem["detail"]
