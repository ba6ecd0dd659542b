"""Outbound calls cannot reach inside: the guard on URLs other people give us.

A webhook subscriber's URL and a marketplace's base URL are typed in by someone outside the
house. Without a guard, `http://169.254.169.254/…` (the cloud's metadata service) or
`http://10.0.0.7:5432/` would have instock fetch or poke what only instock can reach. So, on
save and again on every call:
- only http and https, and only the allowed ports;
- the host is resolved once, here, and *every* address it resolves to must be public: not
  private, loopback, link-local (169.254.0.0/16, fe80::/10), shared CGNAT space
  (100.64.0.0/10), multicast, reserved or unspecified, and an IPv6 address that carries an IPv4
  one (IPv4-mapped, 6to4, NAT64) is judged by the IPv4 address inside;
- the connection then goes to the address that was checked, not to a second lookup (which a
  rebinding DNS server could answer differently): `PinnedTransport` rewrites the request to the
  address, keeping the Host header and the TLS server name of the original;
- redirects are never followed (the clients are made with `follow_redirects=False`).

`allow_loopback` lets 127.0.0.0/8 and ::1 through, on any port, for local development and the
tests; `hosts` pins names to addresses (like /etc/hosts or curl's --resolve), which is also how
the tests give a name a private address without a DNS server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from instock.platform.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = frozenset({80, 443, 8080, 8443})
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class OutboundRefused(Exception):
    """A URL instock will not call; the message says why."""


class Unresolvable(OutboundRefused):
    """The host has no address now: nothing can be called, and nothing inside reached."""


@dataclass(frozen=True)
class Target:
    """Where a checked URL may be called: the address it resolved to, for its host."""

    scheme: str
    host: str
    port: int
    address: IPAddress


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class OutboundGuard:
    allow_loopback: bool = False
    ports: frozenset[int] = DEFAULT_PORTS
    hosts: Mapping[str, str] = field(default_factory=dict)
    resolver: Resolver = system_resolver

    async def check(self, url: str) -> Target:
        """The URL's target, checked. Raises OutboundRefused saying why not."""
        scheme, host, port = _parts(url)
        literal = _address(host)
        if literal is not None:
            addresses = [literal]
        elif host.lower() in self.hosts:
            addresses = [_required_address(self.hosts[host.lower()])]
        else:
            try:
                found = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise Unresolvable(f"{host} does not resolve: {exc}") from exc
            addresses = [_required_address(a.split("%", 1)[0]) for a in found]
            if not addresses:
                raise Unresolvable(f"{host} does not resolve")
        for address in addresses:  # one bad answer is enough: the next lookup may pick it
            self._check_address(host, address, port)
        # IPv4 first: a name such as localhost resolves to both, and services listening on
        # 127.0.0.1 alone are common.
        return Target(scheme, host, port, min(addresses, key=lambda a: a.version))

    def _check_address(self, host: str, address: IPAddress, port: int) -> None:
        inner = _embedded_ipv4(address) or address
        named = host if str(inner) == host.strip("[]") else f"{host} ({inner})"
        if inner.is_loopback:
            if self.allow_loopback:
                return
            raise OutboundRefused(f"{named} is a loopback address")
        if port not in self.ports:
            allowed = ", ".join(str(p) for p in sorted(self.ports))
            raise OutboundRefused(f"port {port} is not allowed (allowed: {allowed})")
        if inner.is_link_local:
            raise OutboundRefused(f"{named} is a link-local address (cloud metadata lives "
                                  "there)")
        if inner.is_multicast or inner.is_unspecified or inner.is_reserved:
            raise OutboundRefused(f"{named} is not a unicast address")
        if not inner.is_global:  # private, CGNAT, documentation, benchmarking…
            raise OutboundRefused(f"{named} is a private or non-public address")


def _parts(url: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise OutboundRefused(f"not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise OutboundRefused("only http:// and https:// URLs are called")
    if not parts.hostname:
        raise OutboundRefused("the URL names no host")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _required_address(value: str) -> IPAddress:
    found = _address(value)
    if found is None:
        raise OutboundRefused(f"{value!r} is not an IP address")
    return found


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (IPv4-mapped, 6to4, NAT64), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


async def require_callable(guard: OutboundGuard, url: str, field_name: str) -> None:
    """On save: a 422 naming `field_name` with the guard's reason if the URL is refused. A
    name that does not resolve yet is let through (its DNS may come later): every call checks
    it again, and a name without an address reaches nothing."""
    try:
        await guard.check(url)
    except Unresolvable:
        return
    except OutboundRefused as exc:
        raise ValidationFailed(field_name, str(exc)) from exc


class PinnedTransport(httpx.AsyncHTTPTransport):
    """Checks each request's URL with the guard and sends it to the address that passed,
    keeping the Host header and (for https) the TLS server name of the URL's host."""

    def __init__(self, guard: OutboundGuard, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.guard = guard

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            target = await self.guard.check(str(request.url))
        except OutboundRefused as exc:
            raise RefusedRequest(str(exc), request=request) from exc
        request.url = request.url.copy_with(host=str(target.address))  # httpx brackets IPv6
        if target.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": target.host}
        return await super().handle_async_request(request)


class RefusedRequest(httpx.RequestError):
    """A request the guard refused: it was never sent."""
