"""The load balancer's configuration (deploy/lb/haproxy.cfg): HAProxy accepts it as it is and
as the fleet renders it, and it says what the fleet relies on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from instock.fleet import TEMPLATE, lb
from tests.support import INSTOCK, instock_env


def test_haproxy_accepts_the_configuration_in_the_repository() -> None:
    lb.check(TEMPLATE, {})  # `haproxy -c -f deploy/lb/haproxy.cfg`, listeners at their defaults


def test_haproxy_accepts_the_configuration_the_fleet_renders(tmp_path: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(lb.render(TEMPLATE.read_text(), lb.slots("127.0.0.1", [9101, 9102])))
    lb.check(config, lb.listener_env("127.0.0.1", 9100, 9199))
    servers = [line.split() for line in config.read_text().splitlines()
               if line.strip().startswith("server ")]
    assert servers == [
        ["server", "api1", "127.0.0.1:9101"], ["server", "api2", "127.0.0.1:9102"],
        ["server", "api1", "127.0.0.1:9101", "cookie", "api1", "track", "be_api/api1"],
        ["server", "api2", "127.0.0.1:9102", "cookie", "api2", "track", "be_api/api2"]]


def test_the_file_is_the_default_fleet_rendered() -> None:
    """The repository's file is exactly what the fleet renders for its default layout (three
    API processes and the spare on 8001-8004): it never drifts from what runs."""
    text = TEMPLATE.read_text()
    assert lb.render(text, lb.slots("127.0.0.1", [8001, 8002, 8003, 8004])) == text


def test_what_the_fleet_relies_on_is_said() -> None:
    text = " ".join(TEMPLATE.read_text().split())
    for rule in ("http-check send meth GET uri /readyz", "inter 500ms", "fall 2 rise 2",
                 "option redispatch", "retry-on conn-failure empty-response",
                 "http-request disable-l7-retry if unsafe_method !idempotency_key",
                 "acl unsafe_method method POST PATCH",
                 "cookie INSTOCK_SERVER insert indirect nocache",
                 "http-request set-header X-Forwarded-For %[src]", "timeout tunnel 1h"):
        assert rule in text, rule


def test_a_refused_configuration_says_why(tmp_path: Path) -> None:
    broken = tmp_path / "broken.cfg"
    broken.write_text("frontend x\n    bind :notaport\n")
    with pytest.raises(lb.LoadBalancerError, match="haproxy refused"):
        lb.check(broken, {})


def test_a_fleet_on_the_in_process_bus_is_refused(tmp_path: Path) -> None:
    """`instock fleet up` on memory:// would start processes that never hear each other."""
    env = instock_env(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}", tmp_path,
                      INSTOCK_BUS_URL="memory://")
    done = subprocess.run([INSTOCK, "fleet", "up"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert "a fleet needs a shared bus" in " ".join(done.stderr.split())
