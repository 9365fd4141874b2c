"""The admin API: for administrators only (404 for anyone else), every change in the audit log."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

import pyotp
import pytest

from sup.http.routes import ROUTES
from sup.transport.services import SERVICES
from tests.conftest import Account, Api, Server, ServerFactory, Socket, new_username, plain_group
from tests.processes import sup, sup_env
from tests.test_2fa import enable_2fa

ADMIN = "/api/v1/admin"
ADMIN_ROUTES = [route for route in ROUTES if route.admin]


async def make_admin(server: Server) -> Account:
    """An administrator, as `sup admin create-user --admin` makes one, logged in."""
    name, password = new_username(), "admin password 1"
    await server.app[SERVICES].accounts.create_user(name, password, is_admin=True)
    reply = await server.api.post("/api/v1/auth/login", json={"username": name, "password": password})
    assert reply.status == 200, reply.body
    body = reply.body
    return Account(name, password, body["user"]["id"], body["device_id"], body["access_token"], body["refresh_token"])


@pytest.fixture(scope="module")
async def admin(server: Server) -> Account:
    return await make_admin(server)


async def audit(api: Api, admin: Account, **filters: str) -> list[dict[str, Any]]:
    reply = await api.get(f"{ADMIN}/audit", token=admin.access_token, params={"limit": "200", **filters})
    assert reply.status == 200, reply.body
    return reply.body["items"]


async def set_role(api: Api, actor: Account, user: Account, is_admin: Any):
    return await api.request(
        "PUT", f"{ADMIN}/users/{user.user_id}/admin", json={"is_admin": is_admin}, token=actor.access_token
    )


def concrete(path: str) -> str:
    """A route's path with something in each parameter: an id of nothing, or an invite id."""
    path = path.replace("{invite}", "ab" * 32)
    return re.sub(r"{\w+}", lambda _: str(uuid.uuid4()), path)


# -- who may reach the admin API ------------------------------------------------------------------


async def test_the_route_table_has_the_admin_api():
    paths = {f"{r.method} {r.path}" for r in ADMIN_ROUTES}
    assert len(paths) >= 14
    assert all(r.path.startswith(ADMIN + "/") for r in ADMIN_ROUTES)
    assert all(not r.path.startswith(ADMIN) for r in ROUTES if not r.admin)


async def test_non_admins_get_404_on_every_admin_route(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    tokens: dict[str, str | None] = {
        "no token": None,
        "a forged token": "sup1.AAAA.BBBB",
        "a user's token": user.access_token,
    }
    for route in ADMIN_ROUTES:
        path = concrete(route.path)
        for what, token in tokens.items():
            # A body that is not even JSON: the 404 comes before anything is read.
            reply = await api.request(route.method, path, token=token, data=b"{not json")
            assert reply.status == 404, (route.method, route.path, what, reply.status, reply.body)
            assert reply.code == "not_found" and "WWW-Authenticate" not in reply.headers
            assert reply.body["detail"] == "There is nothing at this path."
        if route.method == "GET":
            head = await api.request("HEAD", path, token=user.access_token)
            assert head.status == 404, route.path
    # A method a path does not take: 405 (with Allow) would show that the path exists.
    for path in {concrete(r.path) for r in ADMIN_ROUTES}:
        for token in tokens.values():
            reply = await api.request("PATCH", path, token=token, json={})
            assert reply.status == 404 and "Allow" not in reply.headers, (path, reply.status)
    # ...while an administrator is told which methods there are.
    reply = await api.request("PATCH", f"{ADMIN}/stats", token=admin.access_token, json={})
    assert reply.status == 405 and reply.headers["Allow"]
    # And the same as a path that does not exist at all:
    nothing = await api.get(f"{ADMIN}/nothing-here", token=user.access_token)
    assert (nothing.status, nothing.body["detail"]) == (404, "There is nothing at this path.")


async def test_an_admins_expired_token_says_so_and_a_users_does_not(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    server.clock.advance(server.config.auth.access_token_ttl + 5)
    try:
        mine = await api.get(f"{ADMIN}/stats", token=admin.access_token)
        assert mine.status == 401 and mine.code == "token_expired"  # refresh it, then carry on
        theirs = await api.get(f"{ADMIN}/stats", token=user.access_token)
        assert theirs.status == 404
    finally:
        server.clock.advance(-(server.config.auth.access_token_ttl + 5))


async def test_an_admin_reaches_every_admin_route(server: Server, admin: Account):
    """With ids of nothing: each answers as designed (404 for the id, never for the path), never a 500."""
    api = server.api
    for route in ADMIN_ROUTES:
        body: Any = {"is_admin": True} if route.path.endswith("/admin") else {}
        reply = await api.request(route.method, concrete(route.path), token=admin.access_token, json=body)
        assert reply.status < 500, (route.method, route.path, reply.body)
        if "{" in route.path:
            assert reply.status == 404 and reply.body["detail"] != "There is nothing at this path.", route.path
        else:
            assert reply.status in (200, 201), (route.path, reply.body)


async def test_a_deactivated_admin_is_no_admin(server: Server):
    api = server.api
    first, second = await make_admin(server), await make_admin(server)
    # An admin's other admin: deactivated, their (new) tokens find no admin API.
    assert (await api.post(f"{ADMIN}/users/{second.user_id}/deactivate", token=first.access_token)).status == 200
    assert (await api.get(f"{ADMIN}/stats", token=second.access_token)).status == 404
    assert (await api.post(f"{ADMIN}/users/{second.user_id}/reactivate", token=first.access_token)).status == 200
    again = await api.new_device(second)
    assert (await api.get(f"{ADMIN}/stats", token=again.access_token)).status == 200


# -- users -----------------------------------------------------------------------------------------


async def test_list_and_search_users_by_pages(server: Server, admin: Account):
    api = server.api
    tag = uuid.uuid4().hex[:6]
    made = [await api.register(f"s{tag}_{i}", display_name=f"Searchable {i}") for i in range(5)]
    seen, cursor = [], None
    while True:
        params = {"q": f"S{tag}", "limit": "2", **({"after": cursor} if cursor else {})}
        page = await api.get(f"{ADMIN}/users", token=admin.access_token, params=params)
        assert page.status == 200, page.body
        assert len(page.body["items"]) <= 2
        seen += page.body["items"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert [u["id"] for u in seen] == [m.user_id for m in made]  # in the order they were made
    assert {u["status"] for u in seen} == {"active"} and not any(u["is_admin"] for u in seen)
    # A display name matches too, in any case; and LIKE's wildcards are only characters.
    by_name = await api.get(f"{ADMIN}/users", token=admin.access_token, params={"q": "searchable 3"})
    assert made[3].user_id in [u["id"] for u in by_name.body["items"]]
    wild = await api.get(f"{ADMIN}/users", token=admin.access_token, params={"q": "%"})
    assert wild.status == 200 and wild.body["items"] == []
    await api.post(f"{ADMIN}/users/{made[0].user_id}/deactivate", token=admin.access_token)
    active = await api.get(f"{ADMIN}/users", token=admin.access_token, params={"q": tag, "status": "deactivated"})
    assert [u["id"] for u in active.body["items"]] == [made[0].user_id]
    for bad in ({"status": "sleeping"}, {"limit": "0"}, {"after": "nope"}, {"q": ""}, {"colour": "red"}):
        reply = await api.get(f"{ADMIN}/users", token=admin.access_token, params=bad)
        assert reply.status == 422, bad


async def test_a_users_devices_and_storage(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    phone = await api.new_device(user, device_name="phone")
    await api.upload(user, os.urandom(1234))
    await api.upload(user, os.urandom(766))
    detail = await api.get(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)
    assert detail.status == 200, detail.body
    assert detail.body["user"]["username"] == user.username
    assert [d["id"] for d in detail.body["devices"]] == [user.device_id, phone.device_id]
    assert detail.body["devices"][1]["name"] == "phone"
    assert detail.body["storage"] == {
        "files": 2,
        "bytes": 2000,
        "quota_bytes": server.config.media.quota_bytes,
    }
    upper = await api.get(f"{ADMIN}/users/{user.user_id.upper()}", token=admin.access_token)
    assert upper.status == 200 and upper.body["user"]["id"] == user.user_id
    assert (await api.get(f"{ADMIN}/users/{uuid.uuid4()}", token=admin.access_token)).status == 404
    assert (await api.get(f"{ADMIN}/users/not-an-id", token=admin.access_token)).status == 404


async def test_deactivation_closes_sockets_refuses_logins_and_tokens(server_factory: ServerFactory):
    server = await server_factory(SUP_SECRET_KEY="k" * 40, SUP_WEBSOCKET_CATCH_UP_SECONDS="0.3")
    api = server.api
    admin, user = await make_admin(server), await api.register()
    phone = await api.new_device(user)
    sockets = [await Socket.connect(server.url, api.session, device.access_token) for device in (user, phone)]
    reply = await api.post(f"{ADMIN}/users/{user.user_id}/deactivate", token=admin.access_token)
    assert reply.status == 200 and reply.body["status"] == "deactivated" and reply.body["deactivated_at"]
    for sock in sockets:
        with pytest.raises(ConnectionError):
            while True:
                await sock.recv(timeout=10)
        assert sock.ws.close_code == 4003  # revoked: the same as a device logged out
    assert (await api.get("/api/v1/users/me", token=user.access_token)).code == "invalid_token"
    refreshed = await api.post("/api/v1/auth/refresh", json={"refresh_token": phone.refresh_token})
    assert refreshed.status == 401 and refreshed.code == "invalid_refresh_token"
    login = await api.login(user)
    assert login.status == 403 and login.code == "account_deactivated"
    wrong = await api.post("/api/v1/auth/login", json={"username": user.username, "password": "not the password"})
    assert wrong.status == 401 and wrong.code == "invalid_credentials"  # said only to who knows the password
    assert (await api.get(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)).body["devices"] == []
    # Again is harmless; reactivated, the account logs in again (its old devices stay logged out).
    assert (await api.post(f"{ADMIN}/users/{user.user_id}/deactivate", token=admin.access_token)).status == 200
    back = await api.post(f"{ADMIN}/users/{user.user_id}/reactivate", token=admin.access_token)
    assert back.status == 200 and back.body["status"] == "active" and back.body["deactivated_at"] is None
    assert (await api.login(user)).status == 200
    assert (await api.get("/api/v1/users/me", token=phone.access_token)).status == 401


async def test_a_deactivated_member_does_not_hold_up_encrypted_groups(server: Server, admin: Account):
    api = server.api
    alice, bob, carol = await api.register(), await api.register(), await api.register()
    await api.publish_keys(alice, bob, carol)
    made = await api.post(
        "/api/v1/chats",
        json={"type": "group", "title": "e2e", "member_ids": [bob.user_id, carol.user_id]},
        token=alice.access_token,
    )
    chat_id = made.body["id"]
    await api.post(f"{ADMIN}/users/{carol.user_id}/deactivate", token=admin.access_token)
    sent = await api.post(
        "/api/v1/messages",
        json={
            "chat_id": chat_id,
            "client_id": str(uuid.uuid4()),
            "recipients": [{"device_id": bob.device_id, "ciphertext": "AAAA"}],
        },
        token=alice.access_token,
    )
    assert sent.status == 201, sent.body  # not member_without_device: carol cannot log in to read it


async def test_reset_2fa_lets_a_user_with_a_lost_phone_in(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    no_2fa = await api.post(f"{ADMIN}/users/{user.user_id}/2fa/reset", token=admin.access_token)
    assert no_2fa.status == 409 and no_2fa.code == "totp_not_enabled"
    await enable_2fa(server, user)
    assert (await api.login(user)).code == "totp_required"
    reset = await api.post(f"{ADMIN}/users/{user.user_id}/2fa/reset", token=admin.access_token)
    assert reset.status == 204
    assert (await api.login(user)).status == 200  # the password alone, as before 2FA
    status = await api.get("/api/v1/auth/2fa", token=user.access_token)
    assert status.body == {"enabled": False, "recovery_codes_remaining": 0}
    detail = await api.get(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)
    assert detail.body["user"]["two_factor"] is False


async def test_revoke_one_or_every_device(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    phone, tablet = await api.new_device(user), await api.new_device(user)
    other = await api.register()
    path = f"{ADMIN}/users/{user.user_id}/devices"
    assert (await api.delete(f"{path}/{other.device_id}", token=admin.access_token)).status == 404
    assert (await api.delete(f"{path}/{phone.device_id}", token=admin.access_token)).status == 204
    assert (await api.get("/api/v1/users/me", token=phone.access_token)).status == 401
    assert (await api.delete(f"{path}/{phone.device_id}", token=admin.access_token)).status == 404
    everything = await api.delete(path, token=admin.access_token)
    assert everything.status == 200
    assert sorted(everything.body["revoked_device_ids"]) == sorted([user.device_id, tablet.device_id])
    assert (await api.get("/api/v1/users/me", token=tablet.access_token)).status == 401
    assert (await api.get("/api/v1/users/me", token=other.access_token)).status == 200
    assert (await api.login(user)).status == 200  # logged out, not locked out


async def test_admins_are_made_and_unmade_but_not_by_themselves(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    made = await api.request(
        "PUT", f"{ADMIN}/users/{user.user_id}/admin", json={"is_admin": True}, token=admin.access_token
    )
    assert made.status == 200 and made.body["is_admin"] is True
    assert (await api.get(f"{ADMIN}/stats", token=user.access_token)).status == 200
    unmade = await api.request(
        "PUT", f"{ADMIN}/users/{user.user_id}/admin", json={"is_admin": False}, token=user.access_token
    )
    assert unmade.status == 409  # not one's own
    unmade = await api.request(
        "PUT", f"{ADMIN}/users/{user.user_id}/admin", json={"is_admin": False}, token=admin.access_token
    )
    assert unmade.status == 200 and unmade.body["is_admin"] is False
    assert (await api.get(f"{ADMIN}/stats", token=user.access_token)).status == 404
    for verb, path in (("POST", "deactivate"), ("DELETE", "")):
        reply = await api.request(verb, f"{ADMIN}/users/{admin.user_id}/{path}".rstrip("/"), token=admin.access_token)
        assert reply.status == 409 and reply.code == "conflict", path
    bad = await api.request(
        "PUT", f"{ADMIN}/users/{user.user_id}/admin", json={"is_admin": "yes"}, token=admin.access_token
    )
    assert bad.status == 422


async def test_cli_set_admin_is_audited(server: Server, admin: Account, database_url: str, tmp_path: Path):
    api = server.api
    user = await api.register()
    env = sup_env(tmp_path, database_url, SUP_SECRET_KEY="k" * 40)
    code, out, err = await sup("admin", "set-admin", user.username.upper(), env=env)
    assert code == 0, err
    assert out.strip() == f"{user.username} is now an administrator"
    assert (await api.get(f"{ADMIN}/stats", token=user.access_token)).status == 200
    code, _, err = await sup("admin", "set-admin", "no_such_user", env=env)
    assert code == 1 and "no_such_user" in err
    [entry] = await audit(api, admin, target_id=user.user_id)
    assert entry["action"] == "user.admin_granted" and entry["actor_id"] is None  # the command line


# -- invites -----------------------------------------------------------------------------------------


async def test_invites_made_listed_used_and_revoked(server_factory: ServerFactory):
    server = await server_factory(SUP_SECRET_KEY="k" * 40, SUP_AUTH_REGISTRATION="invite")
    api = server.api
    admin = await make_admin(server)
    made = await api.post(f"{ADMIN}/invites", json={"max_uses": 2}, token=admin.access_token)
    assert made.status == 201, made.body
    code, invite = made.body["code"], made.body["invite"]
    assert code.startswith("supi_") and len(invite["id"]) == 64 and code not in str(invite)
    assert invite["state"] == "active" and invite["uses"] == 0 and invite["created_by"] == admin.user_id
    week = invite["expires_at"] - invite["created_at"]
    assert week == 7 * 86_400_000
    forever = await api.post(f"{ADMIN}/invites", json={"expires_in_seconds": None}, token=admin.access_token)
    assert forever.body["invite"]["expires_at"] is None and forever.body["invite"]["max_uses"] == 1

    register = {"password": "long enough pw", "invite_code": code}
    assert (await api.post("/api/v1/auth/register", json={"username": new_username(), **register})).status == 201
    listed = await api.get(f"{ADMIN}/invites", token=admin.access_token, params={"limit": "1"})
    assert listed.body["items"][0]["id"] == forever.body["invite"]["id"]  # newest first
    rest = await api.get(f"{ADMIN}/invites", token=admin.access_token, params={"before": listed.body["next_cursor"]})
    [first] = [i for i in rest.body["items"] if i["id"] == invite["id"]]
    assert first["uses"] == 1 and first["state"] == "active"

    revoked = await api.delete(f"{ADMIN}/invites/{invite['id']}", token=admin.access_token)
    assert revoked.status == 204
    refused = await api.post("/api/v1/auth/register", json={"username": new_username(), **register})
    assert refused.status == 403 and refused.code == "invalid_invite"
    assert (await api.delete(f"{ADMIN}/invites/{invite['id']}", token=admin.access_token)).status == 404
    assert (await api.delete(f"{ADMIN}/invites/{'AB' * 32}", token=admin.access_token)).status == 404
    assert (await api.delete(f"{ADMIN}/invites/{code}", token=admin.access_token)).status == 404
    for bad in ({"max_uses": 0}, {"max_uses": 10_001}, {"expires_in_seconds": 59}, {"code": "mine"}):
        reply = await api.post(f"{ADMIN}/invites", json=bad, token=admin.access_token)
        assert reply.status == 422, bad
    bad_cursor = await api.get(f"{ADMIN}/invites", token=admin.access_token, params={"before": "12.zz"})
    assert bad_cursor.status == 422


# -- the server's figures and the audit log -----------------------------------------------------------


async def test_server_stats_count_what_there_is(server: Server, admin: Account):
    api = server.api
    before = (await api.get(f"{ADMIN}/stats", token=admin.access_token)).body
    alice, bob = await api.register(), await api.register()
    chat_id = await plain_group(api, alice, bob)
    await api.post(
        "/api/v1/messages", json={"chat_id": chat_id, "client_id": "x", "body": "hi"}, token=alice.access_token
    )
    await api.upload(alice, os.urandom(100))
    after = await api.get(f"{ADMIN}/stats", token=admin.access_token)
    assert after.status == 200
    now = after.body
    assert now["users"]["total"] - before["users"]["total"] == 2
    assert now["users"]["active"] - before["users"]["active"] == 2
    assert now["users"]["admins"] >= 1
    assert now["devices"] - before["devices"] == 2
    assert now["chats"]["group"] - before["chats"]["group"] == 1
    assert now["messages"]["total"] - before["messages"]["total"] == 1
    assert now["storage"]["files"] - before["storage"]["files"] == 1
    assert now["storage"]["bytes"] - before["storage"]["bytes"] == 100
    assert set(now["jobs"]) >= {"queued", "running", "done", "failed"}


async def test_every_admin_change_is_in_the_audit_log(server_factory: ServerFactory):
    server = await server_factory(SUP_SECRET_KEY="k" * 40)
    api = server.api
    admin, user = await make_admin(server), await api.register()
    secret, _ = await enable_2fa(server, user)
    server.clock.advance(30)  # enabling used the current code
    await api.new_device(user, totp_code=pyotp.TOTP(secret).at(server.clock.now()))
    done = [
        ("POST", f"/users/{user.user_id}/deactivate", None, "user.deactivated"),
        ("POST", f"/users/{user.user_id}/reactivate", None, "user.reactivated"),
        ("POST", f"/users/{user.user_id}/2fa/reset", None, "user.2fa_reset"),
        ("PUT", f"/users/{user.user_id}/admin", {"is_admin": True}, "user.admin_granted"),
        ("PUT", f"/users/{user.user_id}/admin", {"is_admin": False}, "user.admin_revoked"),
        ("DELETE", f"/users/{user.user_id}/devices", None, "user.devices_revoked"),
        ("POST", "/invites", {"max_uses": 3}, "invite.created"),
        ("DELETE", f"/users/{user.user_id}", None, "user.deleted"),
    ]
    invite_id = None
    for method, path, body, _ in done:
        reply = await api.request(method, ADMIN + path, json=body, token=admin.access_token)
        assert reply.status < 300, (path, reply.body)
        if path == "/invites":
            invite_id = reply.body["invite"]["id"]
    assert (await api.delete(f"{ADMIN}/invites/{invite_id}", token=admin.access_token)).status == 204
    # One device revoked on its own (a user of their own, as the others are gone with the deletion).
    other = await api.register()
    second = await api.new_device(other)
    await api.delete(f"{ADMIN}/users/{other.user_id}/devices/{second.device_id}", token=admin.access_token)

    # The module's database holds what other tests' admins did too: this admin's entries, oldest first.
    entries = list(reversed(await audit(api, admin, actor_id=admin.user_id)))
    assert [e["action"] for e in entries] == [a for *_, a in done] + ["invite.revoked", "user.device_revoked"]
    assert {e["actor_id"] for e in entries} == {admin.user_id}
    assert {e["actor_username"] for e in entries} == {admin.username}
    by_action = {e["action"]: e for e in entries}
    for action in ("user.deactivated", "user.deleted", "user.2fa_reset"):
        assert by_action[action]["target_id"] == user.user_id
        assert by_action[action]["details"]["username"] == user.username  # the name it had then
    assert by_action["user.deactivated"]["details"]["devices_revoked"] == 2
    assert by_action["user.deleted"]["details"]["by"] == "admin"
    assert by_action["invite.created"]["target_id"] == invite_id == by_action["invite.revoked"]["target_id"]
    assert by_action["invite.created"]["details"]["max_uses"] == 3
    assert by_action["user.device_revoked"]["details"]["device_id"] == second.device_id
    assert all(e["created_at"] > 0 for e in entries)
    assert by_action["user.devices_revoked"]["details"]["device_ids"] == []  # all out since the deactivation

    # Cursor pages, newest first, and filters.
    seen, cursor = [], None
    while True:
        params = {"limit": "3", "actor_id": admin.user_id, **({"before": cursor} if cursor else {})}
        page = await api.get(f"{ADMIN}/audit", token=admin.access_token, params=params)
        seen += [e["id"] for e in page.body["items"]]
        if (cursor := page.body["next_cursor"]) is None:
            break
    assert seen == [e["id"] for e in reversed(entries)]
    only = await audit(api, admin, action="user.deleted", actor_id=admin.user_id)
    assert [e["target_id"] for e in only] == [user.user_id]
    assert [e["action"] for e in await audit(api, admin, target_id=user.user_id.upper())][-1] == "user.deactivated"
    assert len(await audit(api, admin, actor_id=user.user_id)) == 0
    for bad in ({"before": "x"}, {"action": "DROP TABLE"}, {"limit": "201"}):
        assert (await api.get(f"{ADMIN}/audit", token=admin.access_token, params=bad)).status == 422
    # Reading is not a change: nothing more was logged by all this.
    assert len(await audit(api, admin, actor_id=admin.user_id)) == len(entries)


async def test_acting_on_a_deleted_account_is_a_conflict(server: Server, admin: Account):
    api = server.api
    user = await api.register()
    assert (await api.delete(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)).status == 204
    for method, path in (
        ("POST", "deactivate"),
        ("POST", "reactivate"),
        ("POST", "2fa/reset"),
        ("DELETE", "devices"),
        ("DELETE", ""),
    ):
        reply = await api.request(method, f"{ADMIN}/users/{user.user_id}/{path}".rstrip("/"), token=admin.access_token)
        assert reply.status == 409 and reply.code == "conflict", path
    detail = await api.get(f"{ADMIN}/users/{user.user_id}", token=admin.access_token)
    assert detail.status == 200 and detail.body["user"]["status"] == "deleted"
    assert detail.body["user"]["username"] != user.username
