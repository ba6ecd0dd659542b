"""`instock fleet canary`: a release tried on a share of a running fleet's traffic, rolled back
by itself when it misbehaves.

The canary is one API process of the new release - `--release DIR`, the `src` directory of a
checkout at that release, put first on its PYTHONPATH (the installed code otherwise), with
`--env NAME=VALUE` changes - started in the fleet's spare slot at weight 0. Step by step
(`--steps 10,25,50`: percent of the API traffic, each held `--step-seconds`), HAProxy's runtime
API weighs the servers so that the canary gets that share. Every `--every` seconds the script
reads /metrics of the canary and of every other API process:
- the canary's error rate: its 5xx answers over its requests since it started serving (probes,
  /metrics and live streams left out, as in the alert rules). Above `--max-error-rate` once it
  has served `--min-requests`: rolled back.
- oversold units: instock_oversold_units, which every process serving inventory samples from
  the database. Above `--max-oversold` in any process: rolled back. Whoever wrote it, the fleet
  is no longer sound with the canary in it, and the canary is what changed.
A canary that dies, never becomes ready, or serves too few requests to judge is rolled back too.

Rolling back, and tidying up after a pass alike: the canary's weight 0 at once (no new request
reaches it), the other servers' weights as they were, then the canary stopped gracefully (it
finishes what it holds). A pass means the release may go to every process: the fleet's rolling
restart (`instock fleet restart`) once its checkout runs the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from instock.fleet import lb

REQUESTS = "instock_http_request_duration_seconds"
OVERSOLD = "instock_oversold_units"
NOT_COUNTED = re.compile(r"^/(livez|readyz|metrics)$|^/v1/stream/")
SCALE = 240  # the larger of two weights (HAProxy's run from 0 to 256)


# -- deciding (pure) -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Reading:
    """What one process's /metrics says, counted as the canary counts."""

    requests: float = 0.0  # answered, probes and streams left out
    errors: float = 0.0  # of those, 5xx
    oversold: float = 0.0  # instock_oversold_units


def read_metrics(text: str) -> Reading:
    requests = errors = oversold = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS:
            for sample in family.samples:
                if not sample.name.endswith("_count") or NOT_COUNTED.search(
                        sample.labels.get("route", "")):
                    continue
                requests += sample.value
                if sample.labels.get("status", "").startswith("5"):
                    errors += sample.value
        elif family.name == OVERSOLD:
            oversold = max([oversold, *(sample.value for sample in family.samples)])
    return Reading(requests, errors, oversold)


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float = 0.01
    min_requests: int = 20
    max_oversold: float = 0.0


def verdict(start: Reading, now: Reading, oversold: float, limits: Thresholds) -> str | None:
    """Why the canary must go (None: it may stay). `start` and `now` are the canary's own
    readings; `oversold` the highest any process reports."""
    if oversold > limits.max_oversold:
        return (f"{oversold:g} units oversold ({OVERSOLD} above {limits.max_oversold:g} in "
                "the fleet)")
    served, errors = now.requests - start.requests, now.errors - start.errors
    if served >= limits.min_requests and errors / served > limits.max_error_rate:
        return (f"error rate {errors / served:.1%} ({errors:g} 5xx of {served:g} requests) "
                f"above {limits.max_error_rate:.1%}")
    return None


def weights(share: float, others: int) -> tuple[int, int]:
    """(each other server's weight, the canary's) for the canary to get `share` (0-1) of the
    requests: canary / (others x other + canary) = share."""
    if share >= 1 or others == 0:
        return 0, SCALE
    if share <= 0:
        return SCALE, 0
    ratio = share * others / (1 - share)  # the canary's weight over another's
    if ratio <= 1:
        return SCALE, max(1, round(SCALE * ratio))
    return max(1, round(SCALE / ratio)), SCALE


# -- doing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    steps: list[float]  # shares, 0-1, in order
    step_seconds: float
    every: float
    limits: Thresholds
    env: dict[str, str]  # the canary process's whole environment
    executable: str  # the `instock` command
    ready_timeout: float = 120.0
    stop_timeout: float = 30.0


@dataclass
class Outcome:
    passed: bool
    reason: str | None = None
    canary: str | None = None  # its slot's address
    log: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> dict[str, Any]:
        return asdict(self)


class CanaryError(RuntimeError):
    """The canary could not even be tried (no running fleet, no spare slot, ...)."""


class Canary:
    """One try of a release in a running fleet (its status.json, as the supervisor writes it)."""

    def __init__(self, status: dict[str, Any], plan: Plan, say: Callable[[str], None]) -> None:
        if status.get("state") != "up":
            raise CanaryError(f"the fleet is {status.get('state', 'not running')!r}, not 'up' "
                              "(a rolling restart uses the spare slot too)")
        self.plan, self.say = plan, say
        self.socket = Path(status["admin_socket"])
        self.stats_url = str(status["stats"])
        serving = {c["slot"] for c in status["children"] if c["kind"] == "api" and c["alive"]}
        slots = {s["name"]: s["address"] for s in status["slots"]}
        self.others = {name: address for name, address in slots.items() if name in serving}
        spare = [name for name in slots if name not in serving]
        if not spare or not self.others:
            raise CanaryError("no spare slot beside the API processes serving")
        self.slot, self.address = spare[0], slots[spare[0]]
        self.log_path = Path(status["logs"]) / f"canary-{self.address.rsplit(':', 1)[1]}.log"
        self.http = httpx.AsyncClient(timeout=5)
        self.process: asyncio.subprocess.Process | None = None
        self.original: dict[str, dict[str, int]] = {}

    async def run(self) -> Outcome:
        started = time.monotonic()
        outcome = Outcome(False, canary=self.address, log=str(self.log_path))
        try:
            outcome.reason = await self._try(outcome)
            outcome.passed = outcome.reason is None
        finally:
            await self._tidy()
            outcome.seconds = round(time.monotonic() - started, 1)
        return outcome

    async def _try(self, outcome: Outcome) -> str | None:
        self.original = {backend: {name: await lb.get_weight(self.socket, backend, name)
                                   for name in [*self.others, self.slot]}
                         for backend in (lb.API_BACKEND, lb.LIVE_BACKEND)}
        await self._weigh(self.slot, 0)  # before its health checks can bring it in
        if (failed := await self._start()) is not None:
            return failed
        start = await self._reading(self.address)
        served = 0.0
        for share in self.plan.steps:
            other, mine = weights(share, len(self.others))
            for name in self.others:
                await self._weigh(name, other)
            await self._weigh(self.slot, mine)
            self.say(f"canary at {share:.0%} of the API traffic ({self.slot} weight {mine}, "
                     f"the others {other})")
            step_start = await self._reading(self.address)
            ends = time.monotonic() + self.plan.step_seconds
            while True:
                await asyncio.sleep(min(self.plan.every, max(0.0, ends - time.monotonic())))
                if self.process is None or self.process.returncode is not None:
                    return f"the canary exited (code {self.process and self.process.returncode})"
                now = await self._reading(self.address)
                oversold = max([now.oversold, *[
                    (await self._reading(address)).oversold for address in self.others.values()]])
                reason = verdict(start, now, oversold, self.plan.limits)
                if reason is not None or time.monotonic() >= ends:
                    break
            outcome.steps.append({"share": share, "requests": now.requests - step_start.requests,
                                  "errors": now.errors - step_start.errors,
                                  "oversold": oversold})
            served = now.requests - start.requests
            if reason is not None:
                return reason
        if served < self.plan.limits.min_requests:
            return (f"too little traffic to judge: the canary served {served:g} requests, "
                    f"fewer than {self.plan.limits.min_requests}")
        return None

    async def _start(self) -> str | None:
        """The canary process, answering /readyz itself: None, or why not."""
        host, port = self.address.rsplit(":", 1)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                self.plan.executable, "serve", "--host", host, "--port", port,
                env=self.plan.env, stdout=log, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        self.say(f"canary starting in {self.slot} ({self.address}), pid {self.process.pid}; "
                 f"log: {self.log_path}")
        deadline = time.monotonic() + self.plan.ready_timeout
        while time.monotonic() < deadline:
            if self.process.returncode is not None:
                return f"the canary exited as it started (code {self.process.returncode})"
            with contextlib.suppress(httpx.TransportError):
                if (await self.http.get(f"http://{self.address}/readyz")).status_code == 200:
                    return None
            await asyncio.sleep(0.2)
        return f"the canary was not ready within {self.plan.ready_timeout:g} s"

    async def _reading(self, address: str) -> Reading:
        try:
            answer = await self.http.get(f"http://{address}/metrics")
            answer.raise_for_status()
        except httpx.HTTPError:
            return Reading()  # a process that cannot say counts as saying nothing new
        return read_metrics(answer.text)

    async def _weigh(self, server: str, weight: int) -> None:
        for backend in (lb.API_BACKEND, lb.LIVE_BACKEND):
            await lb.set_weight(self.socket, backend, server, weight)

    async def _tidy(self) -> None:
        """Out of rotation first, the others' weights back, the canary stopped, and then its
        slot's weight back too (a rolling restart starts replacements there)."""
        with contextlib.suppress(lb.LoadBalancerError, OSError):
            await self._weigh(self.slot, 0)
            await self._restore(self.others)
        process = self.process
        if process is not None and process.returncode is None:
            process.send_signal(signal.SIGTERM)  # it drains: its requests in hand finish
            try:
                await asyncio.wait_for(process.wait(), self.plan.stop_timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        with contextlib.suppress(lb.LoadBalancerError, OSError):
            await self._restore([self.slot])
        await self.http.aclose()

    async def _restore(self, names: Iterable[str]) -> None:
        for backend, servers in self.original.items():
            for name in names:
                if name in servers:
                    await lb.set_weight(self.socket, backend, name, servers[name])
