"""Registration, login, tokens, logout, devices, password change — over HTTP."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Api, Server, new_username


async def test_register_answers_tokens_device_and_user(api: Api):
    username = new_username()
    reply = await api.post(
        "/api/v1/auth/register",
        json={"username": username, "password": "correct horse battery", "display_name": "Ann"},
    )
    assert reply.status == 201
    body = reply.body
    assert set(body) >= {"access_token", "refresh_token", "expires_in", "device_id", "user"}
    assert body["expires_in"] <= 900
    assert body["user"]["username"] == username
    assert body["user"]["display_name"] == "Ann"
    assert "password_hash" not in body["user"]
    me = await api.get("/api/v1/users/me", token=body["access_token"])
    assert me.status == 200 and me.body["id"] == body["user"]["id"]


async def test_username_is_unique_ignoring_case(api: Api):
    account = await api.register()
    reply = await api.post(
        "/api/v1/auth/register", json={"username": account.username.upper(), "password": "another password"}
    )
    assert reply.status == 409 and reply.code == "username_taken"
    # and the original can still log in with any case
    login = await api.post(
        "/api/v1/auth/login", json={"username": account.username.upper(), "password": account.password}
    )
    assert login.status == 200


async def test_usernames_are_validated(api: Api):
    for bad in ["ab", "a" * 33, "has space", "émile", ".dot", "dot.", "a..b", "semi;colon", ""]:
        reply = await api.post("/api/v1/auth/register", json={"username": bad, "password": "long enough pw"})
        assert reply.status == 422, (bad, reply.body)
        assert reply.code == "validation_failed"


async def test_a_username_with_a_trailing_newline_is_not_a_second_account(api: Api):
    # Python's `$` matched before a final newline: "bobby\n" registered beside "bobby".
    account = await api.register()
    for look_alike in [account.username + "\n", account.username + "\r\n", "\n" + account.username]:
        reply = await api.post("/api/v1/auth/register", json={"username": look_alike, "password": "long enough pw"})
        assert reply.status == 422 and reply.code == "validation_failed", (look_alike, reply.body)
        login = await api.post("/api/v1/auth/login", json={"username": look_alike, "password": account.password})
        assert login.status == 401, (look_alike, login.body)
    assert (await api.login(account)).status == 200


@pytest.mark.parametrize(
    "look_alike",
    [
        "\u0430lice_{}",  # Cyrillic a, then Latin
        "\u03b1lice_{}",  # Greek alpha
        "alice_{}\u200b",  # a zero-width space
        "alic\u0435_{}",  # Cyrillic e
    ],
)
async def test_usernames_mixing_scripts_are_refused(api: Api, look_alike: str):
    name = look_alike.format(new_username()[2:10])
    reply = await api.post("/api/v1/auth/register", json={"username": name, "password": "long enough pw"})
    assert reply.status == 422 and reply.body["field"] == "username", reply.body


async def test_usernames_are_kept_in_lower_case_and_found_however_typed(api: Api):
    name = "Mixed_" + new_username()[2:10]
    reply = await api.post("/api/v1/auth/register", json={"username": name, "password": "long enough pw"})
    assert reply.status == 201 and reply.body["user"]["username"] == name.lower()
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in name.upper())
    for typed in (name, name.upper(), fullwidth):
        login = await api.post("/api/v1/auth/login", json={"username": typed, "password": "long enough pw"})
        assert login.status == 200, (typed, login.body)
    token = login.body["access_token"]
    found = await api.get(f"/api/v1/users/by-username/{fullwidth}", token=token)
    assert found.status == 200 and found.body["username"] == name.lower()
    taken = await api.post("/api/v1/auth/register", json={"username": name.upper(), "password": "long enough pw"})
    assert taken.status == 409 and taken.code == "username_taken"


async def test_short_password_is_refused(api: Api):
    reply = await api.post("/api/v1/auth/register", json={"username": new_username(), "password": "short"})
    assert reply.status == 422 and reply.body["field"] == "password"


async def test_login_creates_a_new_device_each_time(api: Api):
    account = await api.register()
    first = await api.login(account, device_name="laptop")
    second = await api.login(account, device_name="phone")
    assert first.status == second.status == 200
    assert first.body["device_id"] != second.body["device_id"]
    devices = await api.get("/api/v1/devices", token=second.body["access_token"])
    names = {d["name"]: d for d in devices.body["devices"]}
    assert set(names) == {"Unnamed device", "laptop", "phone"}
    assert names["phone"]["current"] and not names["laptop"]["current"]


async def test_unknown_user_and_wrong_password_look_the_same(api: Api):
    account = await api.register()
    wrong = await api.post("/api/v1/auth/login", json={"username": account.username, "password": "nope nope"})
    unknown = await api.post("/api/v1/auth/login", json={"username": new_username(), "password": "nope nope"})
    assert wrong.status == unknown.status == 401
    strip = lambda b: {k: v for k, v in b.items() if k != "instance"}  # noqa: E731
    assert strip(wrong.body) == strip(unknown.body)
    assert wrong.code == "invalid_credentials"


async def test_refresh_rotates_and_reuse_revokes_the_family(api: Api):
    account = await api.register()
    first = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert first.status == 200
    assert first.body["refresh_token"] != account.refresh_token
    assert first.body["device_id"] == account.device_id
    second = await api.post("/api/v1/auth/refresh", json={"refresh_token": first.body["refresh_token"]})
    assert second.status == 200
    # The first token again: someone kept a copy. The whole device session dies.
    reuse = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert reuse.status == 401 and reuse.code == "refresh_token_reused"
    latest = await api.post("/api/v1/auth/refresh", json={"refresh_token": second.body["refresh_token"]})
    assert latest.status == 401
    me = await api.get("/api/v1/users/me", token=second.body["access_token"])
    assert me.status == 401 and me.code == "invalid_token"


async def test_concurrent_refresh_with_one_token_has_one_successor(api: Api):
    account = await api.register()
    replies = await asyncio.gather(
        *[api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token}) for _ in range(5)]
    )
    # One rotation wins; the others are answered as retries of a lost answer: the same successor,
    # so that one refresh token lives on, never five.
    assert [r.status for r in replies] == [200] * 5
    assert len({r.body["refresh_token"] for r in replies}) == 1
    rotated = await api.post("/api/v1/auth/refresh", json={"refresh_token": replies[0].body["refresh_token"]})
    assert rotated.status == 200
    # The first token's successor is used now: the first token again is one holder too many.
    again = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert again.status == 401 and again.code == "refresh_token_reused"
    assert (await api.get("/api/v1/users/me", token=rotated.body["access_token"])).status == 401


async def test_a_refresh_whose_answer_was_lost_can_be_asked_again(server: Server):
    """A page reloaded while refreshing never stores the new token; its next try must not end the session."""
    api = server.api
    account = await api.register()
    lost = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    retry = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert lost.status == retry.status == 200
    assert retry.body["refresh_token"] == lost.body["refresh_token"]
    assert (await api.get("/api/v1/users/me", token=retry.body["access_token"])).status == 200
    # Once the retry window has passed, the old token is a copy someone kept: the session ends.
    server.clock.advance(11)
    late = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert late.status == 401 and late.code == "refresh_token_reused"
    gone = await api.post("/api/v1/auth/refresh", json={"refresh_token": retry.body["refresh_token"]})
    assert gone.status == 401


async def test_unknown_refresh_token_is_refused(api: Api):
    reply = await api.post("/api/v1/auth/refresh", json={"refresh_token": "supr_not-a-real-token"})
    assert reply.status == 401 and reply.code == "invalid_refresh_token"


async def test_logout_kills_access_and_refresh_tokens_at_once(api: Api):
    account = await api.register()
    assert (await api.post("/api/v1/auth/logout", token=account.access_token)).status == 204
    me = await api.get("/api/v1/users/me", token=account.access_token)
    assert me.status == 401
    refresh = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
    assert refresh.status == 401


async def test_expired_access_token_is_refused_but_refresh_works(server: Server):
    api = server.api
    account = await api.register()
    server.clock.advance(901)
    try:
        me = await api.get("/api/v1/users/me", token=account.access_token)
        assert me.status == 401 and me.code == "token_expired"
        assert "Bearer" in me.headers["WWW-Authenticate"]
        refreshed = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
        assert refreshed.status == 200
        assert (await api.get("/api/v1/users/me", token=refreshed.body["access_token"])).status == 200
    finally:
        server.clock.advance(-901)


async def test_expired_refresh_token_is_refused(server: Server):
    api = server.api
    account = await api.register()
    server.clock.advance(31 * 86400)
    try:
        reply = await api.post("/api/v1/auth/refresh", json={"refresh_token": account.refresh_token})
        assert reply.status == 401 and reply.code == "invalid_refresh_token"
    finally:
        server.clock.advance(-31 * 86400)


async def test_forged_and_malformed_tokens_are_refused(api: Api):
    account = await api.register()
    prefix, payload, mac = account.access_token.split(".")
    tampered_mac = mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")
    middle = len(payload) // 2
    tampered_payload = payload[:middle] + ("B" if payload[middle] != "B" else "C") + payload[middle + 1 :]
    for token in [
        f"{prefix}.{payload}.{tampered_mac}",
        f"{prefix}.{tampered_payload}.{mac}",
        "sup1.garbage.garbage",
        "not-a-token",
        account.refresh_token,
        "x" * 5000,
    ]:
        reply = await api.get("/api/v1/users/me", token=token)
        assert reply.status == 401, token
        assert reply.code == "invalid_token"
    for header in ["", "Bearer", "Basic dXNlcjpwYXNz", "Bearer    "]:
        reply = await api.get("/api/v1/users/me", headers={"Authorization": header})
        assert reply.status == 401 and reply.code == "unauthenticated"


async def test_token_from_another_servers_secret_is_refused(server_factory, api: Api):
    other = await server_factory(SUP_SECRET_KEY="o" * 40)
    account = await other.api.register()
    reply = await api.get("/api/v1/users/me", token=account.access_token)
    assert reply.status == 401 and reply.code == "invalid_token"


async def test_revoking_a_device_kills_its_tokens_at_once(api: Api):
    account = await api.register()
    phone = (await api.login(account, device_name="phone")).body
    assert (await api.delete(f"/api/v1/devices/{phone['device_id']}", token=account.access_token)).status == 204
    assert (await api.get("/api/v1/users/me", token=phone["access_token"])).status == 401
    refresh = await api.post("/api/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert refresh.status == 401
    devices = await api.get("/api/v1/devices", token=account.access_token)
    assert [d["id"] for d in devices.body["devices"]] == [account.device_id]
    again = await api.delete(f"/api/v1/devices/{phone['device_id']}", token=account.access_token)
    assert again.status == 404


async def test_another_users_device_cannot_be_touched(api: Api):
    alice = await api.register()
    bob = await api.register()
    for reply in [
        await api.delete(f"/api/v1/devices/{bob.device_id}", token=alice.access_token),
        await api.patch(f"/api/v1/devices/{bob.device_id}", json={"name": "mine"}, token=alice.access_token),
    ]:
        assert reply.status == 404 and reply.code == "not_found"
    assert (await api.get("/api/v1/users/me", token=bob.access_token)).status == 200
    devices = await api.get("/api/v1/devices", token=bob.access_token)
    assert devices.body["devices"][0]["name"] == "Unnamed device"


async def test_rename_device(api: Api):
    account = await api.register()
    reply = await api.patch(
        f"/api/v1/devices/{account.device_id}", json={"name": "  work laptop "}, token=account.access_token
    )
    assert reply.status == 200 and reply.body["name"] == "work laptop" and reply.body["current"]
    blank = await api.patch(f"/api/v1/devices/{account.device_id}", json={"name": "   "}, token=account.access_token)
    assert blank.status == 422


async def test_password_change_logs_out_other_devices(api: Api):
    account = await api.register()
    other = (await api.login(account, device_name="other")).body
    wrong = await api.post(
        "/api/v1/auth/password",
        json={"current_password": "wrong password", "new_password": "a new password"},
        token=account.access_token,
    )
    assert wrong.status == 401
    ok = await api.post(
        "/api/v1/auth/password",
        json={"current_password": account.password, "new_password": "a new password"},
        token=account.access_token,
    )
    assert ok.status == 204
    assert (await api.get("/api/v1/users/me", token=account.access_token)).status == 200
    assert (await api.get("/api/v1/users/me", token=other["access_token"])).status == 401
    old = await api.login(account)
    assert old.status == 401
    account.password = "a new password"
    assert (await api.login(account)).status == 200


async def test_parallel_logins_do_not_stall_the_server(api: Api):
    """Hashing runs off the event loop: /health answers while 50 logins are in flight."""
    account = await api.register()
    done = 0

    async def login() -> int:
        nonlocal done
        reply = await api.login(account)
        done += 1
        return reply.status

    logins = [asyncio.ensure_future(login()) for _ in range(50)]
    await asyncio.sleep(0.05)
    health = await api.get("/health")
    finished_before_health = done
    statuses = await asyncio.gather(*logins)
    assert health.status == 200
    assert statuses == [200] * 50
    assert finished_before_health < 50


async def test_weaker_hashes_are_upgraded_on_login(server: Server, server_factory):
    account = await server.api.register()
    before = await server.db.fetchval("SELECT password_hash FROM users WHERE id = $1", account.user_id)
    assert before.startswith("$argon2id$") and ",t=2," in before
    # The operator raised the cost: the next login stores a hash with the new parameters.
    stronger = await server_factory(SUP_AUTH_ARGON2_TIME_COST="3", SUP_SECRET_KEY="k" * 40)
    assert (await stronger.api.login(account)).status == 200
    after = await server.db.fetchval("SELECT password_hash FROM users WHERE id = $1", account.user_id)
    assert ",t=3," in after
    assert (await stronger.api.login(account)).status == 200
