"""The outbound guard (issue 20): which URLs instock calls, decided on the URL and on every
address its host resolves to. No traffic: names are resolved by resolvers the test controls."""

from __future__ import annotations

import pytest

from instock.platform.outbound import OutboundGuard, OutboundRefused, Unresolvable

PUBLIC = "93.184.216.34"


def resolving(answers: dict[str, list[str]]) -> OutboundGuard:
    async def resolver(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host {host}")
        return answers[host]

    return OutboundGuard(resolver=resolver)


@pytest.mark.parametrize(("url", "reason"), [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # the cloud metadata address
    ("http://[fe80::1]/", "link-local"),
    ("http://10.0.0.1/", "private"),
    ("http://192.168.1.20:8080/", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://100.64.0.9/", "private"),  # shared CGNAT space
    ("http://127.0.0.1:8080/", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),  # IPv4-mapped IPv6
    ("http://[::ffff:a9fe:a9fe]/", "link-local"),  # the metadata address, mapped
    ("http://[2002:a00:1::]/", "private"),  # 6to4 around 10.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 around 169.254.169.254
    ("http://[fd00::5]/", "private"),  # unique local
    ("http://0.0.0.0/", "unicast"),
    ("http://224.0.0.251/", "unicast"),
    (f"http://{PUBLIC}:22/", "port 22"),
    (f"http://{PUBLIC}:5432/", "port 5432"),
    ("ftp://files.example/", "http"),
    ("file:///etc/passwd", "http"),
    ("gopher://127.0.0.1:6379/_", "http"),
])
async def test_urls_that_reach_inside_are_refused(url: str, reason: str) -> None:
    with pytest.raises(OutboundRefused, match=reason):
        await OutboundGuard().check(url)


async def test_a_public_address_on_an_allowed_port_passes() -> None:
    for url in (f"http://{PUBLIC}/", f"https://{PUBLIC}:8443/hook", "http://[2606:4700::1]/"):
        target = await OutboundGuard().check(url)
        assert str(target.address) in url


async def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    guard = resolving({"hooks.example": [PUBLIC], "inside.example": ["10.0.0.7"],
                       "mixed.example": [PUBLIC, "169.254.169.254"]})
    target = await guard.check("https://hooks.example/in")
    assert (target.host, str(target.address), target.port) == ("hooks.example", PUBLIC, 443)
    with pytest.raises(OutboundRefused, match=r"inside\.example \(10\.0\.0\.7\) is a private"):
        await guard.check("http://inside.example/")
    # One bad answer among good ones is enough: the next lookup could return it first.
    with pytest.raises(OutboundRefused, match="link-local"):
        await guard.check("http://mixed.example/")
    with pytest.raises(Unresolvable):
        await guard.check("http://nowhere.example/")


async def test_pinned_hosts_resolve_without_dns_and_are_checked_too() -> None:
    guard = OutboundGuard(hosts={"shop.example": PUBLIC, "db.example": "10.1.1.1"})
    assert str((await guard.check("http://shop.example/")).address) == PUBLIC
    with pytest.raises(OutboundRefused, match="private"):
        await guard.check("http://DB.example/")


async def test_loopback_on_any_port_only_when_allowed() -> None:
    allowed = OutboundGuard(allow_loopback=True)
    assert str((await allowed.check("http://127.0.0.1:54321/hook")).address) == "127.0.0.1"
    # Loopback allowed is not private allowed.
    with pytest.raises(OutboundRefused, match="private"):
        await allowed.check("http://10.0.0.1/")
    with pytest.raises(OutboundRefused, match="loopback"):
        await OutboundGuard().check("http://127.0.0.1:54321/hook")
