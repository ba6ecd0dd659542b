"""The load balancer in front of a local fleet: HAProxy, configured from deploy/lb/haproxy.cfg.

That file is a working configuration of its own (`haproxy -c` accepts it; a test checks) and
the template of the fleet's: `render` keeps every line and rewrites each block between the
`# fleet: servers` and `# fleet: end` markers into one server line per API slot, copied from
the block's first line with the slot's name and address in place of that line's. What the
servers' lines say (health checks, cookies, tracking) is written once, in that file.
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

BEGIN, END = "# fleet: servers", "# fleet: end"
API_BACKEND, LIVE_BACKEND = "be_api", "be_live"
HAPROXY_PATHS = ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy")


class LoadBalancerError(RuntimeError):
    """HAProxy is missing, or refused the configuration."""


@dataclass(frozen=True)
class Slot:
    """One place for an API process behind the balancer: its server name and address."""

    name: str
    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def slots(host: str, ports: list[int]) -> list[Slot]:
    return [Slot(f"api{i}", host, port) for i, port in enumerate(ports, 1)]


def render(template: str, servers: list[Slot]) -> str:
    """The template with each marked block of server lines rewritten for `servers`."""
    out: list[str] = []
    block: list[str] | None = None
    for line in template.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            block = []
            out.append(line)
        elif stripped == END and block is not None:
            if not block:
                raise LoadBalancerError(f"an empty `{BEGIN}` block: it needs one server line "
                                        "to copy")
            out.extend(_server_line(block[0], slot) for slot in servers)
            out.append(line)
            block = None
        elif block is not None:
            if stripped and not stripped.startswith("#"):
                block.append(line)
        else:
            out.append(line)
    if block is not None:
        raise LoadBalancerError(f"`{BEGIN}` without `{END}`")
    return "\n".join(out) + "\n"


def _server_line(pattern: str, slot: Slot) -> str:
    """`server api1 127.0.0.1:8001 cookie api1 track be_api/api1` for another slot."""
    indent = pattern[:len(pattern) - len(pattern.lstrip())]
    words = pattern.split()
    if len(words) < 3 or words[0] != "server":
        raise LoadBalancerError(f"not a server line: {pattern.strip()!r}")
    name, rest = words[1], words[3:]
    rest = [re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", slot.name, word) for word in rest]
    return indent + " ".join(["server", slot.name, slot.address, *rest])


def haproxy() -> str:
    """The haproxy executable (Debian's: `apt-get install haproxy`, or `make /usr/sbin/haproxy`)."""
    found = shutil.which("haproxy") or next(
        (path for path in HAPROXY_PATHS if Path(path).exists()), None)
    if found is None:
        raise LoadBalancerError("haproxy is not installed: `make /usr/sbin/haproxy` (or "
                                "`apt-get install haproxy`)")
    return found


def check(config: Path, env: dict[str, str]) -> None:
    """`haproxy -c`: the configuration must be valid before anything relies on it."""
    done = subprocess.run([haproxy(), "-c", "-q", "-f", str(config)], env=env,  # noqa: S603 - haproxy on our own file
                          capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise LoadBalancerError(f"haproxy refused {config}:\n{done.stdout}{done.stderr}")


def listener_env(host: str, port: int, stats_port: int,
                 admin_socket: Path | None = None) -> dict[str, str]:
    """The environment variables the template's listeners (and runtime API socket) read."""
    env = {"INSTOCK_LB_BIND": f"{host}:{port}", "INSTOCK_LB_STATS_BIND": f"{host}:{stats_port}"}
    if admin_socket is not None:
        env["INSTOCK_LB_ADMIN_SOCKET"] = str(admin_socket)
    return env


# -- the runtime API (`stats socket … level admin`) -------------------------------------------

async def command(socket: Path, line: str) -> str:
    """One command to HAProxy's runtime API; its answer (empty when a setter succeeded)."""
    reader, writer = await asyncio.open_unix_connection(str(socket))
    try:
        writer.write(line.encode() + b"\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # one command: it answers, closes
    finally:
        writer.close()
    return answer.decode().strip()


async def set_weight(socket: Path, backend: str, server: str, weight: int) -> None:
    answer = await command(socket, f"set weight {backend}/{server} {weight}")
    if answer:
        raise LoadBalancerError(f"set weight {backend}/{server} {weight}: {answer}")


async def get_weight(socket: Path, backend: str, server: str) -> int:
    """The server's current weight (HAProxy answers "1 (initial 1)")."""
    answer = await command(socket, f"get weight {backend}/{server}")
    try:
        return int(answer.split()[0])
    except (IndexError, ValueError) as exc:
        raise LoadBalancerError(f"get weight {backend}/{server}: {answer}") from exc


@dataclass(frozen=True)
class ServerStats:
    """One server's line of HAProxy's CSV statistics (the fields this code reads)."""

    status: str  # UP, DOWN, "UP 1/2" (going down), "DOWN 1/2" (coming up), MAINT, no check
    sessions: int  # stot: sessions (requests, with keep-alive: connections) sent to it
    response_ms: int  # rtime: average response time over the last 1024 requests
    total_ms: int  # ttime: average total session time over the same
    queue_ms: int  # qtime
    connect_ms: int  # ctime

    @property
    def up(self) -> bool:
        return self.status == "UP"  # "UP 1/2" is on its way down: not counted as up


def parse_stats(text: str) -> dict[tuple[str, str], ServerStats]:
    """HAProxy's `/stats;csv` by (backend, server)."""
    rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
    found: dict[tuple[str, str], ServerStats] = {}
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND", None):
            continue

        def number(field: str, row: dict[str, str] = row) -> int:
            value = row.get(field) or "0"
            return int(value) if value.isdigit() else 0

        found[(row["pxname"], row["svname"])] = ServerStats(
            row.get("status", ""), number("stot"), number("rtime"), number("ttime"),
            number("qtime"), number("ctime"))
    return found


async def stats(url: str, http: httpx.AsyncClient | None = None
                ) -> dict[tuple[str, str], ServerStats]:
    """The balancer's statistics page as CSV, parsed (`url`: the stats page, …/stats)."""
    if http is None:
        async with httpx.AsyncClient(timeout=5) as own:
            return await stats(url, own)
    answer = await http.get(f"{url};csv")
    answer.raise_for_status()
    return parse_stats(answer.text)


async def api_states(url: str, http: httpx.AsyncClient | None = None) -> dict[str, ServerStats]:
    """The API backend's servers' statistics, by server name."""
    return {server: row for (backend, server), row in (await stats(url, http)).items()
            if backend == API_BACKEND}
