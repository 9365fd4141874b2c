"""What the transport layer reaches: the domain services, built once by `build_app`."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from aiohttp import web

from sup.domain.accounts import AccountService
from sup.domain.users import UserService
from sup.storage.database import Database


@dataclass(frozen=True)
class Services:
    accounts: AccountService
    users: UserService
    db: Database
    max_body_bytes: int
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]


SERVICES = web.AppKey("services", Services)
