"""TOTP two-factor authentication and recovery codes."""

from __future__ import annotations

import pyotp

from tests.conftest import Account, Api, Server


async def enable_2fa(server: Server, account: Account) -> tuple[str, list[str]]:
    api = server.api
    setup = await api.post("/api/v1/auth/2fa/enable", json={"password": account.password}, token=account.access_token)
    assert setup.status == 200, setup.body
    secret = setup.body["secret"]
    assert setup.body["provisioning_uri"].startswith("otpauth://totp/")
    assert account.username in setup.body["provisioning_uri"]
    code = pyotp.TOTP(secret).at(server.clock.now())
    verify = await api.post("/api/v1/auth/2fa/verify", json={"code": code}, token=account.access_token)
    assert verify.status == 200, verify.body
    codes = verify.body["recovery_codes"]
    assert len(codes) == 10 and len(set(codes)) == 10
    return secret, codes


async def test_login_requires_a_code_once_2fa_is_on(server: Server):
    api = server.api
    account = await api.register()
    secret, _ = await enable_2fa(server, account)
    status = await api.get("/api/v1/auth/2fa", token=account.access_token)
    assert status.body == {"enabled": True, "recovery_codes_remaining": 10}

    missing = await api.login(account)
    assert missing.status == 401 and missing.code == "totp_required"
    wrong = await api.login(account, totp_code="000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    assert wrong.status == 401 and wrong.code == "invalid_totp"
    # A wrong password with a right code is still a wrong password.
    server.clock.advance(30)
    bad_pw = await api.post(
        "/api/v1/auth/login",
        json={
            "username": account.username,
            "password": "wrong pw!",
            "totp_code": pyotp.TOTP(secret).at(server.clock.now()),
        },
    )
    assert bad_pw.status == 401 and bad_pw.code == "invalid_credentials"
    ok = await api.login(account, totp_code=pyotp.TOTP(secret).at(server.clock.now()))
    assert ok.status == 200


async def test_a_code_cannot_be_used_twice(server: Server):
    api = server.api
    account = await api.register()
    secret, _ = await enable_2fa(server, account)
    server.clock.advance(30)  # the verify step above used the current step
    code = pyotp.TOTP(secret).at(server.clock.now())
    assert (await api.login(account, totp_code=code)).status == 200
    replay = await api.login(account, totp_code=code)
    assert replay.status == 401 and replay.code == "invalid_totp"
    # nor can an older one, still inside the drift window
    previous = pyotp.TOTP(secret).at(server.clock.now() - 30)
    assert (await api.login(account, totp_code=previous)).status == 401


async def test_the_code_used_to_confirm_cannot_log_in(server: Server):
    api = server.api
    account = await api.register()
    setup = await api.post("/api/v1/auth/2fa/enable", json={"password": account.password}, token=account.access_token)
    code = pyotp.TOTP(setup.body["secret"]).at(server.clock.now())
    assert (await api.post("/api/v1/auth/2fa/verify", json={"code": code}, token=account.access_token)).status == 200
    assert (await api.login(account, totp_code=code)).status == 401


async def test_recovery_codes_work_once(server: Server):
    api = server.api
    account = await api.register()
    _, codes = await enable_2fa(server, account)
    assert (await api.login(account, recovery_code=codes[0].upper())).status == 200
    again = await api.login(account, recovery_code=codes[0])
    assert again.status == 401 and again.code == "invalid_totp"
    assert (await api.login(account, recovery_code="nope-nope-nope")).status == 401
    status = await api.get("/api/v1/auth/2fa", token=account.access_token)
    assert status.body["recovery_codes_remaining"] == 9


async def test_regenerate_recovery_codes(server: Server):
    api = server.api
    account = await api.register()
    secret, old = await enable_2fa(server, account)
    server.clock.advance(30)
    code = pyotp.TOTP(secret).at(server.clock.now())
    reply = await api.post("/api/v1/auth/2fa/recovery-codes", json={"code": code}, token=account.access_token)
    assert reply.status == 200
    assert (await api.login(account, recovery_code=old[1])).status == 401
    assert (await api.login(account, recovery_code=reply.body["recovery_codes"][0])).status == 200


async def test_disable_needs_password_and_a_code(server: Server):
    api = server.api
    account = await api.register()
    _, codes = await enable_2fa(server, account)
    no_code = await api.post(
        "/api/v1/auth/2fa/disable", json={"password": account.password}, token=account.access_token
    )
    assert no_code.status == 401 and no_code.code == "totp_required"
    bad_pw = await api.post(
        "/api/v1/auth/2fa/disable",
        json={"password": "wrong pw!", "recovery_code": codes[0]},
        token=account.access_token,
    )
    assert bad_pw.status == 401 and bad_pw.code == "invalid_credentials"
    ok = await api.post(
        "/api/v1/auth/2fa/disable",
        json={"password": account.password, "recovery_code": codes[0]},
        token=account.access_token,
    )
    assert ok.status == 204
    assert (await api.login(account)).status == 200
    assert (await api.get("/api/v1/auth/2fa", token=account.access_token)).body["enabled"] is False


async def test_2fa_state_errors(server: Server):
    api = server.api
    account = await api.register()
    early = await api.post("/api/v1/auth/2fa/verify", json={"code": "123456"}, token=account.access_token)
    assert early.status == 409 and early.code == "totp_not_pending"
    off = await api.post(
        "/api/v1/auth/2fa/disable",
        json={"password": account.password, "totp_code": "123456"},
        token=account.access_token,
    )
    assert off.status == 409 and off.code == "totp_not_enabled"
    wrong_pw = await api.post("/api/v1/auth/2fa/enable", json={"password": "wrong pw!"}, token=account.access_token)
    assert wrong_pw.status == 401
    await enable_2fa(server, account)
    twice = await api.post("/api/v1/auth/2fa/enable", json={"password": account.password}, token=account.access_token)
    assert twice.status == 409 and twice.code == "totp_already_enabled"
    bad_shape = await api.post("/api/v1/auth/2fa/verify", json={"code": "12345a"}, token=account.access_token)
    assert bad_shape.status == 422


async def test_totp_secret_is_not_stored_in_clear(server: Server, api: Api):
    account = await api.register()
    secret, _ = await enable_2fa(server, account)
    row = await server.db.fetchrow("SELECT totp_secret FROM users WHERE id = $1", account.user_id)
    assert secret.encode() not in bytes(row["totp_secret"])
