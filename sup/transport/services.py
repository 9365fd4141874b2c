"""What the transport layer reaches: the domain services, built once by `build_app`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from sup.config import WebSocketConfig
from sup.domain.accounts import AccountService
from sup.domain.admin import AdminService
from sup.domain.audit import AuditLog
from sup.domain.calls import CallService
from sup.domain.callsignal import CallSignalling
from sup.domain.chats import ChatService
from sup.domain.emails import EmailService
from sup.domain.erasure import AccountErasure
from sup.domain.exports import ExportService
from sup.domain.health import Health
from sup.domain.joining import JoinService
from sup.domain.keydirectory import KeyDirectory
from sup.domain.limits import RequestLimits
from sup.domain.media import MediaService
from sup.domain.messages import MessageService
from sup.domain.presence import PresenceService
from sup.domain.push import PushService
from sup.domain.search import SearchService
from sup.domain.sendrate import SendRate
from sup.domain.stickers import StickerService
from sup.domain.stories import StoryService
from sup.domain.stream import EventStream
from sup.domain.users import UserService


@dataclass(frozen=True)
class Services:
    accounts: AccountService
    users: UserService
    chats: ChatService
    messages: MessageService
    keys: KeyDirectory
    media: MediaService
    stories: StoryService
    stickers: StickerService
    presence: PresenceService
    stream: EventStream
    health: Health
    max_body_bytes: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    ws: WebSocketConfig
    public_url: str
    admin: AdminService
    audit: AuditLog
    erasure: AccountErasure
    exports: ExportService
    calls: CallService
    signalling: CallSignalling
    emails: EmailService
    search: SearchService
    joining: JoinService
    limits: RequestLimits
    send_rate: SendRate  # one budget per device for REST and WebSocket sends
    push: PushService


SERVICES = web.AppKey("services", Services)
