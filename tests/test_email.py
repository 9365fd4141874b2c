"""Email: a verified address, password reset by email, invites by email; off without SMTP, and rate-limited."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from tests.conftest import Account, Api, Socket, plain_group
from tests.mailbox import Mailbox, token_in
from tests.processes import sup, sup_env

PUBLIC_URL = "https://chat.example.test"


@pytest.fixture(scope="module")
async def mailbox():
    box = await Mailbox().start()
    yield box
    await box.close()


@pytest.fixture(scope="module")
async def mail_server(server_factory, mailbox: Mailbox):
    return await server_factory(**mailbox.env(SUP_SERVER_PUBLIC_URL=PUBLIC_URL))


def new_address() -> str:
    return f"Someone.{uuid.uuid4().hex[:8]}@Example.test"


async def verified(api: Api, mailbox: Mailbox, account: Account, address: str | None = None) -> str:
    address = address or new_address()
    seen = len(mailbox.to(address))
    reply = await api.request(
        "PUT", "/api/v1/auth/email", json={"email": address, "password": account.password}, token=account.access_token
    )
    assert reply.status == 200, reply.body
    token = token_in(await mailbox.next_to(address, seen))
    reply = await api.post("/api/v1/auth/verify", json={"token": token}, token=account.access_token)
    assert reply.status == 200, reply.body
    return address


async def test_without_smtp_email_is_off_and_says_so(api: Api):
    alice = await api.register()
    status = await api.get("/api/v1/auth/email", token=alice.access_token)
    assert status.body == {"address": None, "verified_at": None, "pending": None, "available": False}
    reply = await api.request(
        "PUT",
        "/api/v1/auth/email",
        json={"email": "a@example.test", "password": alice.password},
        token=alice.access_token,
    )
    assert (reply.status, reply.code) == (404, "not_configured")
    reply = await api.post("/api/v1/auth/password-reset", json={"login": alice.username})
    assert (reply.status, reply.code) == (404, "not_configured")
    assert "smtp_host" in reply.body["detail"]


async def test_an_address_is_the_accounts_once_verified(mail_server, mailbox: Mailbox):
    api = mail_server.api
    alice = await api.register()
    address = new_address()
    reply = await api.request(
        "PUT", "/api/v1/auth/email", json={"email": address, "password": alice.password}, token=alice.access_token
    )
    assert reply.status == 200 and reply.body["pending"] == address and reply.body["address"] is None
    mail = await mailbox.next_to(address)
    assert mail["Subject"] == "Confirm your email address for SUP" and mail["From"] == "SUP <sup@example.test>"
    token = token_in(mail)
    assert f"{PUBLIC_URL}/verify-email#token={token}" in mail.get_content().replace(
        "\r\n", "\n"
    )  # a link, its token kept from logs

    reply = await api.post("/api/v1/auth/verify", json={"token": token}, token=alice.access_token)
    assert reply.status == 200
    assert reply.body["address"] == address and reply.body["pending"] is None and reply.body["available"] is True
    again = await api.post("/api/v1/auth/verify", json={"token": token}, token=alice.access_token)
    assert (again.status, again.code) == (400, "invalid_email_token")

    # Setting an address needs the password: a stolen access token cannot redirect resets.
    wrong = await api.request(
        "PUT",
        "/api/v1/auth/email",
        json={"email": new_address(), "password": "not it at all"},
        token=alice.access_token,
    )
    assert (wrong.status, wrong.code) == (401, "invalid_credentials")


async def test_a_verify_code_of_another_user_is_refused_and_stays_good(mail_server, mailbox: Mailbox):
    api = mail_server.api
    alice, bob = await api.register(), await api.register()
    address = new_address()
    await api.request(
        "PUT", "/api/v1/auth/email", json={"email": address, "password": bob.password}, token=bob.access_token
    )
    bobs_token = token_in(await mailbox.next_to(address))
    stolen = await api.post("/api/v1/auth/verify", json={"token": bobs_token}, token=alice.access_token)
    assert (stolen.status, stolen.code) == (400, "invalid_email_token")
    assert (await api.get("/api/v1/auth/email", token=alice.access_token)).body["address"] is None
    assert (await api.post("/api/v1/auth/verify", json={"token": bobs_token}, token=bob.access_token)).status == 200

    # An address verified by one account cannot be verified by another.
    asked = await api.request(
        "PUT",
        "/api/v1/auth/email",
        json={"email": address.upper(), "password": alice.password},
        token=alice.access_token,
    )
    assert asked.status == 200
    token = token_in(await mailbox.next_to(address.upper()))
    taken = await api.post("/api/v1/auth/verify", json={"token": token}, token=alice.access_token)
    assert (taken.status, taken.code) == (409, "email_taken")


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "a@b",
        "two@@example.test",
        "a b@example.test",
        "dots..twice@example.test",
        ".leading@example.test",
        "x@example..test",
        "x@-example.test",
        "x" * 65 + "@example.test",
        "x@" + "a" * 250 + ".test",
        "<x@example.test>",
        "x@example.test\nBcc: y@example.test",
        "ünicode@example.test",
    ],
)
async def test_a_malformed_address_is_refused(mail_server, address: str):
    api = mail_server.api
    alice = await api.register()
    reply = await api.request(
        "PUT", "/api/v1/auth/email", json={"email": address, "password": alice.password}, token=alice.access_token
    )
    assert (reply.status, reply.code) == (422, "validation_failed"), reply.body
    assert reply.body["field"] == "email"


async def test_password_reset_by_email(mail_server, mailbox: Mailbox):
    api = mail_server.api
    alice, bob = await api.register(), await api.register()
    phone = await api.new_device(alice)
    await plain_group(api, alice, bob)
    address = await verified(api, mailbox, alice)
    bob_socket = await Socket.connect(mail_server.url, api.session, bob.access_token)
    try:
        seen = len(mailbox.to(address))
        reply = await api.post("/api/v1/auth/password-reset", json={"login": address.lower()})
        assert (reply.status, reply.body) == (204, b"")
        mail = await mailbox.next_to(address, seen)
        assert mail["Subject"] == "Reset your SUP password"
        token = token_in(mail)
        assert f"{PUBLIC_URL}/reset-password#token={token}" in mail.get_content().replace("\r\n", "\n")

        short = await api.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": "short"})
        assert short.status == 422  # refused before the code is used up
        reply = await api.post(
            "/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": "a brand new password"}
        )
        assert reply.status == 204
        # Every device is logged out, and the people who share a chat are told its keys changed.
        frame = await bob_socket.until(lambda f: f.get("type") == "keys.changed" and f.get("user_id") == alice.user_id)
        assert frame["change"] == "removed" and set(frame["device_ids"]) == {alice.device_id, phone.device_id}
    finally:
        await bob_socket.close()
    for device in (alice, phone):
        assert (await api.get("/api/v1/users/me", token=device.access_token)).code == "invalid_token"
        assert (await api.post("/api/v1/auth/refresh", json={"refresh_token": device.refresh_token})).status == 401
    assert (await api.login(alice)).status == 401
    alice.password = "a brand new password"
    assert (await api.login(alice)).status == 200

    twice = await api.post("/api/v1/auth/password-reset/confirm", json={"token": token, "new_password": "and again!!"})
    assert (twice.status, twice.code) == (400, "invalid_email_token")


async def test_a_reset_code_expires_and_only_the_newest_works(mail_server, mailbox: Mailbox):
    api = mail_server.api
    alice = await api.register()
    address = await verified(api, mailbox, alice)
    seen = len(mailbox.to(address))
    await api.post("/api/v1/auth/password-reset", json={"login": alice.username.upper()})  # by username, any case
    first = token_in(await mailbox.next_to(address, seen))
    await api.post("/api/v1/auth/password-reset", json={"login": alice.username})
    second = token_in(await mailbox.next_to(address, seen + 1))
    older = await api.post("/api/v1/auth/password-reset/confirm", json={"token": first, "new_password": "x" * 12})
    assert (older.status, older.code) == (400, "invalid_email_token")

    mail_server.clock.advance(61 * 60)  # email.reset_token_minutes is 60
    try:
        late = await api.post("/api/v1/auth/password-reset/confirm", json={"token": second, "new_password": "x" * 12})
    finally:
        mail_server.clock.advance(-61 * 60)
    assert (late.status, late.code) == (400, "invalid_email_token")
    assert (await api.login(alice)).status == 200  # the password never changed


async def test_a_reset_request_never_tells_whether_the_account_exists(mail_server, mailbox: Mailbox):
    api = mail_server.api
    alice = await api.register()
    address = await verified(api, mailbox, alice)
    seen = len(mailbox.to(address))
    mailbox.delay = 1.0  # a slow mail server: the answer must not wait for it
    try:
        replies, took = [], []
        for login in (address, alice.username, "nobody@example.test", "nobody_at_all", alice.username + "x"):
            started = time.monotonic()
            reply = await api.post("/api/v1/auth/password-reset", json={"login": login})
            took.append(time.monotonic() - started)
            replies.append((reply.status, reply.body, reply.headers.get("Content-Length")))
        assert len(set(replies)) == 1 and replies[0][0] == 204
        assert max(took) < 0.8, took  # no mail is sent while the asker waits
        await mailbox.next_to(address, seen + 1)  # alice's two mails do come
    finally:
        mailbox.delay = 0.0
    assert mailbox.to("nobody@example.test") == []


async def test_email_sending_is_rate_limited(server_factory, mailbox: Mailbox):
    server = await server_factory(
        **mailbox.env(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_EMAIL_PER_ADDRESS="2", SUP_RATELIMIT_EMAIL_PER_IP="4")
    )
    api = server.api
    statuses = [(await api.post("/api/v1/auth/password-reset", json={"login": "target"})).status for _ in range(3)]
    assert statuses == [204, 204, 429]  # per address (or username) asked for
    limited = await api.post("/api/v1/auth/password-reset", json={"login": "target"})
    assert limited.code == "rate_limited" and int(limited.headers["Retry-After"]) > 0
    for login in ("another", "yet_another"):
        assert (await api.post("/api/v1/auth/password-reset", json={"login": login})).status == 204
    reply = await api.post("/api/v1/auth/password-reset", json={"login": "a_fifth"})
    assert (reply.status, reply.code) == (429, "rate_limited")  # per client address: 4 an hour here

    other = await server_factory(**mailbox.env(SUP_RATELIMIT_ENABLED="true", SUP_RATELIMIT_EMAIL_PER_ADDRESS="1"))
    alice = await other.api.register()
    body = {"email": "limited@example.test", "password": alice.password}
    first = await other.api.request("PUT", "/api/v1/auth/email", json=body, token=alice.access_token)
    second = await other.api.request("PUT", "/api/v1/auth/email", json=body, token=alice.access_token)
    assert (first.status, second.status, second.code) == (200, 429, "rate_limited")


async def test_sup_admin_invite_by_email(server_factory, mailbox: Mailbox, database_url: str, tmp_path):
    env = sup_env(tmp_path, database_url, SUP_SERVER_PUBLIC_URL=PUBLIC_URL, **mailbox.env())
    friend = new_address()
    code, out, err = await sup("admin", "invite", "--email", friend, env=env)
    assert code == 0, err
    mail = await mailbox.next_to(friend)
    invite = token_in(mail)
    assert invite in out and f"{PUBLIC_URL}/register#invite={invite}" in mail.get_content().replace("\r\n", "\n")
    server = await server_factory(SUP_AUTH_REGISTRATION="invite")
    assert (
        await server.api.post(
            "/api/v1/auth/register",
            json={"username": f"f_{uuid.uuid4().hex[:8]}", "password": "x" * 12, "invite_code": invite},
        )
    ).status == 201

    code, _, err = await sup("admin", "invite", "--email", "not an address", env=env)
    assert code == 1 and "not an email address" in err
    code, _, err = await sup("admin", "invite", "--email", friend, env=sup_env(tmp_path, database_url))
    assert code == 1 and "sends no email" in err


async def test_a_failing_mail_server_is_logged_not_answered(server_factory, caplog):
    server = await server_factory(
        SUP_EMAIL_SMTP_HOST="127.0.0.1",
        SUP_EMAIL_SMTP_PORT="9",
        SUP_EMAIL_SMTP_SECURITY="none",
        SUP_EMAIL_FROM_ADDRESS="sup@example.test",
        SUP_EMAIL_TIMEOUT_SECONDS="2",
    )
    alice = await server.api.register()
    body = {"email": "alice@example.test", "password": alice.password}
    reply = await server.api.request("PUT", "/api/v1/auth/email", json=body, token=alice.access_token)
    assert reply.status == 200 and reply.body["pending"] == "alice@example.test"
    for _ in range(100):
        if "sending an email failed" in caplog.text:
            break
        await asyncio.sleep(0.05)
    assert "sending an email failed" in caplog.text
