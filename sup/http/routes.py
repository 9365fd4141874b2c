"""Every HTTP route of SUP, in one table."""

from __future__ import annotations

from functools import partial
from typing import Any

from aiohttp import web

from sup import __version__
from sup.domain.accounts import Device, User
from sup.domain.admin import (
    AdminUser,
    AdminUserDetail,
    AdminUserPage,
    NewRegistrationInvite,
    RegistrationInvitePage,
    ServerStats,
)
from sup.domain.audit import AuditPage
from sup.domain.chats import Chat, ChatPage, MemberPage, Role
from sup.domain.exports import AccountExport, AccountExports
from sup.domain.joining import ChatInvite, InvitePage, InvitePreview, JoinRequestPage, JoinResult
from sup.domain.keydirectory import Bundle, DeviceKeys, PrekeyStatus
from sup.domain.limits import Family
from sup.domain.media import Media, MediaPage, UploadSession
from sup.domain.messages import MessagePage
from sup.domain.presence import PresenceStatus
from sup.domain.push import Subscription
from sup.domain.search import ChatResults, MessageResults, UserResults
from sup.domain.stickers import Sticker, StickerPack, StickerPacks
from sup.domain.stories import AudienceListDetail, Story, StoryFeed, StoryViewPage
from sup.domain.timeline import Message
from sup.domain.users import BlockedUser, Contact
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
    health_api("GET", "/health", health.health, response=s.HealthStatus, auth=False),
    health_api("GET", "/health/ready", health.ready, response=s.HealthStatus, auth=False),
    # The real-time gateway authenticates with its first frame (docs/protocol.md).
    Route("GET", f"{API}/ws", websocket, auth=False, tag="realtime", raw=True),
    # auth
    auth_api(
        "POST",
        f"{API}/auth/register",
        auth.register,
        body=s.RegisterRequest,
        response=s.SessionResponse,
        status=201,
        auth=False,
    ),
    auth_api("POST", f"{API}/auth/login", auth.login, body=s.LoginRequest, response=s.SessionResponse, auth=False),
    auth_api(
        "POST", f"{API}/auth/refresh", auth.refresh, body=s.RefreshRequest, response=s.SessionResponse, auth=False
    ),
    auth_api("POST", f"{API}/auth/logout", auth.logout),
    auth_api("POST", f"{API}/auth/password", auth.change_password, body=s.PasswordChangeRequest),
    auth_api("GET", f"{API}/auth/2fa", auth.get_2fa, response=s.TwoFactorStatus),
    auth_api(
        "POST", f"{API}/auth/2fa/enable", auth.enable_2fa, body=s.TotpEnableRequest, response=s.TotpEnableResponse
    ),
    auth_api(
        "POST", f"{API}/auth/2fa/verify", auth.verify_2fa, body=s.TotpVerifyRequest, response=s.RecoveryCodesResponse
    ),
    auth_api("POST", f"{API}/auth/2fa/disable", auth.disable_2fa, body=s.TotpDisableRequest),
    auth_api(
        "POST",
        f"{API}/auth/2fa/recovery-codes",
        auth.regenerate_recovery_codes,
        body=s.TotpVerifyRequest,
        response=s.RecoveryCodesResponse,
    ),
    # my account as a whole
    account_api("POST", f"{API}/account/delete", account.delete_account, body=s.AccountDelete),
    account_api("POST", f"{API}/account/exports", account.request_export, response=AccountExport, status=202),
    account_api("GET", f"{API}/account/exports", account.list_exports, response=AccountExports),
    account_api("GET", f"{API}/account/exports/{{export_id}}", account.get_export, response=AccountExport),
    account_api(
        "GET", f"{API}/account/exports/{{export_id}}/download", account.download_export, raw_responses=s.FILE_DOWNLOAD
    ),
    # email: a verified address, password reset (docs/api.md#email-and-password-reset)
    auth_api("GET", f"{API}/auth/email", email.get_email, response=s.EmailStatusResponse),
    auth_api("PUT", f"{API}/auth/email", email.set_email, body=s.EmailSet, response=s.EmailStatusResponse),
    auth_api("POST", f"{API}/auth/email/remove", email.remove_email, body=s.EmailRemove),
    auth_api("POST", f"{API}/auth/verify", email.verify_email, body=s.EmailVerify, response=s.EmailStatusResponse),
    auth_api(
        "POST", f"{API}/auth/password-reset", email.request_password_reset, body=s.PasswordResetRequest, auth=False
    ),
    auth_api(
        "POST",
        f"{API}/auth/password-reset/confirm",
        email.confirm_password_reset,
        body=s.PasswordResetConfirm,
        auth=False,
    ),
    # devices
    devices_api("GET", f"{API}/devices", devices.list_devices, response=s.DeviceList),
    devices_api("PATCH", f"{API}/devices/{{device_id}}", devices.rename_device, body=s.DeviceRename, response=Device),
    devices_api("DELETE", f"{API}/devices/{{device_id}}", devices.revoke_device),
    # users
    users_api("GET", f"{API}/users/by-username/{{username}}", users.get_user_by_username, response=User),
    users_api("GET", f"{API}/users/{{user_id}}", users.get_user, response=User),
    users_api("PATCH", f"{API}/users/{{user_id}}", users.update_user, body=s.ProfileUpdate, response=User),
    users_api(
        "GET", f"{API}/users/{{user_id}}/contacts", users.list_contacts, query=s.PageQuery, response=s.ContactPage
    ),
    users_api(
        "POST", f"{API}/users/{{user_id}}/contacts", users.add_contact, body=s.UserRef, response=Contact, status=201
    ),
    users_api("DELETE", f"{API}/users/{{user_id}}/contacts/{{contact_id}}", users.remove_contact),
    users_api("GET", f"{API}/users/{{user_id}}/blocks", users.list_blocked, query=s.PageQuery, response=s.BlockedPage),
    users_api(
        "POST", f"{API}/users/{{user_id}}/block", users.block_user, body=s.UserRef, response=BlockedUser, status=201
    ),
    users_api("DELETE", f"{API}/users/{{user_id}}/block/{{blocked_id}}", users.unblock_user),
    users_api("GET", f"{API}/users/{{user_id}}/presence", users.get_presence, response=PresenceStatus),
    users_api("PUT", f"{API}/users/{{user_id}}/presence", users.set_presence_visibility, body=s.PresenceVisibility),
    # chats
    chats_api("GET", f"{API}/chats", chats.list_chats, query=s.ChatListQuery, response=ChatPage),
    chats_api("POST", f"{API}/chats", chats.create_chat, body=s.ChatCreate, response=Chat, status=201, also=(200,)),
    chats_api("GET", f"{API}/chats/{{chat_id}}", chats.get_chat, response=Chat),
    chats_api("PATCH", f"{API}/chats/{{chat_id}}", chats.update_chat, body=s.ChatUpdate, response=Chat),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}", chats.delete_chat),
    chats_api("POST", f"{API}/chats/{{chat_id}}/leave", chats.leave_chat),
    chats_api("GET", f"{API}/chats/{{chat_id}}/members", chats.list_members, query=s.PageQuery, response=MemberPage),
    chats_api(
        "POST", f"{API}/chats/{{chat_id}}/members", chats.add_members, body=s.MembersAdd, response=s.MembersAdded
    ),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/members/{{user_id}}", chats.remove_member),
    chats_api("PATCH", f"{API}/chats/{{chat_id}}/members/{{user_id}}", chats.set_member_role, body=s.MemberRole),
    chats_api("GET", f"{API}/chats/{{chat_id}}/roles", chats.list_roles, response=s.RoleList),
    chats_api(
        "POST", f"{API}/chats/{{chat_id}}/roles", chats.create_role, body=s.RoleCreate, response=Role, status=201
    ),
    chats_api(
        "PATCH", f"{API}/chats/{{chat_id}}/roles/{{role_id}}", chats.update_role, body=s.RoleUpdate, response=Role
    ),
    chats_api("GET", f"{API}/chats/{{chat_id}}/pins", chats.list_pins, response=s.PinList),
    chats_api("POST", f"{API}/chats/{{chat_id}}/typing", chats.typing, body=s.TypingRequest),
    # joining: public chats, invite links, join requests (codes travel in bodies, never in URLs)
    chats_api(
        "POST", f"{API}/chats/{{chat_id}}/join", joining.join_chat, response=JoinResult, status=201, limit=Family.JOINS
    ),
    chats_api(
        "POST",
        f"{API}/chats/{{chat_id}}/invites",
        joining.create_invite,
        body=s.InviteCreate,
        response=ChatInvite,
        status=201,
    ),
    chats_api("GET", f"{API}/chats/{{chat_id}}/invites", joining.list_invites, query=s.PageQuery, response=InvitePage),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/invites/{{invite_id}}", joining.revoke_invite),
    chats_api(
        "GET",
        f"{API}/chats/{{chat_id}}/join-requests",
        joining.list_join_requests,
        query=s.JoinRequestQuery,
        response=JoinRequestPage,
    ),
    chats_api("POST", f"{API}/chats/{{chat_id}}/join-requests/{{user_id}}/approve", joining.approve_join_request),
    chats_api("DELETE", f"{API}/chats/{{chat_id}}/join-requests/{{user_id}}", joining.delete_join_request),
    chats_api(
        "POST",
        f"{API}/chat-invites/preview",
        joining.preview_invite,
        body=s.InviteCode,
        response=InvitePreview,
        limit=Family.JOINS,
    ),
    chats_api(
        "POST",
        f"{API}/chat-invites/join",
        joining.join_by_invite,
        body=s.InviteCode,
        response=JoinResult,
        status=201,
        limit=Family.JOINS,
    ),
    # messages
    messages_api(
        "POST",
        f"{API}/messages",
        messages.send_message,
        body=s.MessageSend,
        response=Message,
        status=201,
        also=(200,),
        limit=Family.SENDS,
    ),
    messages_api(
        "GET", f"{API}/messages/chat/{{chat_id}}", messages.history, query=s.HistoryQuery, response=MessagePage
    ),
    messages_api(
        "POST", f"{API}/messages/chat/{{chat_id}}/read", messages.mark_read, body=s.ReadMarker, response=s.ReadState
    ),
    messages_api("GET", f"{API}/messages/{{message_id}}", messages.get_message, response=Message),
    messages_api(
        "PATCH", f"{API}/messages/{{message_id}}", messages.edit_message, body=s.MessageEdit, response=Message
    ),
    messages_api("DELETE", f"{API}/messages/{{message_id}}", messages.delete_message, query=s.DeleteQuery),
    messages_api(
        "POST",
        f"{API}/messages/{{message_id}}/reactions",
        messages.add_reaction,
        body=s.ReactionBody,
        response=s.ReactionList,
    ),
    messages_api(
        "DELETE",
        f"{API}/messages/{{message_id}}/reactions",
        messages.remove_reaction,
        query=s.ReactionQuery,
        response=s.ReactionList,
    ),
    messages_api(
        "POST",
        f"{API}/messages/{{message_id}}/forward",
        messages.forward_message,
        body=s.Forward,
        response=Message,
        status=201,
        also=(200,),
        limit=Family.SENDS,
    ),
    messages_api("POST", f"{API}/messages/{{message_id}}/pin", messages.pin_message),
    messages_api("DELETE", f"{API}/messages/{{message_id}}/pin", messages.unpin_message),
    # search
    search_api("GET", f"{API}/search/users", search.search_users, query=s.NameSearchQuery, response=UserResults),
    search_api("GET", f"{API}/search/chats", search.search_chats, query=s.NameSearchQuery, response=ChatResults),
    search_api(
        "GET", f"{API}/search/messages", search.search_messages, query=s.MessageSearchQuery, response=MessageResults
    ),
    # E2E key directory
    crypto_api("POST", f"{API}/crypto/keys", crypto.publish_keys, body=s.KeysPublish, response=s.PrekeyCount),
    crypto_api(
        "GET",
        f"{API}/crypto/keys/{{user_id}}/all",
        crypto.get_all_keys,
        response=s.DeviceKeysList,
        limit=Family.PREKEY_FETCHES,
    ),
    crypto_api(
        "GET",
        f"{API}/crypto/keys/{{user_id}}/{{device_id}}",
        crypto.get_keys,
        response=DeviceKeys,
        limit=Family.PREKEY_FETCHES,
    ),
    crypto_api("GET", f"{API}/crypto/prekeys", crypto.prekey_status, response=PrekeyStatus),
    crypto_api("POST", f"{API}/crypto/prekeys", crypto.upload_prekeys, body=s.PrekeysUpload, response=s.PrekeyCount),
    crypto_api(
        "GET",
        f"{API}/crypto/prekeys/{{user_id}}/all",
        crypto.get_all_bundles,
        response=s.BundleList,
        limit=Family.PREKEY_FETCHES,
    ),
    crypto_api(
        "GET",
        f"{API}/crypto/prekeys/{{user_id}}/{{device_id}}",
        crypto.get_bundle,
        response=Bundle,
        limit=Family.PREKEY_FETCHES,
    ),
    crypto_api("POST", f"{API}/crypto/sender-keys/{{chat_id}}", crypto.distribute_sender_key, body=s.SenderKeyPost),
    crypto_api("GET", f"{API}/crypto/sender-keys/{{chat_id}}", crypto.my_sender_keys, response=s.SenderKeyList),
    # media
    media_api(
        "POST",
        f"{API}/media/upload",
        media.upload,
        query=s.MediaUploadQuery,
        response=Media,
        status=201,
        raw_body=s.FILE_UPLOAD,
        limit=Family.UPLOADS,
    ),
    media_api(
        "POST",
        f"{API}/media/uploads",
        media.start_upload,
        body=s.UploadStart,
        response=UploadSession,
        status=201,
        limit=Family.UPLOADS,
    ),
    media_api(
        "GET", f"{API}/media/uploads/{{upload_id}}", media.upload_status, response=UploadSession, limit=Family.UPLOADS
    ),
    media_api(
        "PUT",
        f"{API}/media/uploads/{{upload_id}}/chunks/{{index}}",
        media.put_chunk,
        response=UploadSession,
        params={"index": s.ChunkIndex},
        raw_body=s.CHUNK_UPLOAD,
        limit=Family.UPLOADS,
    ),
    media_api(
        "POST",
        f"{API}/media/uploads/{{upload_id}}/complete",
        media.complete_upload,
        response=Media,
        status=201,
        limit=Family.UPLOADS,
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
    media_api("GET", f"{API}/media", media.list_media, query=s.PageQuery, response=MediaPage),
    media_api("GET", f"{API}/media/{{media_id}}", media.get_media, response=Media),
    media_api("GET", f"{API}/media/{{media_id}}/url", media.signed_url, query=s.VariantQuery, response=s.SignedUrl),
    media_api("DELETE", f"{API}/media/{{media_id}}", media.delete_media),
    # stories: the lists come first, as the router tries routes in this order
    stories_api("GET", f"{API}/stories/lists", stories.list_audience_lists, response=s.AudienceLists),
    stories_api(
        "POST",
        f"{API}/stories/lists",
        stories.create_audience_list,
        body=s.AudienceListCreate,
        response=AudienceListDetail,
        status=201,
    ),
    stories_api("GET", f"{API}/stories/lists/{{list_id}}", stories.get_audience_list, response=AudienceListDetail),
    stories_api(
        "PATCH",
        f"{API}/stories/lists/{{list_id}}",
        stories.update_audience_list,
        body=s.AudienceListUpdate,
        response=AudienceListDetail,
    ),
    stories_api("DELETE", f"{API}/stories/lists/{{list_id}}", stories.delete_audience_list),
    stories_api(
        "POST",
        f"{API}/stories/lists/{{list_id}}/members",
        stories.add_to_audience_list,
        body=s.UserIds,
        response=AudienceListDetail,
    ),
    stories_api("DELETE", f"{API}/stories/lists/{{list_id}}/members/{{user_id}}", stories.remove_from_audience_list),
    stories_api("GET", f"{API}/stories", stories.list_stories, query=s.StoryFeedQuery, response=StoryFeed),
    stories_api("POST", f"{API}/stories", stories.post_story, body=s.StoryPost, response=Story, status=201),
    stories_api("GET", f"{API}/stories/{{story_id}}", stories.get_story, response=Story),
    stories_api("DELETE", f"{API}/stories/{{story_id}}", stories.delete_story),
    stories_api("POST", f"{API}/stories/{{story_id}}/view", stories.view_story),
    stories_api(
        "GET", f"{API}/stories/{{story_id}}/views", stories.story_views, query=s.StoryViewsQuery, response=StoryViewPage
    ),
    # sticker packs: named paths before /stickers/{sticker_id}
    stickers_api("GET", f"{API}/stickers/packs", stickers.my_packs, response=StickerPacks),
    stickers_api(
        "POST",
        f"{API}/stickers/packs",
        stickers.create_pack,
        body=s.StickerPackCreate,
        response=StickerPack,
        status=201,
    ),
    stickers_api("GET", f"{API}/stickers/packs/by-slug/{{slug}}", stickers.pack_by_slug, response=StickerPack),
    stickers_api("GET", f"{API}/stickers/packs/{{pack_id}}", stickers.get_pack, response=StickerPack),
    stickers_api(
        "PATCH",
        f"{API}/stickers/packs/{{pack_id}}",
        stickers.update_pack,
        body=s.StickerPackUpdate,
        response=StickerPack,
    ),
    stickers_api(
        "POST",
        f"{API}/stickers/packs/{{pack_id}}/stickers",
        stickers.add_sticker,
        body=s.StickerAdd,
        response=Sticker,
        status=201,
    ),
    stickers_api("DELETE", f"{API}/stickers/packs/{{pack_id}}/stickers/{{sticker_id}}", stickers.remove_sticker),
    stickers_api("POST", f"{API}/stickers/packs/{{pack_id}}/publish", stickers.publish_pack, response=StickerPack),
    stickers_api("GET", f"{API}/stickers/installed", stickers.installed_packs, response=StickerPacks),
    stickers_api(
        "POST", f"{API}/stickers/installed", stickers.install_pack, body=s.PackRef, response=StickerPacks, status=201
    ),
    stickers_api("PUT", f"{API}/stickers/installed", stickers.reorder_packs, body=s.PackOrder, response=StickerPacks),
    stickers_api("DELETE", f"{API}/stickers/installed/{{pack_id}}", stickers.uninstall_pack),
    stickers_api("GET", f"{API}/stickers/{{sticker_id}}", stickers.get_sticker, response=Sticker),
    # administration: administrators only, a 404 for anyone else
    admin_api("GET", f"{API}/admin/users", admin.list_users, query=s.AdminUsersQuery, response=AdminUserPage),
    admin_api("GET", f"{API}/admin/users/{{user_id}}", admin.get_user, response=AdminUserDetail),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}", admin.delete_user),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/deactivate", admin.deactivate_user, response=AdminUser),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/reactivate", admin.reactivate_user, response=AdminUser),
    admin_api("POST", f"{API}/admin/users/{{user_id}}/2fa/reset", admin.reset_two_factor),
    admin_api("PUT", f"{API}/admin/users/{{user_id}}/admin", admin.set_admin, body=s.AdminRole, response=AdminUser),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}/devices", admin.revoke_devices, response=s.RevokedDevices),
    admin_api("DELETE", f"{API}/admin/users/{{user_id}}/devices/{{device_id}}", admin.revoke_device),
    admin_api(
        "GET",
        f"{API}/admin/invites",
        admin.list_invites,
        query=s.RegistrationInvitesQuery,
        response=RegistrationInvitePage,
    ),
    admin_api(
        "POST",
        f"{API}/admin/invites",
        admin.create_invite,
        body=s.RegistrationInviteCreate,
        response=NewRegistrationInvite,
        status=201,
    ),
    admin_api(
        "DELETE", f"{API}/admin/invites/{{invite}}", admin.revoke_invite, params={"invite": s.RegistrationInviteRef}
    ),
    admin_api("GET", f"{API}/admin/stats", admin.server_stats, response=ServerStats),
    admin_api("GET", f"{API}/admin/audit", admin.audit_log, query=s.AuditQuery, response=AuditPage),
    # calls (docs/api.md#calls)
    calls_api("GET", f"{API}/calls/turn", calls.turn_credentials, response=s.TurnCredentialsResponse),
    calls_api("POST", f"{API}/calls/{{chat_id}}/token", calls.call_token, response=s.CallTokenResponse),
    # push notifications (docs/api.md#push-notifications)
    push_api(
        "POST",
        f"{API}/push/subscriptions",
        push.subscribe,
        body=s.PushSubscriptionRequest,
        response=Subscription,
        status=201,
    ),
    push_api("GET", f"{API}/push/subscriptions", push.get_subscription, response=Subscription),
    push_api("DELETE", f"{API}/push/subscriptions", push.unsubscribe),
    push_api("GET", f"{API}/push/vapid", push.vapid_key, response=s.VapidKeyResponse, auth=False),
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
