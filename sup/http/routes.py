"""Every HTTP route of SUP, in one table."""

from __future__ import annotations

from aiohttp import web

from sup import __version__
from sup.domain.accounts import Device, User
from sup.domain.users import BlockedUser, Contact
from sup.http import schemas as s
from sup.http.api import Call, Route, encode, endpoint, openapi
from sup.http.handlers import auth, devices, health, users

API = "/api/v1"

ROUTES: list[Route] = [
    Route("GET", "/health", health.health, response=s.HealthStatus, auth=False, tag="health"),
    Route("GET", "/health/ready", health.ready, response=s.HealthStatus, auth=False, tag="health"),
    # auth
    Route(
        "POST",
        f"{API}/auth/register",
        auth.register,
        body=s.RegisterRequest,
        response=s.SessionResponse,
        status=201,
        auth=False,
        tag="auth",
    ),
    Route(
        "POST",
        f"{API}/auth/login",
        auth.login,
        body=s.LoginRequest,
        response=s.SessionResponse,
        auth=False,
        tag="auth",
    ),
    Route(
        "POST",
        f"{API}/auth/refresh",
        auth.refresh,
        body=s.RefreshRequest,
        response=s.SessionResponse,
        auth=False,
        tag="auth",
    ),
    Route("POST", f"{API}/auth/logout", auth.logout, tag="auth"),
    Route("POST", f"{API}/auth/password", auth.change_password, body=s.PasswordChangeRequest, tag="auth"),
    Route("GET", f"{API}/auth/2fa", auth.get_2fa, response=s.TwoFactorStatus, tag="auth"),
    Route(
        "POST",
        f"{API}/auth/2fa/enable",
        auth.enable_2fa,
        body=s.TotpEnableRequest,
        response=s.TotpEnableResponse,
        tag="auth",
    ),
    Route(
        "POST",
        f"{API}/auth/2fa/verify",
        auth.verify_2fa,
        body=s.TotpVerifyRequest,
        response=s.RecoveryCodesResponse,
        tag="auth",
    ),
    Route("POST", f"{API}/auth/2fa/disable", auth.disable_2fa, body=s.TotpDisableRequest, tag="auth"),
    Route(
        "POST",
        f"{API}/auth/2fa/recovery-codes",
        auth.regenerate_recovery_codes,
        body=s.TotpVerifyRequest,
        response=s.RecoveryCodesResponse,
        tag="auth",
    ),
    # devices
    Route("GET", f"{API}/devices", devices.list_devices, response=s.DeviceList, tag="devices"),
    Route(
        "PATCH",
        f"{API}/devices/{{device_id}}",
        devices.rename_device,
        body=s.DeviceRename,
        response=Device,
        tag="devices",
    ),
    Route("DELETE", f"{API}/devices/{{device_id}}", devices.revoke_device, tag="devices"),
    # users
    Route("GET", f"{API}/users/by-username/{{username}}", users.get_user_by_username, response=User, tag="users"),
    Route("GET", f"{API}/users/{{user_id}}", users.get_user, response=User, tag="users"),
    Route(
        "PATCH",
        f"{API}/users/{{user_id}}",
        users.update_user,
        body=s.ProfileUpdate,
        response=User,
        tag="users",
    ),
    Route(
        "GET",
        f"{API}/users/{{user_id}}/contacts",
        users.list_contacts,
        query=s.PageQuery,
        response=s.ContactPage,
        tag="users",
    ),
    Route(
        "POST",
        f"{API}/users/{{user_id}}/contacts",
        users.add_contact,
        body=s.UserRef,
        response=Contact,
        status=201,
        tag="users",
    ),
    Route("DELETE", f"{API}/users/{{user_id}}/contacts/{{contact_id}}", users.remove_contact, tag="users"),
    Route(
        "GET",
        f"{API}/users/{{user_id}}/blocks",
        users.list_blocked,
        query=s.PageQuery,
        response=s.BlockedPage,
        tag="users",
    ),
    Route(
        "POST",
        f"{API}/users/{{user_id}}/block",
        users.block_user,
        body=s.UserRef,
        response=BlockedUser,
        status=201,
        tag="users",
    ),
    Route("DELETE", f"{API}/users/{{user_id}}/block/{{blocked_id}}", users.unblock_user, tag="users"),
]


def add_routes(app: web.Application) -> None:
    document = encode(openapi(ROUTES, __version__))

    async def get_openapi(call: Call) -> web.Response:
        """GET /api/v1/openapi.json: this API, described in OpenAPI 3.1."""
        return web.Response(body=document, content_type="application/json")

    all_routes = [*ROUTES, Route("GET", f"{API}/openapi.json", get_openapi, auth=False, tag="meta")]
    for route in all_routes:
        handler = endpoint(route)
        app.router.add_route(route.method, route.path, handler)
        if route.method == "GET":  # monitors and caches probe with HEAD
            app.router.add_route("HEAD", route.path, handler)
