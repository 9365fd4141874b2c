"""What crosses the boundary: ids made canonical, integers parsed strictly, routes matched exactly.

Every value a client sends is parsed once, where it enters, into the one form the rest of the
server uses, before it reaches a rate limit, a cache or SQL.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest

from sup.http.api import ADMIN_PATHS
from sup.http.routes import API, ROUTES
from sup.ids import uuid7
from tests.conftest import Api, Server, plain_group, say, two_in_a_group
from tests.test_admin import make_admin
from tests.test_bad_input import assert_problem

# -- ids ----------------------------------------------------------------------------------------


async def test_an_id_in_upper_case_is_the_same_id_in_paths_queries_and_bodies(api: Api):
    alice, bob = await api.register(), await api.register()
    shouted = bob.user_id.upper()

    profile = await api.get(f"/api/v1/users/{shouted}", token=alice.access_token)
    assert profile.status == 200, profile.body
    assert profile.body["id"] == bob.user_id

    added = await api.post("/api/v1/users/me/contacts", json={"user_id": shouted}, token=alice.access_token)
    assert added.status == 201, added.body
    assert added.body["user"]["id"] == bob.user_id
    again = await api.post("/api/v1/users/me/contacts", json={"user_id": bob.user_id}, token=alice.access_token)
    assert again.status == 201
    contacts = await api.get("/api/v1/users/me/contacts", token=alice.access_token)
    assert [c["user"]["id"] for c in contacts.body["items"]] == [bob.user_id]  # one contact, not two

    chat = await plain_group(api, alice, bob)
    sent = await say(api, alice, chat.upper(), "hello")
    assert sent.status == 201, sent.body
    assert sent.body["chat_id"] == chat
    history = await api.get(f"/api/v1/messages/chat/{chat.upper()}", token=bob.access_token)
    assert history.status == 200 and [m["body"] for m in history.body["items"]] == ["hello"]

    members = await api.get(
        f"/api/v1/chats/{chat}/members", params={"after": alice.user_id.upper()}, token=alice.access_token
    )
    assert members.status == 200, members.body
    assert alice.user_id not in [m["user_id"] for m in members.body["items"]]


async def test_an_id_with_a_trailing_newline_is_refused(api: Api):
    alice, bob = await api.register(), await api.register()
    reply = await api.post("/api/v1/users/me/contacts", json={"user_id": bob.user_id + "\n"}, token=alice.access_token)
    assert_problem(reply, 422, "validation_failed")
    assert reply.body["field"] == "user_id"


@pytest.mark.parametrize("bad", ["not-an-id", "0" * 36, uuid7()[:-1], uuid7() + "0", "\uff46" * 8 + uuid7()[8:]])
async def test_a_path_that_is_no_id_is_404(api: Api, bad: str):
    alice = await api.register()
    reply = await api.get(f"/api/v1/chats/{bad}", token=alice.access_token)
    assert_problem(reply, 404, "not_found")


# -- integers -----------------------------------------------------------------------------------

TOO_BIG = [str(2**63), "99999999999999999999", str(2**64)]
NOT_ASCII_DIGITS = ["²", "١٢", "1e3", "1.0", "+1", "-1", " 1", "1_000", "0x10", ""]


@pytest.mark.parametrize("activity", [*TOO_BIG, *NOT_ASCII_DIGITS])
async def test_a_chat_cursor_with_a_strange_number_is_422(api: Api, activity: str):
    alice = await api.register()
    reply = await api.get("/api/v1/chats", params={"before": f"{activity}_{uuid7()}"}, token=alice.access_token)
    assert_problem(reply, 422, "validation_failed")
    assert reply.body["field"] == "before"


@pytest.mark.parametrize("name", ["before", "after", "limit"])
@pytest.mark.parametrize("value", [*TOO_BIG, *NOT_ASCII_DIGITS])
async def test_history_bounds_that_the_database_cannot_hold_are_422(api: Api, name: str, value: str):
    alice, _, chat = await two_in_a_group(api)
    reply = await api.get(f"/api/v1/messages/chat/{chat}", params={name: value}, token=alice.access_token)
    assert_problem(reply, 422, "validation_failed")
    assert reply.body["field"] == name


async def test_the_largest_cursor_the_database_holds_is_fine(api: Api):
    alice, _, chat = await two_in_a_group(api)
    await say(api, alice, chat, "one")
    largest = str(2**63 - 1)
    before = await api.get(f"/api/v1/messages/chat/{chat}", params={"before": largest}, token=alice.access_token)
    assert before.status == 200 and len(before.body["items"]) == 1
    after = await api.get(f"/api/v1/messages/chat/{chat}", params={"after": largest}, token=alice.access_token)
    assert after.status == 200 and after.body["items"] == []
    chats = await api.get("/api/v1/chats", params={"before": f"{largest}_{uuid7()}"}, token=alice.access_token)
    assert chats.status == 200 and [c["id"] for c in chats.body["items"]] == [chat]


@pytest.mark.parametrize("value", [2**63, 2**64, 10**30])
async def test_body_integers_past_what_the_database_holds_are_422(api: Api, value: int):
    alice, _, chat = await two_in_a_group(api)
    read = await api.post(f"/api/v1/messages/chat/{chat}/read", json={"seq": value}, token=alice.access_token)
    assert_problem(read, 422, "validation_failed")
    upload = await api.post("/api/v1/media/uploads", json={"size": value}, token=alice.access_token)
    assert_problem(upload, 422, "validation_failed")


@pytest.mark.parametrize("index", ["²", "1e3", str(2**63), "-1"])
async def test_a_chunk_index_is_ascii_digits(api: Api, index: str):
    alice = await api.register()
    started = await api.post("/api/v1/media/uploads", json={"size": 10}, token=alice.access_token)
    upload_id = started.body["upload_id"]
    reply = await api.put_chunk(alice, upload_id, index, b"0123456789")
    assert_problem(reply, 422, "validation_failed")


async def test_a_signed_url_expiry_is_ascii_digits(api: Api):
    reply = await api.get(f"/api/v1/media/download/{uuid7()}", params={"expires": "²", "signature": "0" * 64})
    assert_problem(reply, 422, "validation_failed")


# -- routes -------------------------------------------------------------------------------------


def _concrete(path: str) -> str:
    """The route's path with a plausible value for each parameter."""
    values = {"index": "0", "username": "someone"}
    parts = []
    for part in path.split("/"):
        if part.startswith("{"):
            name = part.strip("{}")
            part = values.get(name, str(uuid.UUID(uuid7())))
        parts.append(part)
    return "/".join(parts)


def _methods_by_path() -> dict[str, set[str]]:
    methods: dict[str, set[str]] = defaultdict(set)
    for route in ROUTES:
        methods[route.path].add(route.method)
        if route.method == "GET" and not route.raw:
            methods[route.path].add("HEAD")
    methods[f"{API}/openapi.json"] |= {"GET", "HEAD"}
    return methods


def _allow(reply) -> set[str]:
    return {m.strip() for m in reply.headers.get("Allow", "").split(",") if m.strip()}


async def test_every_route_answers_other_methods_with_its_own_allow_list(server: Server):
    api = server.api
    alice, admin = await api.register(), await make_admin(server)
    for path, methods in _methods_by_path().items():
        url = _concrete(path)
        # An admin path exists for administrators only: to alice, any method there is a 404.
        caller = admin if path.startswith(ADMIN_PATHS) else alice
        for method in ("OPTIONS", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
            if method in methods:
                continue
            if caller is admin:
                assert (await api.request(method, url, token=alice.access_token)).status == 404, (method, path)
            reply = await api.request(method, url, token=caller.access_token)
            assert reply.status == 405, (method, path, reply.status, reply.body)
            assert _allow(reply) == methods, (method, path, reply.headers.get("Allow"))
            if method != "HEAD":
                assert reply.body["code"] == "method_not_allowed", (method, path)


async def test_a_fixed_path_is_never_taken_for_a_parameter(api: Api):
    alice = await api.register()
    listing = await api.get("/api/v1/media/uploads", token=alice.access_token)
    assert_problem(listing, 405, "method_not_allowed")
    assert _allow(listing) == {"POST"}
    options = await api.request("OPTIONS", "/api/v1/media/uploads", token=alice.access_token)
    assert _allow(options) == {"POST"}
    for fixed in ("/api/v1/media/download", "/api/v1/media/thumbnail"):
        reply = await api.get(fixed, token=alice.access_token)
        assert_problem(reply, 404, "not_found")


async def test_me_stands_for_the_caller_wherever_a_user_id_is(api: Api):
    alice = await api.register()
    keys = await api.get("/api/v1/crypto/keys/me/all", token=alice.access_token)
    assert keys.status == 200 and keys.body == {"devices": []}
    profile = await api.get("/api/v1/users/me", token=alice.access_token)
    assert profile.body["id"] == alice.user_id
