"""`instock fleet`: up (HAProxy, API processes, workers; supervised), restart (rolling),
status. `make fleet` is `instock fleet up`."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from instock.fleet import TEMPLATE

if TYPE_CHECKING:
    from instock.fleet.supervisor import Plan

fleet_app = typer.Typer(help="A local fleet: HAProxy in front of API processes and workers.",
                        no_args_is_help=True)
err = Console(stderr=True)


def fleet_dir() -> Path:
    from instock.config import get_settings

    return (get_settings().state_dir / "fleet").resolve()


@fleet_app.command("up")
def up(api: int = typer.Option(3, "--api", min=1, help="API processes behind the balancer"),
       workers: int = typer.Option(2, "--workers", min=0,
                                   help="`instock worker all` processes beside them"),
       host: str = typer.Option("127.0.0.1", "--host",
                                help="the address everything listens on (an IP address)"),
       port: int = typer.Option(8080, "--port", help="the balancer's port"),
       stats_port: int = typer.Option(8404, "--stats-port", help="HAProxy's statistics page"),
       api_base_port: int = typer.Option(
           8001, "--api-base-port", help="API slots on this port and the next ones (one more "
           "than --api: the spare a rolling restart starts each replacement in)"),
       template: Path = typer.Option(TEMPLATE, "--lb-template",
                                     help="the HAProxy configuration to render from")) -> None:
    """Migrate, then start HAProxy, the API processes (worker duties off) and the workers on
    the configured database and bus; supervise them until Ctrl-C or SIGTERM (a graceful stop
    of everything); SIGHUP or `instock fleet restart` restarts them one at a time."""
    from instock.bench.local import instock_executable, run_loop
    from instock.config import get_settings
    from instock.fleet.lb import LoadBalancerError
    from instock.fleet.supervisor import Plan

    settings = get_settings()
    if settings.bus_url.startswith("memory:"):
        err.print("[red]a fleet needs a shared bus[/red]: the processes hear each other's "
                  "events only through one (memory:// lives inside one process). Set "
                  "INSTOCK_BUS_URL=nats://127.0.0.1:4222 or redis://127.0.0.1:6379/0")
        raise typer.Exit(2)
    _refuse_a_second(fleet_dir())
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise typer.BadParameter("give an IP address (the API processes trust the "
                                 "balancer's X-Forwarded-For from it)", param_hint="--host"
                                 ) from exc
    if not template.exists():
        err.print(f"[red]no HAProxy template at {template}[/red] (run from a checkout, or "
                  "give --lb-template deploy/lb/haproxy.cfg)")
        raise typer.Exit(2)
    if settings.database_url.startswith("sqlite"):
        err.print("[yellow]SQLite[/yellow]: every process shares one file (WAL, a 30 s busy "
                  "timeout, file locks for the relay's and reconciler's leadership), so it "
                  "works, but writes queue for the file across processes: PostgreSQL for load.")
    ports = [api_base_port + i for i in range(api + 1)]
    busy = [p for p in [port, stats_port, *ports] if not _free(host, p)]
    if busy:
        err.print(f"[red]ports already taken on {host}[/red]: {busy}")
        raise typer.Exit(2)
    admin = _prepare()
    env, api_env = environments(host, api, workers)
    stop_timeout = settings.drain_seconds + 5 + settings.shutdown_timeout_seconds + 5
    plan = Plan(api, workers, host, port, stats_port, ports, fleet_dir(), env, api_env,
                instock_executable(), template, stop_timeout)
    try:
        run_loop(supervise(plan, admin))
    except (RuntimeError, LoadBalancerError) as exc:  # a process that never came up, …
        err.print(f"[red]the fleet did not start[/red]: {exc}")
        raise typer.Exit(1) from exc


def environments(host: str, apis: int, workers: int) -> tuple[dict[str, str], dict[str, str]]:
    """Every process's environment (this one's), and what the API processes add: no worker
    duties, no migration (done once, before they start), the balancer's X-Forwarded-For
    trusted from its address only (unless INSTOCK_TRUSTED_PROXIES says)."""
    from instock.fleet.supervisor import pool_size
    from instock.workers import api_only_env

    env = dict(os.environ)
    env.setdefault("INSTOCK_DB_POOL_SIZE", str(pool_size(apis, workers)))
    api_env = {**api_only_env(), "INSTOCK_MIGRATE_ON_START": "false"}
    if "INSTOCK_TRUSTED_PROXIES" not in env:
        api_env["INSTOCK_TRUSTED_PROXIES"] = host
    return env, api_env


def _prepare() -> str:
    """Migrate, and make the keys every process shares (the JWT secret, the personal-data
    master key) before several processes race to create them; an admin token."""
    from instock.app import build
    from instock.config import get_settings
    from instock.migrate import upgrade
    from instock.platform.auth import Role

    upgrade(get_settings().database_url)
    err.print("[green]database migrated[/green]")

    async def keys() -> str:
        container = build()
        try:
            return container.tokens.mint(Role.ADMIN, "admin")
        finally:
            await container.close()

    return asyncio.run(keys())


def _free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _refuse_a_second(directory: Path) -> None:
    status = _read_status(directory)
    pid = status.get("supervisor_pid") if status.get("state") != "stopped" else None
    if isinstance(pid, int) and _running(pid):
        err.print(f"[red]a fleet already runs[/red] from {directory} (supervisor pid {pid})")
        raise typer.Exit(2)


async def supervise(plan: Plan, admin: str) -> None:
    """Start the fleet, watch it until told to stop, then stop it gracefully."""
    from instock.fleet.supervisor import Fleet

    plan.state_dir.mkdir(parents=True, exist_ok=True)
    journal = (plan.logs / "fleet.log")
    journal.parent.mkdir(parents=True, exist_ok=True)

    def note(text: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {text}"
        err.print(line, soft_wrap=True, highlight=False, markup=False)
        with journal.open("a") as out:
            out.write(line + "\n")

    fleet = Fleet(plan, note)
    loop = asyncio.get_running_loop()
    told = asyncio.Event()
    restarts: set[asyncio.Task[None]] = set()

    async def restart() -> None:
        try:
            await fleet.rolling_restart()
        except Exception as exc:  # the old processes go on serving: say why and carry on
            note(f"rolling restart stopped: {exc}")
            fleet.state = "up"
            fleet.write_status()

    def hangup() -> None:
        task = loop.create_task(restart())
        restarts.add(task)
        task.add_done_callback(restarts.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, told.set)
    loop.add_signal_handler(signal.SIGHUP, hangup)
    watcher: asyncio.Task[None] | None = None
    try:
        note(f"starting {plan.apis} API processes, {plan.workers} workers and HAProxy")
        if not await _first(fleet.start(), told):
            return  # told to stop while starting: what started is stopped below
        watcher = loop.create_task(fleet.watch())
        note(f"fleet up: [{plan.lb_url}] through HAProxy (stats: {plan.stats_url}); "
             f"logs in {plan.logs}; rolling restart: `instock fleet restart` or "
             f"kill -HUP {os.getpid()}; stop: Ctrl-C")
        err.print("admin token:")
        typer.echo(admin, err=True)
        await told.wait()
        note("stopping: API processes drain, workers finish their batches, HAProxy last")
    finally:
        for task in [*restarts, *filter(None, [watcher])]:
            task.cancel()
        await fleet.stop()
        note("fleet stopped")


async def _first(work: Coroutine[Any, Any, None], told: asyncio.Event) -> bool:
    """Run `work` unless `told` comes first (then cancel it): True if it finished."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(told.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()  # its error, if it failed
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


@fleet_app.command("restart")
def restart(timeout: float = typer.Option(600, "--timeout", help="seconds to wait for it")
            ) -> None:
    """A rolling restart of the running fleet (SIGHUP to its supervisor), waited for."""
    directory = fleet_dir()
    status = _read_status(directory)
    pid = status.get("supervisor_pid")
    if not isinstance(pid, int) or not _running(pid) or status.get("state") == "stopped":
        err.print(f"[red]no fleet runs[/red] from {directory}")
        raise typer.Exit(1)
    done = int(status.get("rolling_restarts", 0))
    os.kill(pid, signal.SIGHUP)
    err.print(f"rolling restart asked of supervisor {pid}; its log: "
              f"{status.get('logs')}/fleet.log")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.5)
        status = _read_status(directory)
        if int(status.get("rolling_restarts", 0)) > done:
            err.print("[green]rolling restart done[/green]")
            return
        if not _running(pid):
            break
    err.print("[red]the rolling restart did not finish[/red]; see the fleet's log")
    raise typer.Exit(1)


@fleet_app.command("canary")
def canary(
    release: Path | None = typer.Option(
        None, "--release", help="the new release's source: a checkout's `src` directory, "
        "first on the canary's PYTHONPATH (default: the installed code)"),
    env: list[str] = typer.Option([], "--env", help="NAME=VALUE for the canary only "
                                  "(repeatable)"),
    steps: str = typer.Option("10,25,50", "--steps",
                              help="the canary's shares of the API traffic, percent, in order"),
    step_seconds: float = typer.Option(60.0, "--step-seconds", min=1,
                                       help="how long each share is held"),
    every: float = typer.Option(2.0, "--every", min=0.2,
                                help="seconds between two readings of the processes' metrics"),
    max_error_rate: float = typer.Option(1.0, "--max-error-rate", min=0, max=100,
                                         help="percent of the canary's requests answered 5xx"),
    min_requests: int = typer.Option(20, "--min-requests", min=1,
                                     help="requests the canary serves before its error rate "
                                     "is judged, and at least in all"),
    max_oversold: float = typer.Option(0, "--max-oversold", min=0,
                                       help="instock_oversold_units any process may report"),
) -> None:
    """Try a release on a share of the running fleet's traffic: one API process of it in the
    spare slot, weighed in at HAProxy step by step, rolled back at once when its error rate
    or an oversell crosses its threshold (read from every process's /metrics). Prints the
    verdict as JSON; exit 0 passed, 1 rolled back, 2 not tried."""
    from instock.bench.local import instock_executable
    from instock.fleet.canary import Canary, CanaryError, Plan, Thresholds

    try:
        shares = [float(part) / 100 for part in steps.split(",")]
    except ValueError as exc:
        raise typer.BadParameter("percentages, e.g. 10,25,50", param_hint="--steps") from exc
    if not shares or any(not 0 < s <= 1 for s in shares):
        raise typer.BadParameter("each share above 0 and at most 100", param_hint="--steps")
    overrides = dict(item.split("=", 1) for item in env if "=" in item)
    if len(overrides) != len(env):
        raise typer.BadParameter("NAME=VALUE", param_hint="--env")
    if release is not None and not (release / "instock" / "__init__.py").exists():
        raise typer.BadParameter(f"{release} holds no instock package (give a checkout's "
                                 "src directory)", param_hint="--release")
    status = _read_status(fleet_dir())
    pid = status.get("supervisor_pid")
    if not isinstance(pid, int) or not _running(pid):
        err.print(f"[red]no fleet runs[/red] from {fleet_dir()}")
        raise typer.Exit(2)
    host = str(status["slots"][0]["address"]).rsplit(":", 1)[0]
    base, api_env = environments(host, int(status["apis_planned"]),
                                 int(status["workers_planned"]))
    process_env = {**base, **api_env, **overrides}
    if release is not None:
        process_env["PYTHONPATH"] = os.pathsep.join(
            [str(release.resolve()), *filter(None, [base.get("PYTHONPATH")])])
    plan = Plan(shares, step_seconds, every,
                Thresholds(max_error_rate / 100, min_requests, max_oversold), process_env,
                instock_executable())
    try:
        trial = Canary(status, plan, lambda line: err.print(line, highlight=False))
    except CanaryError as exc:
        err.print(f"[red]no canary[/red]: {exc}")
        raise typer.Exit(2) from exc
    outcome = asyncio.run(trial.run())
    typer.echo(json.dumps(outcome.report(), indent=2))
    if outcome.passed:
        err.print("[green]canary passed[/green]: roll the release out with `instock fleet "
                  "restart` once the fleet runs it")
        return
    err.print(f"[red]canary rolled back[/red]: {outcome.reason}")
    raise typer.Exit(1)


@fleet_app.command("status")
def status() -> None:
    """The running fleet's processes (JSON), and what the balancer sees of each."""
    from instock.fleet import lb

    found = _read_status(fleet_dir())
    if not found:
        err.print(f"[red]no fleet status[/red] in {fleet_dir()}")
        raise typer.Exit(1)
    with contextlib.suppress(Exception):
        states = asyncio.run(lb.api_states(str(found["stats"])))
        found["balancer"] = {name: row.status for name, row in states.items()}
    typer.echo(json.dumps(found, indent=2))


def _read_status(directory: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        found: dict[str, Any] = json.loads((directory / "status.json").read_text())
        return found
    return {}


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
