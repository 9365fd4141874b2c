"""The account endpoints of the REST API (docs/api.md): auth and two-factor, devices, users and contacts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sup.client.transport import Session, Transport, given
from sup.client.transport import segment as _p


class AccountsApi(Transport):
    """Auth, devices, users: who I am and who I know."""

    # -- auth --------------------------------------------------------------------------------

    async def register(
        self,
        username: str,
        password: str,
        *,
        display_name: str = "",
        device_name: str = "",
        invite_code: str | None = None,
    ) -> Session:
        """POST /auth/register: a new account and its first device, logged in."""
        optional = given(display_name=display_name or None, invite_code=invite_code)
        return await self._sign_in("/auth/register", username, password, device_name, optional)

    async def login(
        self,
        username: str,
        password: str,
        *,
        totp_code: str | None = None,
        recovery_code: str | None = None,
        device_name: str = "",
    ) -> Session:
        """POST /auth/login: a new device. Raises ApiError `totp_required` when a second factor is needed."""
        optional = given(totp_code=totp_code, recovery_code=recovery_code)
        return await self._sign_in("/auth/login", username, password, device_name, optional)

    async def _sign_in(
        self, path: str, username: str, password: str, device_name: str, optional: dict[str, Any]
    ) -> Session:
        """Register or log in (`path`): a session for a new device, its tokens kept."""
        body = {"username": username, "password": password, "device_name": device_name, **optional}
        return await self._take_session(await self.request("POST", path, json=body, auth=False))

    async def logout(self) -> None:
        """POST /auth/logout: end this device's session."""
        await self.request("POST", "/auth/logout")
        self.tokens = None

    async def change_password(self, current_password: str, new_password: str) -> None:
        """POST /auth/password: other devices are logged out."""
        await self.request(
            "POST", "/auth/password", json={"current_password": current_password, "new_password": new_password}
        )

    async def two_factor_status(self) -> dict[str, Any]:
        """GET /auth/2fa: `{"enabled", "recovery_codes_remaining"}`."""
        return await self.request("GET", "/auth/2fa")

    async def enable_two_factor(self, password: str) -> dict[str, Any]:
        """POST /auth/2fa/enable: `{"secret", "provisioning_uri"}`; 2FA is on only after `verify_two_factor`."""
        return await self.request("POST", "/auth/2fa/enable", json={"password": password})

    async def verify_two_factor(self, code: str) -> list[str]:
        """POST /auth/2fa/verify: turns 2FA on; the one-time recovery codes (shown once)."""
        return (await self.request("POST", "/auth/2fa/verify", json={"code": code}))["recovery_codes"]

    async def disable_two_factor(
        self, password: str, *, totp_code: str | None = None, recovery_code: str | None = None
    ) -> None:
        body = {"password": password, **given(totp_code=totp_code, recovery_code=recovery_code)}
        await self.request("POST", "/auth/2fa/disable", json=body)

    # -- devices -----------------------------------------------------------------------------

    async def devices(self) -> list[dict[str, Any]]:
        """GET /devices: my logged-in devices, oldest first; `current` marks this one."""
        return (await self.request("GET", "/devices"))["devices"]

    async def rename_device(self, device_id: str, name: str) -> dict[str, Any]:
        return await self.request("PATCH", f"/devices/{_p(device_id)}", json={"name": name})

    async def revoke_device(self, device_id: str) -> None:
        await self.request("DELETE", f"/devices/{_p(device_id)}")

    # -- users -------------------------------------------------------------------------------

    async def me(self) -> dict[str, Any]:
        return await self.request("GET", "/users/me")

    async def user(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/users/{_p(user_id)}")

    async def user_by_username(self, username: str) -> dict[str, Any]:
        """GET /users/by-username/{username} (case-insensitive); the server has no fuzzy search."""
        return await self.request("GET", f"/users/by-username/{_p(username)}")

    async def presence(self, user_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/users/{_p(user_id)}/presence")

    async def set_presence_visibility(self, visibility: str) -> None:
        """PUT /users/me/presence: who sees me online: "everyone", "contacts" or "nobody"."""
        await self.request("PUT", "/users/me/presence", json={"visibility": visibility})

    async def update_profile(self, **fields: Any) -> dict[str, Any]:
        """PATCH /users/me with any of display_name, bio, avatar_media_id."""
        return await self.request("PATCH", "/users/me", json=fields)

    def contacts(self) -> AsyncIterator[dict[str, Any]]:
        return self._paged("/users/me/contacts")

    async def add_contact(self, user_id: str) -> dict[str, Any]:
        return await self.request("POST", "/users/me/contacts", json={"user_id": user_id}, idempotent=True)

    async def remove_contact(self, user_id: str) -> None:
        await self.request("DELETE", f"/users/me/contacts/{_p(user_id)}")

    async def block(self, user_id: str) -> dict[str, Any]:
        return await self.request("POST", "/users/me/block", json={"user_id": user_id}, idempotent=True)

    async def unblock(self, user_id: str) -> None:
        await self.request("DELETE", f"/users/me/block/{_p(user_id)}")
