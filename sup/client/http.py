"""The REST API of a SUP server, as a client sees it (docs/api.md).

`SupHttp` is one device's view of the API: a method per endpoint, grouped as the API is (auth, devices,
users, chats, messages, the key directory, media), on the `Transport` (transport.py) that holds the
device's tokens, refreshes them, retries idempotent requests and turns problem+json answers into
`ApiError`. Large uploads go in resumable chunks (uploads.py).

Bytes travel as standard base64 in JSON; the methods here take and return `bytes` and do
the encoding. Answers are the server's JSON objects (dicts), except that the `ciphertext`
of a message is decoded to bytes. Media travels as raw bytes (application/octet-stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from sup.client import uploads
from sup.client.transport import (
    API,
    ApiError,
    Session,
    SessionEnded,
    TokenCallback,
    Tokens,
    Transport,
    b64d,
    b64e,
    decode_message,
    message_content,
)
from sup.client.transport import segment as _p
from sup.client.uploads import RESUMABLE_ABOVE, MediaSource

__all__ = [
    "API",
    "RESUMABLE_ABOVE",
    "ApiError",
    "MediaSource",
    "Session",
    "SessionEnded",
    "SupHttp",
    "TokenCallback",
    "Tokens",
    "b64d",
    "b64e",
    "decode_message",
]


class PrekeyLike(Protocol):
    key_id: int
    public_key: bytes


class SignedPrekeyLike(Protocol):
    key_id: int
    public_key: bytes
    signature: bytes


def _prekey_json(key: PrekeyLike) -> dict[str, Any]:
    return {"key_id": key.key_id, "public_key": b64e(key.public_key)}


def _signed_prekey_json(key: SignedPrekeyLike) -> dict[str, Any]:
    return {"key_id": key.key_id, "public_key": b64e(key.public_key), "signature": b64e(key.signature)}


def _decode_key_record(record: dict[str, Any]) -> dict[str, Any]:
    """A key-directory entry with its base64 fields as bytes."""
    out = dict(record)
    out["identity_key"] = b64d(record["identity_key"])
    spk = record.get("signed_prekey")
    if spk is not None:
        out["signed_prekey"] = {
            "key_id": spk["key_id"],
            "public_key": b64d(spk["public_key"]),
            "signature": b64d(spk["signature"]),
        }
    if "one_time_prekey" in record:
        otk = record["one_time_prekey"]
        out["one_time_prekey"] = (
            None if otk is None else {"key_id": otk["key_id"], "public_key": b64d(otk["public_key"])}
        )
    return out


class SupHttp(Transport):
    """One device's view of the REST API."""

    async def __aenter__(self) -> SupHttp:
        return self

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
        body: dict[str, Any] = {"username": username, "password": password, "device_name": device_name}
        if display_name:
            body["display_name"] = display_name
        if invite_code is not None:
            body["invite_code"] = invite_code
        return await self._take_session(await self.request("POST", "/auth/register", json=body, auth=False))

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
        body: dict[str, Any] = {"username": username, "password": password, "device_name": device_name}
        if totp_code is not None:
            body["totp_code"] = totp_code
        if recovery_code is not None:
            body["recovery_code"] = recovery_code
        return await self._take_session(await self.request("POST", "/auth/login", json=body, auth=False))

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
        body: dict[str, Any] = {"password": password}
        if totp_code is not None:
            body["totp_code"] = totp_code
        if recovery_code is not None:
            body["recovery_code"] = recovery_code
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

    # -- chats -------------------------------------------------------------------------------

    async def create_chat(
        self,
        type: str,
        member_ids: Iterable[str] = (),
        *,
        title: str = "",
        description: str = "",
        encrypted: bool | None = None,
        visibility: str | None = None,
    ) -> dict[str, Any]:
        """POST /chats. Direct chats and groups are encrypted unless `encrypted=False`; channels never.
        `visibility="public"` (channels and unencrypted groups) lets anyone find and join it."""
        body: dict[str, Any] = {"type": type, "member_ids": list(member_ids), "title": title}
        if description:
            body["description"] = description
        if encrypted is not None:
            body["encrypted"] = encrypted
        if visibility is not None:
            body["visibility"] = visibility
        return await self.request("POST", "/chats", json=body)

    async def create_direct(self, user_id: str, *, encrypted: bool | None = None) -> dict[str, Any]:
        """The direct chat with a user (there is one per pair: asking again returns it)."""
        return await self.create_chat("direct", [user_id], encrypted=encrypted)

    async def create_group(
        self, title: str, member_ids: Iterable[str] = (), *, encrypted: bool = True, description: str = ""
    ) -> dict[str, Any]:
        return await self.create_chat("group", member_ids, title=title, description=description, encrypted=encrypted)

    async def create_channel(
        self, title: str, member_ids: Iterable[str] = (), *, description: str = "", visibility: str | None = None
    ) -> dict:
        return await self.create_chat(
            "channel", member_ids, title=title, description=description, encrypted=False, visibility=visibility
        )

    async def chats_page(self, *, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """GET /chats: one page, most recently active first; `next_cursor` goes in `before`."""
        return await self.request("GET", "/chats", params={"limit": limit, "before": before})

    def chats(self) -> AsyncIterator[dict[str, Any]]:
        """Every chat I am in, page by page."""
        return self._paged("/chats", cursor_param="before")

    async def chat(self, chat_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/chats/{_p(chat_id)}")

    async def update_chat(self, chat_id: str, **fields: Any) -> dict[str, Any]:
        return await self.request("PATCH", f"/chats/{_p(chat_id)}", json=fields)

    async def delete_chat(self, chat_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}")

    async def leave_chat(self, chat_id: str) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/leave", idempotent=True)

    async def members(self, chat_id: str) -> list[dict[str, Any]]:
        """Every member of a chat (all pages)."""
        return [m async for m in self._paged(f"/chats/{_p(chat_id)}/members")]

    async def add_members(self, chat_id: str, user_ids: Iterable[str]) -> list[str]:
        answer = await self.request(
            "POST", f"/chats/{_p(chat_id)}/members", json={"user_ids": list(user_ids)}, idempotent=True
        )
        return answer["added"]

    async def remove_member(self, chat_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}/members/{_p(user_id)}")

    async def typing(self, chat_id: str, active: bool = True) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/typing", json={"active": active}, idempotent=True)

    # -- joining: public chats, invite links, join requests -----------------------------------

    async def join_chat(self, chat_id: str) -> dict[str, Any]:
        """POST /chats/{id}/join: join a public chat. `{"status": "joined" | "member", "chat"}`."""
        return await self.request("POST", f"/chats/{_p(chat_id)}/join", idempotent=True)

    async def create_invite(
        self,
        chat_id: str,
        *,
        name: str = "",
        requires_approval: bool = False,
        expires_in: int | None = None,
        max_uses: int | None = None,
    ) -> dict[str, Any]:
        """POST /chats/{id}/invites: a new invite link (`code` is its secret part); `expires_in` in seconds."""
        body: dict[str, Any] = {"name": name, "requires_approval": requires_approval}
        if expires_in is not None:
            body["expires_in"] = expires_in
        if max_uses is not None:
            body["max_uses"] = max_uses
        return await self.request("POST", f"/chats/{_p(chat_id)}/invites", json=body)

    async def invites(self, chat_id: str) -> list[dict[str, Any]]:
        """Every invite link of a chat, newest first (revoked and spent ones say so in `usable`)."""
        return [i async for i in self._paged(f"/chats/{_p(chat_id)}/invites")]

    async def revoke_invite(self, chat_id: str, invite_id: str) -> None:
        await self.request("DELETE", f"/chats/{_p(chat_id)}/invites/{_p(invite_id)}", idempotent=True)

    async def preview_invite(self, code: str) -> dict[str, Any]:
        """POST /chat-invites/preview: `{"chat": {...}, "requires_approval", "expires_at", "requested"}`."""
        return await self.request("POST", "/chat-invites/preview", json={"code": code}, idempotent=True)

    async def join_by_invite(self, code: str) -> dict[str, Any]:
        """POST /chat-invites/join: `{"status": "joined" | "member" | "requested", "chat", "request"}`."""
        return await self.request("POST", "/chat-invites/join", json={"code": code}, idempotent=True)

    async def join_requests(self, chat_id: str) -> list[dict[str, Any]]:
        """Every join request waiting in a chat, oldest first."""
        return [r async for r in self._paged(f"/chats/{_p(chat_id)}/join-requests")]

    async def approve_join_request(self, chat_id: str, user_id: str) -> None:
        await self.request("POST", f"/chats/{_p(chat_id)}/join-requests/{_p(user_id)}/approve", idempotent=True)

    async def decline_join_request(self, chat_id: str, user_id: str = "me") -> None:
        """Decline someone's request, or (`me`, the default) withdraw mine."""
        await self.request("DELETE", f"/chats/{_p(chat_id)}/join-requests/{_p(user_id)}")

    # -- search (what the server can read: plaintext chats) -----------------------------------

    async def search_users(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /search/users: users by username or display name, best match first."""
        return (await self.request("GET", "/search/users", params={"q": q, "limit": limit}))["items"]

    async def search_chats(self, q: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """GET /search/chats: my groups and channels, and public ones, by title; `joined` says which."""
        return (await self.request("GET", "/search/chats", params={"q": q, "limit": limit}))["items"]

    async def search_messages(
        self,
        q: str,
        *,
        chat_id: str | None = None,
        order: str = "newest",
        before: str | None = None,
        limit: int = 20,
    ) -> dict[str, Any]:
        """GET /search/messages: one page, `{"items": [{"message", "snippet", "score"}], "next_cursor"}`;
        pass `next_cursor` as `before` for the next. Encrypted chats are not searched (see Client.search)."""
        params = {"q": q, "chat_id": chat_id, "order": order, "before": before, "limit": limit}
        page = await self.request("GET", "/search/messages", params=params)
        for item in page["items"]:
            decode_message(item["message"])
        return page

    # -- messages ----------------------------------------------------------------------------

    async def send_message(
        self,
        chat_id: str,
        client_id: str,
        *,
        body: str | None = None,
        ciphertext: bytes | None = None,
        recipients: Mapping[str, bytes] | None = None,
        kind: str = "text",
        media_id: str | None = None,
        sticker_id: str | None = None,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        """POST /messages. The same `client_id` (and content) again returns the original message,
        so a send whose answer was lost is retried safely. `recipients` maps device id to ciphertext."""
        content = message_content(
            body=body,
            ciphertext=ciphertext,
            recipients=recipients,
            media_id=media_id,
            sticker_id=sticker_id,
            reply_to=reply_to,
        )
        payload = {"chat_id": chat_id, "client_id": client_id, "kind": kind, **content}
        return decode_message(await self.request("POST", "/messages", json=payload, idempotent=True))

    async def history(
        self, chat_id: str, *, limit: int = 50, before: int | None = None, after: int | None = None
    ) -> dict[str, Any]:
        """GET /messages/chat/{id}: `{"items", "next_before", "next_after"}`, items in seq order."""
        page = await self.request(
            "GET", f"/messages/chat/{_p(chat_id)}", params={"limit": limit, "before": before, "after": after}
        )
        for item in page["items"]:
            decode_message(item)
        return page

    async def message(self, message_id: str) -> dict[str, Any]:
        return decode_message(await self.request("GET", f"/messages/{_p(message_id)}"))

    async def edit_message(
        self,
        message_id: str,
        *,
        body: str | None = None,
        ciphertext: bytes | None = None,
        recipients: Mapping[str, bytes] | None = None,
    ) -> dict[str, Any]:
        payload = message_content(body=body, ciphertext=ciphertext, recipients=recipients)
        return decode_message(await self.request("PATCH", f"/messages/{_p(message_id)}", json=payload))

    async def delete_message(self, message_id: str, *, for_everyone: bool = True) -> None:
        scope = "everyone" if for_everyone else "me"
        await self.request("DELETE", f"/messages/{_p(message_id)}", params={"scope": scope})

    async def react(self, message_id: str, emoji: str) -> list[dict[str, Any]]:
        answer = await self.request(
            "POST", f"/messages/{_p(message_id)}/reactions", json={"emoji": emoji}, idempotent=True
        )
        return answer["reactions"]

    async def unreact(self, message_id: str, emoji: str) -> list[dict[str, Any]]:
        answer = await self.request("DELETE", f"/messages/{_p(message_id)}/reactions", params={"emoji": emoji})
        return answer["reactions"]

    async def mark_read(self, chat_id: str, seq: int) -> dict[str, Any]:
        """POST /messages/chat/{id}/read: a read receipt up to `seq`."""
        return await self.request("POST", f"/messages/chat/{_p(chat_id)}/read", json={"seq": seq}, idempotent=True)

    async def forward(self, message_id: str, chat_id: str, client_id: str) -> dict[str, Any]:
        answer = await self.request(
            "POST",
            f"/messages/{_p(message_id)}/forward",
            json={"chat_id": chat_id, "client_id": client_id},
            idempotent=True,
        )
        return decode_message(answer)

    async def pin(self, message_id: str) -> None:
        await self.request("POST", f"/messages/{_p(message_id)}/pin", idempotent=True)

    async def unpin(self, message_id: str) -> None:
        await self.request("DELETE", f"/messages/{_p(message_id)}/pin")

    # -- the end-to-end key directory -------------------------------------------------------

    async def publish_keys(
        self, identity_key: bytes, signed_prekey: SignedPrekeyLike, one_time_prekeys: Iterable[PrekeyLike]
    ) -> int:
        """POST /crypto/keys: this device's identity, signed prekey and one-time prekeys;
        the number of one-time prekeys stored."""
        answer = await self.request(
            "POST",
            "/crypto/keys",
            json={
                "identity_key": b64e(identity_key),
                "signed_prekey": _signed_prekey_json(signed_prekey),
                "one_time_prekeys": [_prekey_json(k) for k in one_time_prekeys],
            },
            idempotent=True,
        )
        return answer["one_time_prekeys"]

    async def upload_prekeys(
        self, one_time_prekeys: Iterable[PrekeyLike], signed_prekey: SignedPrekeyLike | None = None
    ) -> int:
        """POST /crypto/prekeys: more one-time prekeys, and a rotated signed prekey if given."""
        body: dict[str, Any] = {"one_time_prekeys": [_prekey_json(k) for k in one_time_prekeys]}
        if signed_prekey is not None:
            body["signed_prekey"] = _signed_prekey_json(signed_prekey)
        answer = await self.request("POST", "/crypto/prekeys", json=body, idempotent=True)
        return answer["one_time_prekeys"]

    async def prekey_status(self) -> dict[str, Any]:
        """GET /crypto/prekeys: `{"one_time_prekeys", "signed_prekey_id", "signed_prekey_created_at"}`."""
        return await self.request("GET", "/crypto/prekeys")

    async def device_keys(self, user_id: str, device_id: str) -> dict[str, Any]:
        """GET /crypto/keys/{user}/{device}: identity key and signed prekey, consuming nothing."""
        return _decode_key_record(await self.request("GET", f"/crypto/keys/{_p(user_id)}/{_p(device_id)}"))

    async def user_keys(self, user_id: str) -> list[dict[str, Any]]:
        """GET /crypto/keys/{user}/all: every active device of a user that published keys."""
        answer = await self.request("GET", f"/crypto/keys/{_p(user_id)}/all")
        return [_decode_key_record(d) for d in answer["devices"]]

    async def prekey_bundle(self, user_id: str, device_id: str) -> dict[str, Any]:
        """GET /crypto/prekeys/{user}/{device}: a bundle for X3DH; consumes one one-time prekey.

        Not idempotent: a retry would consume another prekey, which is harmless but wasteful.
        """
        return _decode_key_record(await self.request("GET", f"/crypto/prekeys/{_p(user_id)}/{_p(device_id)}"))

    async def prekey_bundles(self, user_id: str) -> list[dict[str, Any]]:
        """GET /crypto/prekeys/{user}/all: a bundle for each of the user's devices."""
        answer = await self.request("GET", f"/crypto/prekeys/{_p(user_id)}/all")
        return [_decode_key_record(d) for d in answer["devices"]]

    async def post_sender_key(self, chat_id: str, distribution_id: str, recipients: Mapping[str, bytes]) -> None:
        """POST /crypto/sender-keys/{chat}: my sender-key distribution, pairwise-encrypted per device."""
        await self.request(
            "POST",
            f"/crypto/sender-keys/{_p(chat_id)}",
            json={
                "distribution_id": distribution_id,
                "recipients": [{"device_id": d, "ciphertext": b64e(c)} for d, c in recipients.items()],
            },
            idempotent=True,
        )

    # -- media -------------------------------------------------------------------------------

    async def upload_media(
        self,
        source: MediaSource,
        *,
        filename: str = "",
        purpose: str = "attachment",
        encrypted: bool = False,
        resumable: bool | None = None,
    ) -> dict[str, Any]:
        """Upload a file (bytes, or a file path streamed from disk); the server's media object.

        Files above RESUMABLE_ABOVE (or with `resumable=True`) go through `upload_media_resumable`,
        so a dropped connection costs one chunk. `encrypted=True` marks a client-encrypted blob:
        stored opaque, never processed, and the only kind an end-to-end encrypted chat accepts.
        The filename reaches the server in the clear: leave it empty for an encrypted upload.
        """
        size = await uploads.source_size(source)
        if resumable is None:
            resumable = size > RESUMABLE_ABOVE
        if resumable:
            return await self.upload_media_resumable(source, filename=filename, purpose=purpose, encrypted=encrypted)
        return await uploads.upload_whole(self, source, size, filename=filename, purpose=purpose, encrypted=encrypted)

    async def upload_media_resumable(
        self,
        source: MediaSource,
        *,
        filename: str = "",
        purpose: str = "attachment",
        encrypted: bool = False,
        upload_id: str | None = None,
        on_started: Callable[[str], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Upload in chunks (POST /media/uploads, PUT each chunk, then complete); the media object.

        After a network error that outlasts a chunk's own retries it asks the server which chunks
        arrived and sends only the others, up to RESUME_ROUNDS times. To continue an upload after a
        restart, keep the id given to `on_started` and pass it back as `upload_id` with the same source.
        """
        return await uploads.upload_in_chunks(
            self,
            source,
            filename=filename,
            purpose=purpose,
            encrypted=encrypted,
            upload_id=upload_id,
            on_started=on_started,
        )

    async def upload_status(self, upload_id: str) -> dict[str, Any]:
        """GET /media/uploads/{id}: `{"upload_id", "size", "chunk_size", "chunk_count", "received", ...}`."""
        return await uploads.status(self, upload_id)

    async def abort_upload(self, upload_id: str) -> None:
        """DELETE /media/uploads/{id}: give up a resumable upload; the server drops its chunks."""
        await self.request("DELETE", f"/media/uploads/{_p(upload_id)}")

    async def download_media(
        self, media_id: str, *, start: int | None = None, end: int | None = None, variant: str = "original"
    ) -> bytes:
        """GET /media/download/{id}: the stored bytes, or bytes [start, end) of them.

        An encrypted attachment comes back exactly as uploaded (decrypt it with its key); a
        processed image comes back as served (metadata stripped). `variant` "small"/"large"
        picks a thumbnail. ApiError `range_not_satisfiable` (416) when `start` is past the end.
        """
        headers = {}
        if start is not None or end is not None:
            first = start or 0
            if end is not None and end <= first:
                return b""
            headers["Range"] = f"bytes={first}-{'' if end is None else end - 1}"
        reply = await self.exchange(
            "GET", f"/media/download/{_p(media_id)}", headers=headers, params={"variant": variant}
        )
        if headers and reply.status != 206:  # the server sent the whole file after all
            return reply.raw[start or 0 : end]
        return reply.raw

    async def media_thumbnail(self, media_id: str, *, size: str = "small") -> bytes:
        """GET /media/thumbnail/{id}: a processed image's (or video's) thumbnail, "small" or "large".

        ApiError `media_not_ready` while processing; `not_found` for files without one (encrypted ones).
        """
        return (await self.exchange("GET", f"/media/thumbnail/{_p(media_id)}", params={"size": size})).raw

    async def media(self, media_id: str) -> dict[str, Any]:
        """GET /media/{id}: size, kind, mime, sha256, processing status, dimensions, ..."""
        return await self.request("GET", f"/media/{_p(media_id)}")

    async def media_url(self, media_id: str, *, variant: str = "original") -> dict[str, Any]:
        """GET /media/{id}/url: `{"url", "expires_at"}`, a download link that needs no token until it expires."""
        return await self.request("GET", f"/media/{_p(media_id)}/url", params={"variant": variant})

    async def delete_media(self, media_id: str) -> None:
        """DELETE /media/{id}: delete one of my uploads."""
        await self.request("DELETE", f"/media/{_p(media_id)}")

    # -- stories -----------------------------------------------------------------------------

    async def post_story(
        self, media_id: str, *, audience: str = "contacts", caption: str = "", list_id: str | None = None
    ) -> dict[str, Any]:
        """POST /stories: my unencrypted upload (image or video) as a story for `audience`: "chats",
        "contacts", "close_friends" or "contacts_except" (with `list_id`, the list left out)."""
        body: dict[str, Any] = {"media_id": media_id, "audience": audience, "caption": caption}
        if list_id is not None:
            body["list_id"] = list_id
        return await self.request("POST", "/stories", json=body)

    async def stories_page(self, *, limit: int = 50, before: str | None = None) -> dict[str, Any]:
        """GET /stories: `{"authors": [{"author", "stories", "all_seen"}], "next_cursor"}`, latest poster first."""
        return await self.request("GET", "/stories", params={"limit": limit, "before": before})

    def stories(self) -> AsyncIterator[dict[str, Any]]:
        """Every author with stories I may see (`{"author", "stories", "all_seen"}`), page by page."""
        return self._paged("/stories", key="authors", cursor_param="before", limit=100)

    async def story(self, story_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/stories/{_p(story_id)}")

    async def delete_story(self, story_id: str) -> None:
        await self.request("DELETE", f"/stories/{_p(story_id)}")

    async def view_story(self, story_id: str) -> None:
        """POST /stories/{id}/view: mark it seen (again changes nothing)."""
        await self.request("POST", f"/stories/{_p(story_id)}/view", idempotent=True)

    def story_views(self, story_id: str) -> AsyncIterator[dict[str, Any]]:
        """Who viewed my story (`{"user", "viewed_at"}`), latest first."""
        return self._paged(f"/stories/{_p(story_id)}/views", cursor_param="before")

    async def story_lists(self) -> list[dict[str, Any]]:
        """GET /stories/lists: my close-friends list, then my lists of people to leave out."""
        return (await self.request("GET", "/stories/lists"))["lists"]

    async def story_list(self, list_id: str = "close-friends") -> dict[str, Any]:
        return await self.request("GET", f"/stories/lists/{_p(list_id)}")

    async def create_story_list(self, name: str, user_ids: Iterable[str] = ()) -> dict[str, Any]:
        return await self.request("POST", "/stories/lists", json={"name": name, "user_ids": list(user_ids)})

    async def update_story_list(
        self, list_id: str = "close-friends", *, name: str | None = None, user_ids: Iterable[str] | None = None
    ) -> dict[str, Any]:
        """PATCH /stories/lists/{id}: rename it, or replace who is on it (`close-friends` names that list)."""
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if user_ids is not None:
            body["user_ids"] = list(user_ids)
        return await self.request("PATCH", f"/stories/lists/{_p(list_id)}", json=body)

    async def add_to_story_list(self, list_id: str, user_ids: Iterable[str]) -> dict[str, Any]:
        return await self.request(
            "POST", f"/stories/lists/{_p(list_id)}/members", json={"user_ids": list(user_ids)}, idempotent=True
        )

    async def remove_from_story_list(self, list_id: str, user_id: str) -> None:
        await self.request("DELETE", f"/stories/lists/{_p(list_id)}/members/{_p(user_id)}")

    async def delete_story_list(self, list_id: str) -> None:
        await self.request("DELETE", f"/stories/lists/{_p(list_id)}")

    # -- sticker packs -----------------------------------------------------------------------

    async def create_sticker_pack(self, title: str, *, cover_media_id: str | None = None) -> dict[str, Any]:
        """POST /stickers/packs: a draft pack; add stickers, then `publish_sticker_pack`."""
        body: dict[str, Any] = {"title": title}
        if cover_media_id is not None:
            body["cover_media_id"] = cover_media_id
        return await self.request("POST", "/stickers/packs", json=body)

    async def update_sticker_pack(self, pack_id: str, **fields: Any) -> dict[str, Any]:
        """PATCH /stickers/packs/{id} with `title` and/or `cover_media_id`."""
        return await self.request("PATCH", f"/stickers/packs/{_p(pack_id)}", json=fields)

    async def add_sticker(self, pack_id: str, media_id: str, emoji: str) -> dict[str, Any]:
        """POST /stickers/packs/{id}/stickers: my processed upload (purpose "sticker") standing for `emoji`."""
        return await self.request(
            "POST", f"/stickers/packs/{_p(pack_id)}/stickers", json={"media_id": media_id, "emoji": emoji}
        )

    async def remove_sticker(self, pack_id: str, sticker_id: str) -> None:
        await self.request("DELETE", f"/stickers/packs/{_p(pack_id)}/stickers/{_p(sticker_id)}")

    async def publish_sticker_pack(self, pack_id: str) -> dict[str, Any]:
        return await self.request("POST", f"/stickers/packs/{_p(pack_id)}/publish")

    async def sticker_pack(self, pack_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/stickers/packs/{_p(pack_id)}")

    async def sticker_pack_by_slug(self, slug: str) -> dict[str, Any]:
        """GET /stickers/packs/by-slug/{slug}: a pack from its share link."""
        return await self.request("GET", f"/stickers/packs/by-slug/{_p(slug)}")

    async def my_sticker_packs(self) -> list[dict[str, Any]]:
        """GET /stickers/packs: the packs I made, drafts included."""
        return (await self.request("GET", "/stickers/packs"))["packs"]

    async def installed_sticker_packs(self) -> list[dict[str, Any]]:
        """GET /stickers/installed: the packs I installed, in my order."""
        return (await self.request("GET", "/stickers/installed"))["packs"]

    async def install_sticker_pack(self, pack_id: str) -> list[dict[str, Any]]:
        """POST /stickers/installed; ApiError `conflict` if it is installed already. My packs, in order."""
        return (await self.request("POST", "/stickers/installed", json={"pack_id": pack_id}))["packs"]

    async def uninstall_sticker_pack(self, pack_id: str) -> None:
        await self.request("DELETE", f"/stickers/installed/{_p(pack_id)}")

    async def reorder_sticker_packs(self, pack_ids: Iterable[str]) -> list[dict[str, Any]]:
        """PUT /stickers/installed: every installed pack, once, in the new order."""
        return (await self.request("PUT", "/stickers/installed", json={"pack_ids": list(pack_ids)}))["packs"]

    async def sticker(self, sticker_id: str) -> dict[str, Any]:
        """GET /stickers/{id}: the sticker a message names (its `media_id` is the image)."""
        return await self.request("GET", f"/stickers/{_p(sticker_id)}")
