"""The OpenAPI document is generated from the route table, so it covers every route."""

from __future__ import annotations

import re
import uuid

from sup.http.routes import ROUTES
from tests.conftest import Api


async def test_openapi_lists_every_route_with_its_schemas(api: Api):
    reply = await api.get("/api/v1/openapi.json")
    assert reply.status == 200
    doc = reply.body
    assert doc["openapi"].startswith("3.1")
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["summary"], route.path
        if route.body is not None:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
        assert ("security" in op) == route.auth
    login = doc["components"]["schemas"]["LoginRequest"]
    assert set(login["required"]) == {"username", "password"}
    assert login["properties"]["totp_code"]
    register = doc["components"]["schemas"]["RegisterRequest"]
    assert register["properties"]["username"]["anyOf" if "anyOf" in register["properties"]["username"] else "pattern"]


def test_each_handler_docstring_starts_with_its_method_and_path():
    for route in ROUTES:
        first = (route.handler.__doc__ or "").strip().splitlines()[0]
        assert re.match(rf"^{route.method} {re.escape(route.path)}: \S", first), (
            route.handler.__name__,
            first,
        )


def test_no_two_routes_share_method_and_path():
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(keys) == len(set(keys))


async def test_the_document_says_what_the_server_accepts(api: Api):
    doc = (await api.get("/api/v1/openapi.json")).body
    ops = {op["operationId"]: op for path in doc["paths"].values() for op in path.values()}
    schemas = doc["components"]["schemas"]

    # Ids: UUIDs, whole (a pattern Python and ECMA-262 read alike), in paths, queries and bodies.
    chat_id = next(p for p in ops["get_chat"]["parameters"] if p["name"] == "chat_id")["schema"]
    assert re.fullmatch(chat_id["pattern"].removeprefix("^").removesuffix("$(?!\\n)"), str(uuid.uuid4()))
    for bad in ["0" * 36 + "\n", "-" * 36, "z" * 36]:
        assert not re.search(chat_id["pattern"], bad), bad
    assert re.search(schemas["UserRef"]["properties"]["user_id"]["pattern"], str(uuid.uuid4()))
    me = next(p for p in ops["get_user"]["parameters"] if p["name"] == "user_id")["schema"]
    assert {"const": "me", "description": "Yourself."} in me["anyOf"]

    # Integers: bounded by what the database holds.
    history = {p["name"]: p["schema"] for p in ops["history"]["parameters"]}
    before = next(s for s in history["before"]["anyOf"] if s.get("type") == "integer")
    assert before["maximum"] == 2**63 - 1 and before["minimum"] == 0
    assert schemas["ReadMarker"]["properties"]["seq"]["maximum"] == 2**63 - 1
    index = next(p for p in ops["put_chunk"]["parameters"] if p["name"] == "index")["schema"]
    assert index["type"] == "integer" and index["minimum"] == 0

    # Files: the raw bodies and answers are described.
    upload = ops["upload"]["requestBody"]["content"]
    assert upload["application/octet-stream"]["schema"]["format"] == "binary"
    assert "file" in upload["multipart/form-data"]["schema"]["required"]
    assert ops["put_chunk"]["requestBody"]["content"]["application/octet-stream"]
    assert {"200", "206", "304"} <= set(ops["download"]["responses"])

    # Every answer a route gives is declared: a create that finds what exists answers 200.
    for name in ("create_chat", "send_message", "forward_message"):
        assert {"200", "201"} <= set(ops[name]["responses"]), name

    # Rules for all text: no NUL anywhere, base64 for bytes, no control characters in names.
    assert not re.search(schemas["LoginRequest"]["properties"]["password"]["pattern"], "a\x00b")
    ciphertext = schemas["Recipient"]["properties"]["ciphertext"]
    assert re.search(ciphertext["pattern"], "YWJj") and not re.search(ciphertext["pattern"], "not base64!")
    display_name = schemas["ProfileUpdate"]["properties"]["display_name"]
    assert not re.search(display_name["pattern"], "bell\x07")


async def test_a_whole_number_written_as_a_float_is_the_number(api: Api):
    # JSON Schema counts 5.0 as an integer: a client generated from the document may send it.
    alice = await api.register()
    started = await api.post("/api/v1/media/uploads", json={"size": 20.0}, token=alice.access_token)
    assert started.status == 201 and started.body["size"] == 20
    half = await api.post("/api/v1/media/uploads", json={"size": 20.5}, token=alice.access_token)
    assert half.status == 422 and half.code == "validation_failed"
