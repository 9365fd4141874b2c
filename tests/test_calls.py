"""Calls: TURN credentials that Debian's coturn accepts, and LiveKit tokens for a chat's members only."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest

from sup.app import HOOKS
from sup.plugins.turn import coturn_password
from tests.conftest import IN_CI, plain_group
from tests.processes import sup, sup_env
from tests.turn_client import ALLOCATE_ERROR, ALLOCATE_OK, XOR_RELAYED_ADDRESS, Coturn, allocate

SECRET_KEY = "k" * 40
LIVEKIT = {
    "SUP_PLUGINS_ENABLED": "livekit",
    "SUP_PLUGINS_LIVEKIT_URL": "wss://livekit.example.test",
    "SUP_PLUGINS_LIVEKIT_API_KEY": "APIsuptest",
    "SUP_PLUGINS_LIVEKIT_API_SECRET": "s3cr3t-" * 6,
}


async def test_without_configuration_calls_say_so(api):
    alice = await api.register()
    reply = await api.get("/api/v1/calls/turn", token=alice.access_token)
    assert (reply.status, reply.code) == (404, "not_configured")
    chat_id = await plain_group(api, alice)
    reply = await api.post(f"/api/v1/calls/{chat_id}/token", token=alice.access_token)
    assert (reply.status, reply.code) == (404, "not_configured")
    assert (await api.get("/api/v1/calls/turn")).status == 401


@pytest.fixture(scope="module")
async def turn_secret(tmp_path_factory) -> str:
    """The secret `sup calls turn-secret` prints for turnserver.conf, for the servers of this module."""
    env = sup_env(tmp_path_factory.mktemp("cli"), SUP_SECRET_KEY=SECRET_KEY)
    code, out, err = await sup("calls", "turn-secret", env=env)
    assert code == 0, err
    return out.strip()


@pytest.fixture(scope="module")
async def coturn(turn_secret: str, tmp_path_factory):
    if Coturn.binary() is None:
        if IN_CI:
            pytest.fail("CI=true needs coturn (apt-get install coturn; .ci/run installs it)")
        pytest.skip("no turnserver (apt-get install coturn)")
    server = await Coturn(turn_secret, tmp_path_factory.mktemp("coturn")).start()
    yield server
    server.stop()


async def test_coturn_accepts_the_credentials_and_nothing_else(server_factory, coturn: Coturn, turn_secret: str):
    uri = f"turn:127.0.0.1:{coturn.port}?transport=udp"
    server = await server_factory(SUP_SECRET_KEY=SECRET_KEY, SUP_CALLS_TURN_URIS=uri, SUP_CALLS_TURN_TTL_SECONDS="600")
    alice = await server.api.register()
    reply = await server.api.get("/api/v1/calls/turn", token=alice.access_token)
    assert reply.status == 200, reply.body
    creds = reply.body
    assert creds["uris"] == [uri] and creds["ttl"] == 600
    expiry, user_id = creds["username"].split(":")
    assert (
        user_id == alice.user_id and abs(int(expiry) - (time.time() + 600)) < 5 and int(expiry) == creds["expires_at"]
    )
    assert creds["credential"] == coturn_password(turn_secret, creds["username"])  # the secret turnserver has

    host, port = urlsplit(uri.replace("turn:", "turn://")).hostname, coturn.port
    granted = await allocate(host, port, creds["username"], creds["credential"])
    assert granted.kind == ALLOCATE_OK, (granted, coturn.log.read_text())
    assert XOR_RELAYED_ADDRESS in granted.attributes  # a relay was allocated

    wrong = await allocate(host, port, creds["username"], creds["credential"][:-4] + "AAA=")
    assert (wrong.kind, wrong.error) == (ALLOCATE_ERROR, 401)
    someone_else = await allocate(host, port, f"{expiry}:{'0' * 8}-0000-7000-8000-{'0' * 12}", creds["credential"])
    assert (someone_else.kind, someone_else.error) == (ALLOCATE_ERROR, 401)

    server.clock.advance(-700)  # credentials made "700 s ago": expired 100 s ago
    old = (await server.api.get("/api/v1/calls/turn", token=alice.access_token)).body
    assert old["expires_at"] < time.time()
    expired = await allocate(host, port, old["username"], old["credential"])
    assert (expired.kind, expired.error) == (ALLOCATE_ERROR, 401)
    server.clock.advance(700)


async def test_a_configured_turn_secret_is_used_as_it_is(server_factory):
    server = await server_factory(
        SUP_CALLS_TURN_URIS="turn:turn.example.test", SUP_CALLS_TURN_SECRET="shared-with-coturn"
    )
    alice = await server.api.register()
    creds = (await server.api.get("/api/v1/calls/turn", token=alice.access_token)).body
    assert creds["credential"] == coturn_password("shared-with-coturn", creds["username"])


def claims(token: str) -> dict:
    return jwt.decode(
        token, LIVEKIT["SUP_PLUGINS_LIVEKIT_API_SECRET"], algorithms=["HS256"], options={"verify_aud": False}
    )


async def test_livekit_tokens_admit_a_member_to_the_chat_room_only(server_factory):
    server = await server_factory(**LIVEKIT)
    loaded = {item.name: item for item in server.app[HOOKS].loaded}
    assert loaded["livekit"].source == "entry point livekit = sup_livekit:LiveKitPlugin"  # not imported by us
    api = server.api
    alice, bob, mallory = await api.register(), await api.register(), await api.register()
    chat_id = await plain_group(api, alice, bob)
    other_chat = await plain_group(api, alice)

    reply = await api.post(f"/api/v1/calls/{chat_id}/token", token=alice.access_token)
    assert reply.status == 200, reply.body
    body = reply.body
    assert body["url"] == LIVEKIT["SUP_PLUGINS_LIVEKIT_URL"]
    assert (
        body["room"].startswith("sup-") and chat_id not in body["room"] and chat_id.replace("-", "") not in body["room"]
    )
    granted = claims(body["token"])
    assert granted["iss"] == LIVEKIT["SUP_PLUGINS_LIVEKIT_API_KEY"]
    assert granted["sub"] == f"{alice.user_id}:{alice.device_id}"
    assert granted["video"] == {
        "roomJoin": True,
        "room": body["room"],
        "canPublish": True,
        "canSubscribe": True,
        "canPublishData": True,
    }  # and nothing more: no roomCreate, roomList, roomAdmin, roomRecord
    assert granted["exp"] - granted["nbf"] == 300 and abs(granted["exp"] - (time.time() + 300)) < 5
    assert body["expires_at"] == pytest.approx(granted["exp"], abs=2)
    assert '"user_id": "' + alice.user_id in granted["metadata"]

    # Bob gets the same room with his own identity; another chat is another room.
    bobs = await api.post(f"/api/v1/calls/{chat_id}/token", token=bob.access_token)
    assert bobs.body["room"] == body["room"] and claims(bobs.body["token"])["sub"].startswith(bob.user_id)
    other = await api.post(f"/api/v1/calls/{other_chat}/token", token=alice.access_token)
    assert other.body["room"] != body["room"]

    # Not a member, or no such chat: 404, as for every chat.
    for who, where in ((mallory, chat_id), (bob, other_chat), (alice, "01a21716-2dcb-71f4-996b-08476f295b62")):
        reply = await api.post(f"/api/v1/calls/{where}/token", token=who.access_token)
        assert (reply.status, reply.code) == (404, "not_found")
    assert (await api.post(f"/api/v1/calls/{chat_id}/token")).status == 401


async def test_the_room_names_are_the_same_on_every_process(server_factory):
    one = await server_factory(SUP_SECRET_KEY=SECRET_KEY, **LIVEKIT)
    two = await server_factory(SUP_SECRET_KEY=SECRET_KEY, **LIVEKIT)
    alice = await one.api.register()
    chat_id = await plain_group(one.api, alice)
    rooms = [
        (await s.api.post(f"/api/v1/calls/{chat_id}/token", token=alice.access_token)).body["room"] for s in (one, two)
    ]
    assert rooms[0] == rooms[1]


def test_sup_calls_turn_secret_prints_the_configured_one(tmp_path: Path):
    from sup.app import turn_secret
    from sup.config import load_config

    config = load_config(None, {"SUP_DATA_DIR": str(tmp_path), "SUP_CALLS_TURN_SECRET": "mine"})
    assert turn_secret(config) == "mine"
