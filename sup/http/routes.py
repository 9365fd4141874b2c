"""Every HTTP route of SUP, in one table."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from sup import __version__
from sup.domain.chats import Chat
from sup.domain.joining import JoinResult
from sup.domain.limits import Family
from sup.domain.timeline import Message
from sup.http import schemas as s
from sup.http.api import Call, Route, encode, endpoint, limited_raw, openapi, router_path
from sup.http.handlers import (
    account,
    admin,
    auth,
    calls,
    chats,
    crypto,
    devices,
    email,
    health,
    joining,
    media,
    messages,
    push,
    search,
    service_worker,
    stickers,
    stories,
    users,
    web_client,
)
from sup.http.observe import get_metrics
from sup.ws.gateway import websocket

API = "/api/v1"

# One maker per OpenAPI tag, holding what all of that tag's routes share, so each row of the
# table says only what is its own.
health_api = partial(Route, tag="health")
auth_api = partial(Route, tag="auth")
account_api = partial(Route, tag="account")
devices_api = partial(Route, tag="devices")
users_api = partial(Route, tag="users")
chats_api = partial(Route, tag="chats")
messages_api = partial(Route, tag="messages")
search_api = partial(Route, tag="search", limit=Family.SEARCH)
crypto_api = partial(Route, tag="crypto")
media_api = partial(Route, tag="media")
stories_api = partial(Route, tag="stories")
stickers_api = partial(Route, tag="stickers")
admin_api = partial(Route, tag="admin", admin=True)
calls_api = partial(Route, tag="calls")
push_api = partial(Route, tag="push")

ROUTES: list[Route] = [
    health_api("GET", "/health", health.health, auth=False),
    health_api("GET", "/health/ready", health.ready, response=s.HealthStatus, auth=False),
    # The real-time gateway authenticates with its first frame (docs/protocol.md).
    Route("GET", f"{API}/ws", websocket, auth=False, tag="realtime", raw=True),
    # auth
    auth_api("POST", f"{API}/auth/register", auth.register, status=201, auth=False),
    auth_api("POST", f"{API}/auth/login", auth.login, auth=False),
    auth_api("POST", f"{API}/auth/refresh", auth.refresh, auth=False),
    auth_api("POST", f"{API}/auth/logout", auth.logout),
    auth_api("POST", f"{API}/auth/password", auth.change_password),
    auth_api("GET", f"{API}/auth/2fa", auth.get_2fa),
    auth_api("POST", f"{API}/auth/2fa/enable", auth.enable_2fa),
    auth_api("POST", f"{API}/auth/2fa/verify", auth.verify_2fa),
    auth_api("POST", f"{API}/auth/2fa/disable", auth.disable_2fa),
    auth_api("POST", f"{API}/auth/2fa/recovery-codes", auth.regenerate_recovery_codes),
    # my account as a whole
    account_api("POST", f"{API}/account/delete", account.delete_account),
    account_api("POST", f"{API}/account/exports", account.request_export, status=202),
    account_api("GET", f"{API}/account/exports", account.list_exports),
    account_api("GET", f"{API}/account/exports/{{export_id}}", account.get_export),
    account_api(
        "GET", f"{API}/account/exports/{{export_id}}/download", account.download_export, raw_responses=s.FILE_DOWNLOAD
    ),
    # email: a verified address, password reset (docs/api.md#email-and-password-reset)
    auth_api("GET", f"{API}/auth/email", email.get_email),
    auth_api("PUT", f"{API}/auth/email", email.set_email),
    auth_api("POST", f"{API}/auth/email/remove", email.remove_email),
    auth_api("POST", f"{API}/auth/verify", email.verify_email),
    auth_api("POST", f"{API}/auth/password-reset", email.request_password_reset, auth=False),
    auth_api("POST", f"{API}/auth/password-reset/confirm", email.confirm_password_reset, auth=False),
    # devices
    devices_api("GET", f"{API}/devices", devices.list_devices),
    devices_api("PATCH", f"{API}/devices/{{device_id}}", devices.rename_device),
    devices_api("DELETE", f"{API}/devices/{{device_id}}", devices.revoke_device),
    # users
    users_api("GET", f"{API}/users/by-username/{{username}}", users.get_user_by_username),
    users_api("GET", f"{API}/users/{{user_id}}", users.get_user),
    users_api("PATCH", f"{API}/users/{{user_id}}", users.update_user),
    users_api("GET", f"{API}/users/{{user_id}}/contacts", users.list_contacts, query=s.PageQuery),
    users_api("POST", f"{API}/users/{{user_id}}/contacts", users.add_contact, status=201),
    users_api("DELETE", f"{API}/users/{{user_id}}/contacts/{{contact_id}}", users.remove_contact),
    users_api("GET", f"{API}/users/{{user_id}}/blocks", users.list_blocked, query=s.PageQuery),
    users_api("POST", f"{API}/users/{{user_id}}/block", users.block_user, status=201),
    users_api("DELETE", f"{API}/users/{{user_id}}/block/{{blocked_id}}", users.unblock_user),
    users_api("GET", f"{API}/users/{{user_id}}/presence", users.get_presence),
    users_api("PUT", f"{API}/users/{{user_id}}/presence", users.set_presence_visibility),
    # chats
    chats_api("GET", f"{API}/chats", chats.list_chats, query=s.ChatListQuery),
    chats_api("POST", f"{API}/chats", chats.create_chat, response=Chat, status=201, also=(200,)),
    chats_api("GET", f"{API}/chats/{{chat_id}}", chats.get_chat),
    chats_api("PATCH", f"{API}/chats/{{chat_id}}", chats.update_chat),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}", chats.delete_chat),
    chats_api("POST", f"{API}/chats/{{chat_id}}/leave", chats.leave_chat),
    chats_api("GET", f"{API}/chats/{{chat_id}}/members", chats.list_members, query=s.PageQuery),
    chats_api("POST", f"{API}/chats/{{chat_id}}/members", chats.add_members),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/members/{{user_id}}", chats.remove_member),
    chats_api("PATCH", f"{API}/chats/{{chat_id}}/members/{{user_id}}", chats.set_member_role),
    chats_api("GET", f"{API}/chats/{{chat_id}}/roles", chats.list_roles),
    chats_api("POST", f"{API}/chats/{{chat_id}}/roles", chats.create_role, status=201),
    chats_api("PATCH", f"{API}/chats/{{chat_id}}/roles/{{role_id}}", chats.update_role),
    chats_api("GET", f"{API}/chats/{{chat_id}}/pins", chats.list_pins),
    chats_api("POST", f"{API}/chats/{{chat_id}}/typing", chats.typing),
    # joining: public chats, invite links, join requests (codes travel in bodies, never in URLs)
    chats_api(
        "POST", f"{API}/chats/{{chat_id}}/join", joining.join_chat, response=JoinResult, status=201, limit=Family.JOINS
    ),
    chats_api("POST", f"{API}/chats/{{chat_id}}/invites", joining.create_invite, status=201),
    chats_api("GET", f"{API}/chats/{{chat_id}}/invites", joining.list_invites, query=s.PageQuery),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/invites/{{invite_id}}", joining.revoke_invite),
    chats_api("GET", f"{API}/chats/{{chat_id}}/join-requests", joining.list_join_requests, query=s.JoinRequestQuery),
    chats_api("POST", f"{API}/chats/{{chat_id}}/join-requests/{{user_id}}/approve", joining.approve_join_request),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/join-requests/{{user_id}}", joining.delete_join_request),
    chats_api("POST", f"{API}/chat-invites/preview", joining.preview_invite, limit=Family.JOINS),
    chats_api(
        "POST", f"{API}/chat-invites/join", joining.join_by_invite, response=JoinResult, status=201, limit=Family.JOINS
    ),
    # messages
    messages_api(
        "POST", f"{API}/messages", messages.send_message, response=Message, status=201, also=(200,), limit=Family.SENDS
    ),
    messages_api("GET", f"{API}/messages/chat/{{chat_id}}", messages.history, query=s.HistoryQuery),
    messages_api("POST", f"{API}/messages/chat/{{chat_id}}/read", messages.mark_read),
    messages_api("GET", f"{API}/messages/{{message_id}}", messages.get_message),
    messages_api("PATCH", f"{API}/messages/{{message_id}}", messages.edit_message),
    messages_api("DELETE", f"{API}/messages/{{message_id}}", messages.delete_message, query=s.DeleteQuery),
    messages_api("POST", f"{API}/messages/{{message_id}}/reactions", messages.add_reaction),
    messages_api("DELETE", f"{API}/messages/{{message_id}}/reactions", messages.remove_reaction, query=s.ReactionQuery),
    messages_api(
        "POST",
        f"{API}/messages/{{message_id}}/forward",
        messages.forward_message,
        response=Message,
        status=201,
        also=(200,),
        limit=Family.SENDS,
    ),
    messages_api("POST", f"{API}/messages/{{message_id}}/pin", messages.pin_message),
    messages_api("DELETE", f"{API}/messages/{{message_id}}/pin", messages.unpin_message),
    # search
    search_api("GET", f"{API}/search/users", search.search_users, query=s.NameSearchQuery),
    search_api("GET", f"{API}/search/chats", search.search_chats, query=s.NameSearchQuery),
    search_api("GET", f"{API}/search/messages", search.search_messages, query=s.MessageSearchQuery),
    # E2E key directory
    crypto_api("POST", f"{API}/crypto/keys", crypto.publish_keys),
    crypto_api("GET", f"{API}/crypto/keys/{{user_id}}/all", crypto.get_all_keys, limit=Family.PREKEY_FETCHES),
    crypto_api("GET", f"{API}/crypto/keys/{{user_id}}/{{device_id}}", crypto.get_keys, limit=Family.PREKEY_FETCHES),
    crypto_api("GET", f"{API}/crypto/prekeys", crypto.prekey_status),
    crypto_api("POST", f"{API}/crypto/prekeys", crypto.upload_prekeys),
    crypto_api("GET", f"{API}/crypto/prekeys/{{user_id}}/all", crypto.get_all_bundles, limit=Family.PREKEY_FETCHES),
    crypto_api(
        "GET", f"{API}/crypto/prekeys/{{user_id}}/{{device_id}}", crypto.get_bundle, limit=Family.PREKEY_FETCHES
    ),
    crypto_api("POST", f"{API}/crypto/sender-keys/{{chat_id}}", crypto.distribute_sender_key),
    crypto_api("GET", f"{API}/crypto/sender-keys/{{chat_id}}", crypto.my_sender_keys),
    # media
    media_api(
        "POST",
        f"{API}/media/upload",
        media.upload,
        query=s.MediaUploadQuery,
        status=201,
        raw_body=s.FILE_UPLOAD,
        limit=Family.UPLOADS,
    ),
    media_api("POST", f"{API}/media/uploads", media.start_upload, status=201, limit=Family.UPLOADS),
    media_api("GET", f"{API}/media/uploads/{{upload_id}}", media.upload_status, limit=Family.UPLOADS),
    media_api(
        "PUT",
        f"{API}/media/uploads/{{upload_id}}/chunks/{{index}}",
        media.put_chunk,
        params={"index": s.ChunkIndex},
        raw_body=s.CHUNK_UPLOAD,
        limit=Family.UPLOADS,
    ),
    media_api(
        "POST", f"{API}/media/uploads/{{upload_id}}/complete", media.complete_upload, status=201, limit=Family.UPLOADS
    ),
    media_api("DELETE", f"{API}/media/uploads/{{upload_id}}", media.abort_upload, limit=Family.UPLOADS),
    # Downloads take a token or a signed URL, so they authenticate in the handler.
    media_api(
        "GET",
        f"{API}/media/download/{{media_id}}",
        media.download,
        query=s.DownloadQuery,
        auth=False,
        raw_responses=s.FILE_DOWNLOAD,
    ),
    media_api(
        "GET",
        f"{API}/media/thumbnail/{{media_id}}",
        media.thumbnail,
        query=s.ThumbnailQuery,
        auth=False,
        raw_responses=s.FILE_DOWNLOAD,
    ),
    media_api("GET", f"{API}/media", media.list_media, query=s.PageQuery),
    media_api("GET", f"{API}/media/{{media_id}}", media.get_media),
    media_api("GET", f"{API}/media/{{media_id}}/url", media.signed_url, query=s.VariantQuery),
    media_api("DELETE", f"{API}/media/{{media_id}}", media.delete_media),
    # stories: the lists come first, as the router tries routes in this order
    stories_api("GET", f"{API}/stories/lists", stories.list_audience_lists),
    stories_api("POST", f"{API}/stories/lists", stories.create_audience_list, status=201),
    stories_api("GET", f"{API}/stories/lists/{{list_id}}", stories.get_audience_list),
    stories_api("PATCH", f"{API}/stories/lists/{{list_id}}", stories.update_audience_list),
    stories_api("DELETE", f"{API}/stories/lists/{{list_id}}", stories.delete_audience_list),
    stories_api("POST", f"{API}/stories/lists/{{list_id}}/members", stories.add_to_audience_list),
    stories_api("DELETE", f"{API}/stories/lists/{{list_id}}/members/{{user_id}}", stories.remove_from_audience_list),
    stories_api("GET", f"{API}/stories", stories.list_stories, query=s.StoryFeedQuery),
    stories_api("POST", f"{API}/stories", stories.post_story, status=201),
    stories_api("GET", f"{API}/stories/{{story_id}}", stories.get_story),
    stories_api("DELETE", f"{API}/stories/{{story_id}}", stories.delete_story),
    stories_api("POST", f"{API}/stories/{{story_id}}/view", stories.view_story),
    stories_api("GET", f"{API}/stories/{{story_id}}/views", stories.story_views, query=s.StoryViewsQuery),
    # sticker packs: named paths before /stickers/{sticker_id}
    stickers_api("GET", f"{API}/stickers/packs", stickers.my_packs),
    stickers_api("POST", f"{API}/stickers/packs", stickers.create_pack, status=201),
    stickers_api("GET", f"{API}/stickers/packs/by-slug/{{slug}}", stickers.pack_by_slug),
    stickers_api("GET", f"{API}/stickers/packs/{{pack_id}}", stickers.get_pack),
    stickers_api("PATCH", f"{API}/stickers/packs/{{pack_id}}", stickers.update_pack),
    stickers_api("POST", f"{API}/stickers/packs/{{pack_id}}/stickers", stickers.add_sticker, status=201),
    stickers_api("DELETE", f"{API}/stickers/packs/{{pack_id}}/stickers/{{sticker_id}}", stickers.remove_sticker),
    stickers_api("POST", f"{API}/stickers/packs/{{pack_id}}/publish", stickers.publish_pack),
    stickers_api("GET", f"{API}/stickers/installed", stickers.installed_packs),
    stickers_api("POST", f"{API}/stickers/installed", stickers.install_pack, status=201),
    stickers_api("PUT", f"{API}/stickers/installed", stickers.reorder_packs),
    stickers_api("DELETE", f"{API}/stickers/installed/{{pack_id}}", stickers.uninstall_pack),
    stickers_api("GET", f"{API}/stickers/{{sticker_id}}", stickers.get_sticker),
    # administration: administrators only, a 404 for anyone else
    admin_api("GET", f"{API}/admin/users", admin.list_users, query=s.AdminUsersQuery),
    admin_api("GET", f"{API}/admin/users/{{user_id}}", admin.get_user),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}", admin.delete_user),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/deactivate", admin.deactivate_user),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/reactivate", admin.reactivate_user),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/2fa/reset", admin.reset_two_factor),
    admin_api("PUT", f"{API}/admin/users/{{user_id}}/admin", admin.set_admin),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}/devices", admin.revoke_devices),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}/devices/{{device_id}}", admin.revoke_device),
    admin_api("GET", f"{API}/admin/invites", admin.list_invites, query=s.RegistrationInvitesQuery),
    admin_api("POST", f"{API}/admin/invites", admin.create_invite, status=201),
    admin_api(
        "DELETE", f"{API}/admin/invites/{{invite}}", admin.revoke_invite, params={"invite": s.RegistrationInviteRef}
    ),
    admin_api("GET", f"{API}/admin/stats", admin.server_stats),
    admin_api("GET", f"{API}/admin/audit", admin.audit_log, query=s.AuditQuery),
    # calls (docs/api.md#calls)
    calls_api("GET", f"{API}/calls/turn", calls.turn_credentials),
    calls_api("POST", f"{API}/calls/{{chat_id}}/token", calls.call_token),
    # push notifications (docs/api.md#push-notifications)
    push_api("POST", f"{API}/push/subscriptions", push.subscribe, status=201),
    push_api("GET", f"{API}/push/subscriptions", push.get_subscription),
    push_api("DELETE", f"{API}/push/subscriptions", push.unsubscribe),
    push_api("GET", f"{API}/push/vapid", push.vapid_key, auth=False),
]


# For the operator's tools, outside the API and its OpenAPI document (docs/operations.md#monitoring).
OPS_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/metrics", get_metrics),
]

# The web client (docs/web.md), outside the API and its OpenAPI document. The page's route catches
# every other path, so it comes last; it answers 404 (problem+json) for what is not a screen.
WEB_ROUTES: list[tuple[str, str, Any]] = [
    ("GET", "/assets/{path:.+}", web_client.asset),
    ("GET", "/sw.js", service_worker.service_worker),  # Web Push's service worker: its scope is "/"
    ("GET", "/{path:(?!api/).*}", web_client.page),
]


def add_routes(app: web.Application) -> None:
    document = encode(openapi(ROUTES, __version__))

    async def get_openapi(call: Call) -> web.Response:
        """GET /api/v1/openapi.json: this API, described in OpenAPI 3.1."""
        return web.Response(body=document, content_type="application/json")

    all_routes = [*ROUTES, Route("GET", f"{API}/openapi.json", get_openapi, auth=False, tag="meta")]
    for route in all_routes:
        path = router_path(route.path)
        if route.raw:
            app.router.add_route(route.method, path, limited_raw(route))
            continue
        handler = endpoint(route)
        app.router.add_route(route.method, path, handler)
        if route.method == "GET":  # monitors and caches probe with HEAD
            app.router.add_route("HEAD", path, handler)
    for method, path, ops_handler in OPS_ROUTES:
        app.router.add_route(method, path, ops_handler)
    app.on_startup.append(web_client.load_web_client)
    for method, path, page_handler in WEB_ROUTES:
        app.router.add_route(method, path, page_handler)
        app.router.add_route("HEAD", path, page_handler)
