"""The OpenAPI document is generated from the route table, so it covers every route."""

from __future__ import annotations

import re

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
