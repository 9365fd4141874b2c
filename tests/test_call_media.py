"""A real call: two aiortc peers, each driven by the SDK against a real SUP server, set the call up through
SUP's signalling and talk through Debian's coturn on loopback, with SUP's TURN credentials and relay
candidates only. Data goes over a data channel, and an audio track's frames arrive."""

from __future__ import annotations

import asyncio
import re

import pytest

from sup.client.client import Client
from tests.conftest import IN_CI, Server, new_username
from tests.test_calls import SECRET_KEY, turn_secret  # noqa: F401 - the fixture is used by name
from tests.turn_client import Coturn

aiortc = pytest.importorskip("aiortc", reason="pip install -e '.[test]' brings aiortc")
from tests.webrtc_peer import call_through_sup  # noqa: E402 - needs aiortc


@pytest.fixture(scope="module")
async def coturn(turn_secret: str, tmp_path_factory):  # noqa: F811
    if Coturn.binary() is None:
        if IN_CI:
            pytest.fail("CI=true needs coturn (apt-get install coturn; .ci/run installs it)")
        pytest.skip("no turnserver (apt-get install coturn)")
    # Both peers' relays are on 127.0.0.1: coturn refuses loopback peers unless told otherwise.
    server = await Coturn(
        turn_secret, tmp_path_factory.mktemp("coturn"), ("--allow-loopback-peers", "--verbose")
    ).start()
    yield server
    server.stop()


async def test_two_peers_call_through_sup_and_coturn(server_factory, coturn: Coturn, tmp_path):
    uri = f"turn:127.0.0.1:{coturn.port}?transport=udp"
    server: Server = await server_factory(SUP_SECRET_KEY=SECRET_KEY, SUP_CALLS_TURN_URIS=uri)
    alice = await Client.register(server.url, str(tmp_path / "a.db"), new_username(), "correct horse battery")
    bob = await Client.register(server.url, str(tmp_path / "b.db"), new_username(), "correct horse battery")
    try:
        chat = await alice.direct_chat(bob.user_id)
        await alice.start()
        await bob.start()
        result = await call_through_sup(alice, bob, chat["id"])
    finally:
        await alice.close()
        await bob.close()
    assert result.candidate_types == {"relay"}  # nothing but coturn's relay addresses was offered
    assert result.selected_local_types and set(result.selected_local_types) == {"relay"}
    assert result.echoed == "echo: hello through the relay"
    assert result.audio_frames == 50 and result.audio_peak > 1000  # the tone, not silence
    assert result.ended["reason"] == "hangup" and result.ended["duration_ms"] > 0
    # coturn's own account: each user allocated a relay and bound the other's relay as a peer, and
    # when the peer connections closed, each relay had carried the peer's packets.
    relayed = {}
    for _ in range(50):
        log = coturn.log.read_text()
        for user_id in (alice.user_id, bob.user_id):
            assert f"user <{expiry_of(log, user_id)}:{user_id}>: incoming packet CHANNEL_BIND processed, success" in log
            usage = re.findall(rf"peer usage: realm=<sup.test>, username=<\d+:{user_id}>, rp=(\d+), rb=(\d+)", log)
            relayed[user_id] = max((int(rb) for _, rb in usage), default=0)
        if all(relayed.values()):
            break
        await asyncio.sleep(0.1)
    assert all(n > 10_000 for n in relayed.values()), relayed  # a second of audio each way, and the data


def expiry_of(log: str, user_id: str) -> str:
    found = re.search(rf"username=<(\d+):{user_id}>", log)
    assert found, f"coturn never saw {user_id}"
    return found.group(1)
