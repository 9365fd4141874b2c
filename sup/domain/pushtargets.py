"""Which push endpoints SUP will send requests to: the guard against server-side request forgery.

A push endpoint is a URL a client chooses, and SUP later POSTs to it from inside the operator's
network. Unchecked, a user could point it at http://127.0.0.1:6379/, the cloud's metadata service
(169.254.169.254) or an intranet host. So an endpoint must be https (http only where the operator
allows it), carry no credentials, and resolve only to global unicast addresses, unless its host or
address is one the operator listed in `push.allow_hosts`.

The check runs twice: when a device registers (a clear 422), and again at every connection the
sender opens (its resolver applies `address_allowed` to what DNS answers then), because the name
may resolve elsewhere by the time a push is sent.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from sup.config import PushConfig
from sup.errors import Code, DomainError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ENDPOINT_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # lower-case, without brackets
    port: int
    literal: Address | None  # the host, when it is an IP address


class EndpointRefused(Exception):
    """An endpoint SUP will not send to; the message says why, to a person."""


def _refuse(detail: str) -> DomainError:
    return DomainError(Code.VALIDATION_FAILED, detail, field="endpoint")


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_public(address: Address) -> bool:
    """A global unicast address: not loopback, private, link-local, shared (CGNAT), reserved or multicast."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address.is_global and not address.is_multicast


class EndpointPolicy:
    def __init__(self, *, allow_http: bool = False, allow_hosts: Iterable[str] = ()) -> None:
        self.allow_http = allow_http
        hosts: set[str] = set()
        networks: list[Network] = []
        for entry in allow_hosts:
            entry = entry.strip().lower().strip("[]")
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.rstrip("."))
        self._hosts = frozenset(hosts)
        self._networks = tuple(networks)

    @classmethod
    def from_config(cls, push: PushConfig) -> EndpointPolicy:
        return cls(allow_http=push.allow_http, allow_hosts=push.allow_hosts)

    def parse(self, endpoint: str) -> Target:
        """The endpoint's scheme, host and port, or a DomainError (422) saying what is wrong with it."""
        if len(endpoint) > MAX_ENDPOINT_LENGTH:
            raise _refuse(f"The endpoint is longer than {MAX_ENDPOINT_LENGTH} characters.")
        try:
            parts = urlsplit(endpoint)
            port = parts.port
        except ValueError as exc:
            raise _refuse(f"The endpoint is not a valid URL: {exc}.") from None
        scheme = parts.scheme.lower()
        if scheme not in ("https", "http"):
            raise _refuse("The endpoint must be an https:// URL.")
        if scheme == "http" and not self.allow_http:
            raise _refuse("The endpoint must be an https:// URL (this server does not send pushes over plain http).")
        if parts.username is not None or parts.password is not None:
            raise _refuse("The endpoint must not carry a user name or password.")
        host = (parts.hostname or "").rstrip(".")
        if not host:
            raise _refuse("The endpoint has no host.")
        if any(ch.isspace() for ch in endpoint) or parts.fragment:
            raise _refuse("The endpoint must not contain spaces or a #fragment.")
        return Target(scheme, host, port or (443 if scheme == "https" else 80), _address(host))

    def address_allowed(self, host: str, address: Address) -> bool:
        """May SUP connect to `address`, found for `host`? Public addresses always; others only when listed."""
        if is_public(address):
            return True
        if host.lower().rstrip(".") in self._hosts:
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def check_addresses(self, host: str, addresses: Iterable[Address]) -> None:
        """Raise EndpointRefused unless there is at least one address and every one is allowed."""
        found = list(addresses)
        if not found:
            raise EndpointRefused(f"{host} resolves to no address")
        for address in found:
            if not self.address_allowed(host, address):
                raise EndpointRefused(
                    f"{host} resolves to {address}, a loopback, private, link-local or multicast address"
                )

    async def check(self, endpoint: str) -> Target:
        """Parse the endpoint and resolve its host now: a DomainError (422) if SUP would not send there."""
        target = self.parse(endpoint)
        try:
            addresses = [target.literal] if target.literal is not None else await resolve(target.host, target.port)
            self.check_addresses(target.host, addresses)
        except EndpointRefused as exc:
            raise _refuse(f"The endpoint is refused: {exc}.") from None
        except (OSError, TimeoutError):
            raise _refuse(f"The endpoint's host {target.host} does not resolve.") from None
        return target


async def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to (A and AAAA), within RESOLVE_TIMEOUT."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), RESOLVE_TIMEOUT
    )
    found: list[Address] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = _address(str(sockaddr[0]).split("%", 1)[0])
        if address is not None and address not in found:
            found.append(address)
    return found
