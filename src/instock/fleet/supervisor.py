"""The local fleet's supervisor: HAProxy, N API processes and M `instock worker all`, started,
watched (a process that dies is started again, and the event logged) and stopped gracefully;
and the rolling restart, one process at a time, with no request lost.

Slots: the balancer knows one more API address than there are API processes. The spare is
DOWN (nothing listens there) until a rolling restart starts a replacement in it; once the
balancer sees the replacement up, the process it replaces is told to stop (SIGTERM: it drains,
platform/drain.py) and its slot becomes the spare. The balancer's configuration never changes,
so no reload is needed.

Every process writes to its own log under `<state dir>/fleet/logs/`; the supervisor writes
its events there too (`fleet.log`) and its state to `<state dir>/fleet/status.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from instock.fleet import TEMPLATE, lb

READY_TIMEOUT = 60.0  # seconds a process may take to answer /readyz (or the balancer to agree)
WORKER_SETTLE = 2.0  # a new worker has built its adapters and joined its consumer groups
RESTART_BACKOFF_MAX = 30.0  # a process that keeps dying is started again at most this often
STABLE_AFTER = 30.0  # a process that lived this long before dying is restarted at once


# PostgreSQL's default max_connections is 100, and every process of a fleet holds up to twice
# its pool (the overflow) plus a LISTEN connection or two: the fleet's share is this many.
FLEET_CONNECTIONS = 80


def pool_size(apis: int, workers: int) -> int:
    """INSTOCK_DB_POOL_SIZE for each process of a fleet (a replacement in the spare slot
    included), so that all of them together stay within FLEET_CONNECTIONS."""
    return max(2, FLEET_CONNECTIONS // (2 * (apis + workers + 1)))


@dataclass(frozen=True)
class Plan:
    apis: int
    workers: int
    host: str
    port: int  # the balancer's
    stats_port: int
    api_ports: list[int]  # apis + 1: the spare slot is where rolling restarts start from
    state_dir: Path  # <INSTOCK_STATE_DIR>/fleet
    env: dict[str, str]  # every process's environment (the INSTOCK_* settings among it)
    api_env: dict[str, str]  # added for the API processes: their worker duties off, …
    executable: str  # the `instock` command
    template: Path = TEMPLATE
    stop_timeout: float = 30.0  # after SIGTERM, before SIGKILL (drain + in-flight work)

    @property
    def lb_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stats_url(self) -> str:
        return f"http://{self.host}:{self.stats_port}/stats"

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    @property
    def admin_socket(self) -> Path:
        """HAProxy's runtime API (weights: `instock fleet canary`)."""
        return self.state_dir / "haproxy.sock"


@dataclass
class Child:
    """One process of the fleet."""

    name: str  # api1…, worker1…, haproxy: also its log file's name
    kind: str  # api, worker, lb
    args: list[str]
    env: dict[str, str]
    log_path: Path
    slot: lb.Slot | None = None  # an API process's place behind the balancer
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0  # time.monotonic()
    restarts: int = 0
    retiring: bool = False  # stopped on purpose: not started again
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:  # the file of its previous life
            self._log.close()
        self._log = self.log_path.open("ab")
        self._log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting\n".encode())
        self._log.flush()
        # Each child in a session of its own: a Ctrl-C at the terminal reaches the supervisor
        # only, which then stops them in order (the balancer last).
        self.process = await asyncio.create_subprocess_exec(
            *self.args, env=self.env, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        self.started = time.monotonic()

    async def stop(self, timeout: float, sig: int = signal.SIGTERM) -> int | None:
        """Ask it to stop (SIGTERM: gracefully) and wait; SIGKILL after `timeout` seconds."""
        self.retiring = True
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
        return process.returncode


class Fleet:
    """The processes of one fleet, and what is done to them (all on one asyncio loop)."""

    def __init__(self, plan: Plan, note: Callable[[str], None]) -> None:
        self.plan = plan
        self.note = note  # the supervisor's events: to the terminal and fleet.log
        self.slots = lb.slots(plan.host, plan.api_ports)
        self.apis: list[Child] = []
        self.workers: list[Child] = []
        self.balancer: Child | None = None
        self.rolling_restarts = 0
        self.state = "starting"
        self._busy = asyncio.Lock()  # a rolling restart and a stop never overlap
        self._numbers = {"api": 0, "worker": 0}
        self.http = httpx.AsyncClient(timeout=5)
        self._pending: set[asyncio.Task[None]] = set()  # restarts waiting out their pause

    # -- the processes -----------------------------------------------------------------

    def _api(self, slot: lb.Slot) -> Child:
        self._numbers["api"] += 1
        return Child(f"api-{slot.port}", "api",
                     [self.plan.executable, "serve", "--host", slot.host, "--port",
                      str(slot.port)], {**self.plan.env, **self.plan.api_env},
                     self.plan.logs / f"api-{slot.port}.log", slot)

    def _worker(self) -> Child:
        self._numbers["worker"] += 1
        number = self._numbers["worker"]
        return Child(f"worker-{number}", "worker", [self.plan.executable, "worker", "all"],
                     dict(self.plan.env), self.plan.logs / f"worker-{number}.log")

    def _haproxy(self, config: Path) -> Child:
        env = {**self.plan.env, **lb.listener_env(self.plan.host, self.plan.port,
                                                  self.plan.stats_port, self.plan.admin_socket)}
        lb.check(config, env)
        return Child("haproxy", "lb", [lb.haproxy(), "-db", "-f", str(config)], env,
                     self.plan.logs / "haproxy.log")

    async def start(self) -> None:
        """API processes and workers at once (their start-up costs overlap), then the
        balancer, once the API processes answer; returns when it sees them up."""
        self.plan.logs.mkdir(parents=True, exist_ok=True)
        config = self.plan.state_dir / "haproxy.cfg"
        config.write_text(lb.render(self.plan.template.read_text(), self.slots))
        self.balancer = self._haproxy(config)  # checked before anything starts
        self.apis = [self._api(slot) for slot in self.slots[:self.plan.apis]]
        self.workers = [self._worker() for _ in range(self.plan.workers)]
        self.write_status()
        for child in [*self.apis, *self.workers]:
            await child.start()
        await asyncio.gather(*(self._answering(api) for api in self.apis))
        await self.balancer.start()
        await asyncio.gather(*(self._in_rotation(api) for api in self.apis))
        self.state = "up"
        self.write_status()

    async def _answering(self, api: Child) -> None:
        """Until the process answers /readyz 200 itself."""
        assert api.slot is not None
        url = f"http://{api.slot.address}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if not api.alive():
                raise RuntimeError(f"{api.name} exited ({api.process and api.process.returncode})"
                                   f" before it was ready; see {api.log_path}")
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{api.name} not ready in {READY_TIMEOUT:g} s; see {api.log_path}")

    async def _in_rotation(self, api: Child) -> None:
        """Until the balancer's health checks have brought the process's slot up."""
        assert api.slot is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.balancer is None or not self.balancer.alive():
                raise RuntimeError(f"HAProxy is not running; see {self.plan.logs / 'haproxy.log'}")
            with contextlib.suppress(httpx.HTTPError, KeyError):
                if (await lb.api_states(self.plan.stats_url, self.http))[api.slot.name].up:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the balancer never saw {api.name} up; see "
                           f"{self.plan.logs / 'haproxy.log'}")

    # -- watching ------------------------------------------------------------------------

    async def watch(self) -> None:
        """Forever: a process that died without being told to is started again (at once
        if it had lived a while, else after a growing pause), and that is logged."""
        while True:
            for child in [*self.apis, *self.workers, *filter(None, [self.balancer])]:
                if child.alive() or child.retiring or child.process is None:
                    continue
                lived = time.monotonic() - child.started
                code = child.process.returncode
                child.restarts += 1
                pause = 0.0 if lived > STABLE_AFTER else min(
                    RESTART_BACKOFF_MAX, 0.5 * 2 ** min(child.restarts, 10))
                self.note(f"{child.name} (pid {child.pid}) exited with {code} after "
                          f"{lived:.1f} s: starting it again"
                          + (f" in {pause:.1f} s" if pause else "") + f"; log: {child.log_path}")
                child.process = None  # not looked at again while it waits
                task = asyncio.create_task(self._again(child, pause))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            await asyncio.sleep(0.2)

    async def _again(self, child: Child, pause: float) -> None:
        await asyncio.sleep(pause)
        if child.retiring or self.state in ("stopping", "stopped"):
            return
        await child.start()
        self.write_status()

    # -- rolling restart -----------------------------------------------------------------

    async def rolling_restart(self) -> None:
        """Each API process in turn: its replacement started in the spare slot, in rotation
        once the balancer sees it up, then the old one drained and stopped (its slot is the
        next spare). Then each worker: the new one started and settled, then the old one
        stopped (it finishes its batch in hand). A failure leaves the old process serving."""
        async with self._busy:
            if self.state == "stopping":
                return
            self.state = "restarting"
            self.write_status()
            started = time.monotonic()
            for old in list(self.apis):
                await self._replace_api(old)
            for old in list(self.workers):
                await self._replace_worker(old)
            self.rolling_restarts += 1
            self.state = "up"
            self.write_status()
            self.note(f"rolling restart {self.rolling_restarts} done in "
                      f"{time.monotonic() - started:.1f} s")

    def _spare(self) -> lb.Slot:
        used = {api.slot for api in self.apis}
        return next(slot for slot in self.slots if slot not in used)

    async def _replace_api(self, old: Child) -> None:
        new = self._api(self._spare())
        self.note(f"rolling restart: {new.name} replaces {old.name}")
        self.apis.append(new)
        await new.start()
        try:
            await self._answering(new)
            await self._in_rotation(new)
        except Exception:
            await new.stop(self.plan.stop_timeout)
            self.apis.remove(new)
            raise
        self.write_status()
        code = await old.stop(self.plan.stop_timeout)  # SIGTERM: it drains first
        self.apis.remove(old)
        self.note(f"rolling restart: {old.name} drained and stopped ({code})")
        self.write_status()

    async def _replace_worker(self, old: Child) -> None:
        new = self._worker()
        self.note(f"rolling restart: {new.name} replaces {old.name}")
        self.workers.append(new)
        await new.start()
        await asyncio.sleep(WORKER_SETTLE)
        if not new.alive():
            self.workers.remove(new)
            raise RuntimeError(f"{new.name} exited as it started; see {new.log_path}")
        code = await old.stop(self.plan.stop_timeout)
        self.workers.remove(old)
        self.note(f"rolling restart: {old.name} stopped ({code})")
        self.write_status()

    # -- stopping ------------------------------------------------------------------------

    async def stop(self) -> None:
        """Every API process and worker told to stop at once (each drains, finishes what it
        holds), the balancer last so that requests in flight through it are answered."""
        self.state = "stopping"
        self.write_status()
        for task in self._pending:
            task.cancel()
        async with self._busy:
            children = [*self.apis, *self.workers]
            await asyncio.gather(*(child.stop(self.plan.stop_timeout) for child in children))
            if self.balancer is not None:
                await self.balancer.stop(10.0, signal.SIGUSR1)  # soft stop
            await self.http.aclose()
        self.state = "stopped"
        self.write_status()

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        def row(child: Child) -> dict[str, object]:
            return {"name": child.name, "kind": child.kind, "pid": child.pid,
                    "alive": child.alive(), "restarts": child.restarts,
                    "slot": child.slot.name if child.slot else None,
                    "address": child.slot.address if child.slot else None,
                    "log": str(child.log_path)}

        children = [*self.apis, *self.workers, *filter(None, [self.balancer])]
        return {"state": self.state, "supervisor_pid": os.getpid(), "lb": self.plan.lb_url,
                "stats": self.plan.stats_url, "logs": str(self.plan.logs),
                "admin_socket": str(self.plan.admin_socket), "apis_planned": self.plan.apis,
                "workers_planned": self.plan.workers,
                "slots": [{"name": s.name, "address": s.address} for s in self.slots],
                "rolling_restarts": self.rolling_restarts,
                "children": [row(child) for child in children]}

    def write_status(self) -> None:
        path = self.plan.state_dir / "status.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.status(), indent=2))
        temporary.replace(path)  # whole, or not at all, for whoever reads it
