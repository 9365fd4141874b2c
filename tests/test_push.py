"""Push notifications end to end: a real SUP server, a real push endpoint on loopback (tests/pushendpoint.py).

The endpoint checks each push as a browser vendor's service and the browser would (VAPID JWT,
RFC 8291 decryption with the subscription's private key); these tests check that a device with no
open socket is woken, with nothing in the push but "something new" and the chat id.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from sup.app import SCHEDULER
from sup.domain.pushtargets import EndpointPolicy
from sup.keys import ServerKeys
from sup.plugins.hookspecs import PushDevice, PushPayload
from sup.transport.webpush import WebPushSender
from tests.conftest import Account, Api, Server, ServerFactory, Socket, plain_group, require_redis, say
from tests.pushendpoint import PushEndpoint

SECRET = "p" * 40
# What an operator sets to let the server push to this machine's test endpoint, over plain http.
LOOPBACK_PUSH = {"SUP_SECRET_KEY": SECRET, "SUP_PUSH_ALLOW_HTTP": "true", "SUP_PUSH_ALLOW_HOSTS": "127.0.0.1"}


@pytest.fixture(scope="module")
async def endpoint() -> AsyncIterator[PushEndpoint]:
    async with PushEndpoint() as service:
        yield service


@pytest.fixture(scope="module")
async def push_server(server_factory: ServerFactory) -> Server:
    """A server whose operator allows the loopback push endpoint (and plain http) for these tests."""
    return await server_factory(
        **LOOPBACK_PUSH,
        SUP_PUSH_COALESCE_SECONDS="1.0",
        SUP_PUSH_RETRY_BASE_SECONDS="0.05",
        SUP_PUSH_CONTACT="mailto:ops@example.org",
    )


async def eventually(check: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _value(check()):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition did not come true")
        await asyncio.sleep(0.02)


async def _value(value: object) -> object:
    return await value if asyncio.iscoroutine(value) else value


async def settled(server: Server) -> None:
    """Every push that was due has been sent (or given up), and no event waits to be looked at."""
    services = server.app[_services_key()]
    await eventually(lambda: _zero(services.push.waiting()))


async def _zero(waiting) -> bool:
    return await waiting == 0


def _services_key():
    from sup.transport.services import SERVICES

    return SERVICES


async def subscribe(api: Api, who: Account, subscription: dict[str, str]):
    return await api.post("/api/v1/push/subscriptions", json=subscription, token=who.access_token)


# -- the VAPID key ---------------------------------------------------------------------------


async def test_vapid_key_is_served_and_the_same_for_every_process(push_server: Server, server_factory) -> None:
    reply = await push_server.api.get("/api/v1/push/vapid")
    assert reply.status == 200, reply.body
    point = base64.urlsafe_b64decode(reply.body["public_key"] + "==")
    assert len(point) == 65 and point[0] == 4  # an uncompressed P-256 point: applicationServerKey
    sibling = await server_factory(SUP_SECRET_KEY=SECRET)
    assert (await sibling.api.get("/api/v1/push/vapid")).body == reply.body
    other = await server_factory(SUP_SECRET_KEY="q" * 40)
    assert (await other.api.get("/api/v1/push/vapid")).body != reply.body


# -- a push arrives, and holds nothing ---------------------------------------------------------


async def test_an_offline_device_gets_an_encrypted_push_without_content(
    push_server: Server, endpoint: PushEndpoint
) -> None:
    api = push_server.api
    alice, bob = await api.register(), await api.register()
    browser = endpoint.device()
    reply = await subscribe(api, bob, browser.subscription())
    assert reply.status == 201, reply.body
    assert reply.body["device_id"] == bob.device_id and reply.body["endpoint"] == browser.url
    chat_id = await plain_group(api, alice, bob)
    assert (await say(api, alice, chat_id, "the secret plan is at dawn")).status == 201

    await asyncio.wait_for(browser.arrived.wait(), 30)
    assert endpoint.errors == []
    push = browser.received[0]
    vapid = (await api.get("/api/v1/push/vapid")).body["public_key"]
    assert push.vapid_key == vapid
    assert push.claims["aud"] == endpoint.origin and push.claims["sub"] == "mailto:ops@example.org"
    assert push.message == {"type": "new", "kind": "message", "chat_id": chat_id}
    assert b"secret" not in push.plaintext and alice.username.encode() not in push.plaintext
    assert push.headers["Topic"] and int(push.headers["TTL"]) > 0
    await settled(push_server)
    assert (await api.get("/api/v1/push/subscriptions", token=bob.access_token)).body["last_pushed_at"] is not None


async def test_a_device_with_an_open_socket_gets_no_push(push_server: Server, endpoint: PushEndpoint) -> None:
    api = push_server.api
    alice, carol, dave = await api.register(), await api.register(), await api.register()
    own, online, offline = endpoint.device(), endpoint.device(), endpoint.device()
    for who, device in ((alice, own), (carol, online), (dave, offline)):
        assert (await subscribe(api, who, device.subscription())).status == 201
    chat_id = await plain_group(api, alice, carol, dave)
    socket = await Socket.connect(push_server.url, api.session, carol.access_token)
    try:
        assert (await say(api, alice, chat_id, "hello")).status == 201
        await socket.events(1, "message.new")
        await asyncio.wait_for(offline.arrived.wait(), 30)
        await settled(push_server)
    finally:
        await socket.close()
    assert online.requests == 0  # its socket brought the message
    assert own.requests == 0  # the sender's own device is not told of its own message
    assert len(offline.received) == 1


async def test_a_socket_on_another_process_counts(
    server_factory: ServerFactory, database_url: str, endpoint: PushEndpoint
) -> None:
    """Two processes on one database and one Redis: a device connected to one gets no push for a message
    sent through the other (its socket is known across processes, per device)."""
    if database_url.startswith("sqlite"):
        pytest.skip("several processes share a database on Postgres")
    settings = {**LOOPBACK_PUSH, "SUP_BUS_URL": await require_redis()}
    first, second = await server_factory(**settings), await server_factory(**settings)
    alice = await first.api.register()
    carol = await first.api.register()
    dave = await first.api.register()
    online, offline = endpoint.device(), endpoint.device()
    assert (await subscribe(first.api, carol, online.subscription())).status == 201
    assert (await subscribe(first.api, dave, offline.subscription())).status == 201
    chat_id = await plain_group(first.api, alice, carol, dave)
    socket = await Socket.connect(first.url, first.api.session, carol.access_token)
    try:
        assert (await say(second.api, alice, chat_id, "through the other process")).status == 201
        await socket.events(1, "message.new")
        await asyncio.wait_for(offline.arrived.wait(), 30)
        await settled(first)
        await settled(second)
    finally:
        await socket.close()
    assert online.requests == 0
    assert len(offline.received) == 1


async def test_a_burst_is_one_push(server_factory: ServerFactory, endpoint: PushEndpoint) -> None:
    # A wide window, so that however slow the machine the five sends fall in it; then the clock jumps past it.
    server = await server_factory(**LOOPBACK_PUSH, SUP_PUSH_COALESCE_SECONDS="60")
    api = server.api
    alice, bob = await api.register(), await api.register()
    browser = endpoint.device()
    assert (await subscribe(api, bob, browser.subscription())).status == 201
    first, second = await plain_group(api, alice, bob), await plain_group(api, alice, bob)
    for i, chat in enumerate([first] * 4 + [second]):
        assert (await say(api, alice, chat, f"message {i}")).status == 201
    await eventually(lambda: _marked(server, bob))
    assert browser.requests == 0  # still within the window
    server.clock.advance(61)
    server.app[SCHEDULER].wake()
    await asyncio.wait_for(browser.arrived.wait(), 30)
    await settled(server)
    assert len(browser.received) == 1, [r.message for r in browser.received]
    # The burst spanned two chats: the push names none, and the notification opens the chat list.
    assert browser.received[0].message == {"type": "new", "kind": "message"}


async def _marked(server: Server, who: Account) -> bool:
    """The burst's events have all been looked at, and one push waits, for this device."""
    waiting = await server.app[_services_key()].push.waiting()
    stored = await server.db.fetchval(
        "SELECT COUNT(*) FROM push_subscriptions WHERE device_id = $1 AND due_at IS NOT NULL", who.device_id
    )
    return waiting == 1 and stored == 1


async def test_a_busy_push_service_is_tried_again(push_server: Server, endpoint: PushEndpoint) -> None:
    api = push_server.api
    alice, bob = await api.register(), await api.register()
    browser = endpoint.device()
    browser.answer(503)
    browser.answer(429, **{"Retry-After": "0"})
    browser.answer(500)
    assert (await subscribe(api, bob, browser.subscription())).status == 201
    chat_id = await plain_group(api, alice, bob)
    assert (await say(api, alice, chat_id, "are you there?")).status == 201
    await asyncio.wait_for(browser.arrived.wait(), 30)
    assert browser.requests == 4
    assert browser.received[0].message["chat_id"] == chat_id


async def test_a_push_service_that_keeps_failing_is_given_up(
    server_factory: ServerFactory, endpoint: PushEndpoint
) -> None:
    server = await server_factory(
        **(LOOPBACK_PUSH | {"SUP_PUSH_ALLOW_HOSTS": "127.0.0.0/8"}),
        SUP_PUSH_COALESCE_SECONDS="0",
        SUP_PUSH_RETRY_BASE_SECONDS="0.05",
        SUP_PUSH_MAX_ATTEMPTS="3",
    )
    api = server.api
    alice, bob = await api.register(), await api.register()
    browser = endpoint.device()
    for _ in range(5):
        browser.answer(502)
    assert (await subscribe(api, bob, browser.subscription())).status == 201
    chat_id = await plain_group(api, alice, bob)
    assert (await say(api, alice, chat_id, "anyone?")).status == 201
    await eventually(lambda: browser.requests >= 3)
    await settled(server)
    assert browser.requests == 3 and browser.received == []
    # The subscription stays: the service was busy, not gone.
    assert (await api.get("/api/v1/push/subscriptions", token=bob.access_token)).status == 200


@pytest.mark.parametrize("status", [404, 410])
async def test_a_gone_subscription_is_removed(push_server: Server, endpoint: PushEndpoint, status: int) -> None:
    api = push_server.api
    alice, bob = await api.register(), await api.register()
    browser = endpoint.device()
    browser.answer(status)
    assert (await subscribe(api, bob, browser.subscription())).status == 201
    chat_id = await plain_group(api, alice, bob)
    assert (await say(api, alice, chat_id, "still there?")).status == 201
    await eventually(lambda: browser.requests == 1)
    await settled(push_server)
    reply = await api.get("/api/v1/push/subscriptions", token=bob.access_token)
    assert reply.status == 404, reply.body


async def test_register_again_replaces_and_delete_stops_pushes(push_server: Server, endpoint: PushEndpoint) -> None:
    api = push_server.api
    alice, bob = await api.register(), await api.register()
    old, new = endpoint.device(), endpoint.device()
    assert (await subscribe(api, bob, old.subscription())).status == 201
    assert (await subscribe(api, bob, new.subscription())).status == 201
    chat_id = await plain_group(api, alice, bob)
    assert (await say(api, alice, chat_id, "one")).status == 201
    await asyncio.wait_for(new.arrived.wait(), 30)
    await settled(push_server)
    assert old.requests == 0
    assert (await api.delete("/api/v1/push/subscriptions", token=bob.access_token)).status == 204
    assert (await api.delete("/api/v1/push/subscriptions", token=bob.access_token)).status == 204
    assert (await say(api, alice, chat_id, "two")).status == 201
    await settled(push_server)
    assert len(new.received) == 1


async def test_a_device_signed_out_loses_its_subscription(push_server: Server, endpoint: PushEndpoint) -> None:
    api = push_server.api
    bob = await api.register()
    phone = await api.new_device(bob)
    for device in (bob, phone):
        assert (await subscribe(api, device, endpoint.device().subscription())).status == 201
    assert (await api.post("/api/v1/auth/logout", token=phone.access_token)).status == 204
    count = "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = $1"
    assert await push_server.db.fetchval(count, bob.user_id) == 1
    assert (await api.get("/api/v1/push/subscriptions", token=bob.access_token)).status == 200


# -- bad input: SUP must not be made to send requests into its own network ---------------------


REFUSED_EVERYWHERE = [
    "ftp://push.example.org/x",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "https://user:secret@push.example.org/x",
    "https:///no-host",
    "not a url",
]
REFUSED_BY_DEFAULT = [
    "http://push.example.org/x",  # plain http is for an operator's own push service only
    "https://127.0.0.1/x",
    "https://127.8.9.10:8443/x",
    "https://localhost/x",
    "https://[::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://10.1.2.3/x",
    "https://172.16.0.1/x",
    "https://192.168.1.1/x",
    "https://100.64.0.1/x",  # shared address space (carrier NAT)
    "https://169.254.169.254/latest/meta-data",  # a cloud's metadata service
    "https://[fe80::1]/x",
    "https://[fd00::1]/x",
    "https://224.0.0.1/x",
    "https://0.0.0.0/x",
]


@pytest.mark.parametrize("url", REFUSED_EVERYWHERE + REFUSED_BY_DEFAULT)
async def test_endpoints_into_the_servers_network_are_refused(server: Server, endpoint: PushEndpoint, url: str) -> None:
    api = server.api
    bob = await api.register()
    reply = await subscribe(api, bob, {**endpoint.device().subscription(), "endpoint": url})
    assert reply.status == 422, reply.body
    assert reply.code == "validation_failed" and reply.body["field"] == "endpoint", reply.body


@pytest.mark.parametrize("url", [*REFUSED_EVERYWHERE, "https://10.1.2.3/x", "https://127.0.0.2/x"])
async def test_an_allowed_host_admits_only_itself(push_server: Server, endpoint: PushEndpoint, url: str) -> None:
    bob = await push_server.api.register()
    reply = await subscribe(push_server.api, bob, {**endpoint.device().subscription(), "endpoint": url})
    assert reply.status == 422, reply.body


@pytest.mark.parametrize(
    ("field", "value"),
    [("p256dh", "not*base64"), ("p256dh", "AAAA"), ("p256dh", "BA" + "A" * 85), ("auth", "AAAA"), ("auth", "%%")],
)
async def test_bad_keys_are_refused(push_server: Server, endpoint: PushEndpoint, field: str, value: str) -> None:
    bob = await push_server.api.register()
    reply = await subscribe(push_server.api, bob, {**endpoint.device().subscription(), field: value})
    assert reply.status == 422 and reply.body["field"] == field, reply.body


async def test_missing_fields_and_strangers_are_refused(push_server: Server, endpoint: PushEndpoint) -> None:
    api = push_server.api
    bob = await api.register()
    subscription = endpoint.device().subscription()
    assert (await api.post("/api/v1/push/subscriptions", json=subscription)).status == 401
    missing = {k: v for k, v in subscription.items() if k != "auth"}
    assert (await subscribe(api, bob, missing)).status == 422
    assert (await subscribe(api, bob, {**subscription, "extra": 1})).status in (400, 422)
    assert (await subscribe(api, bob, {**subscription, "endpoint": "https://x/" + "a" * 3000})).status == 422


async def test_the_sender_checks_the_address_again_when_it_sends(endpoint: PushEndpoint) -> None:
    """A name that resolved to a public address at registration may point inward by the time of sending:
    the sender's resolver refuses it then (here `localhost`, with no allowance for loopback)."""
    keys = ServerKeys.derive(SECRET.encode())
    browser = endpoint.device()
    subscription = browser.subscription()
    by_name, by_address = browser.url.replace("127.0.0.1", "localhost"), browser.url

    async def send(policy: EndpointPolicy, url: str):
        sender = WebPushSender(keys.vapid_key(), "mailto:ops@example.org", policy, 5.0)
        await sender.startup()
        try:
            device = PushDevice(
                user_id=str(uuid.uuid4()),
                device_id=str(uuid.uuid4()),
                provider="webpush",
                endpoint=url,
                keys={"p256dh": subscription["p256dh"], "auth": subscription["auth"]},
            )
            result = await sender.send_push(device, PushPayload(kind="message", chat_id=None))
        finally:
            await sender.shutdown()
        assert result is not None
        return result

    for url in (by_name, by_address):
        result = await send(EndpointPolicy(allow_http=True), url)
        assert result.outcome == "rejected" and "refused" in result.detail, result
    assert browser.requests == 0
    # An operator's allowance for the name admits it, and not the address it stands for.
    assert (await send(EndpointPolicy(allow_http=True, allow_hosts=["localhost"]), by_name)).outcome == "delivered"
    assert (await send(EndpointPolicy(allow_http=True, allow_hosts=["localhost"]), by_address)).outcome == "rejected"
    assert browser.requests == 1 and endpoint.errors == []


async def test_push_off_says_so(server_factory: ServerFactory, endpoint: PushEndpoint) -> None:
    server = await server_factory(SUP_SECRET_KEY=SECRET, SUP_PUSH_ENABLED="false")
    bob = await server.api.register()
    reply = await subscribe(server.api, bob, endpoint.device().subscription())
    assert reply.status == 404 and reply.code == "not_configured", reply.body
    assert (await server.api.get("/api/v1/push/vapid")).code == "not_configured"


def test_the_policy_admits_public_addresses_only_unless_listed() -> None:
    """No request is made here: the address rule alone (what the resolver applies to each answer)."""
    import ipaddress

    policy = EndpointPolicy(allow_hosts=["ntfy.lan", "10.9.0.0/16"])
    public = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    inward = ["127.0.0.1", "::1", "::ffff:127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "fe80::1"]
    inward += ["fc00::1", "100.64.0.1", "224.0.0.1", "ff02::1", "0.0.0.0", "192.0.2.1"]  # last: documentation
    for text in public:
        assert policy.address_allowed("push.example.org", ipaddress.ip_address(text)), text
    for text in inward:
        assert not policy.address_allowed("push.example.org", ipaddress.ip_address(text)), text
    assert policy.address_allowed("ntfy.lan", ipaddress.ip_address("192.168.1.20"))  # listed by name
    assert policy.address_allowed("push.example.org", ipaddress.ip_address("10.9.3.4"))  # listed network
    assert not policy.address_allowed("push.example.org", ipaddress.ip_address("10.8.3.4"))
