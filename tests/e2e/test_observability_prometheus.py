"""Issue 18 item 4: the dashboards and alert rules against a real Prometheus and Alertmanager.
One instock API (SQLite, with the payment sandbox so checkout runs) with a little traffic,
another on PostgreSQL (its own scrape job) for the tampering test, one Prometheus (Debian's,
started here with its own port and data dir, scraping every second and evaluating the rules
every second) and one Alertmanager routing to a webhook receiver in this test, for the whole
module. Every PromQL expression of every dashboard panel and every rule is evaluated through
Prometheus's HTTP API and must parse and return at least one series. Then the API is killed and
InstockDown must reach the receiver through Alertmanager.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml

from instock.bench.local import free_port
from instock.platform.auth import Role
from tests.e2e.harness import (
    Database,
    Server,
    ServerFactory,
    client,
    create_location,
    create_product,
    eventually,
    receive,
    token,
)
from tests.e2e.sandboxes import payments_and_api, payments_env
from tests.marketplace import API_KEY, SECRET, simulator
from tests.observability import (
    Expression,
    dashboard_expressions,
    rule_expressions,
    rule_files,
    tool,
)
from tests.support import backends, migrated_database

HOST = "127.0.0.1"
JOBS = {"sqlite": "instock", "postgresql": "instock-pg"}  # backend -> scrape job
SKU = "OBS-M"


class AlertReceiver(http.server.ThreadingHTTPServer):
    """Alertmanager's webhook receiver: keeps every notification it is sent."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__((HOST, 0), Handler)
        self.port = self.server_address[1]


@dataclass
class Stack:
    api: Server
    db: Database
    prometheus: str  # base URL
    receiver: AlertReceiver
    workdir: Path
    # scrape job -> (server, its database): every backend's instock, tampered with in turn
    shops: dict[str, tuple[Server, Database]]


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for(check: Any, what: str, timeout: float, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            found = check()
            if found:
                return found
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"never happened in {timeout:.0f} s: {what}\n{tail}")


async def drive_traffic(api: Server, workdir: Path) -> None:
    """A product, a marketplace channel, a receive (pushed to the marketplace simulator), a live
    stream, a reservation and its commit, a checkout, recommendations: every route and metric
    the dashboards single out gets a series, and so do the histograms behind them."""
    async with client(api.base_url, Role.ADMIN) as admin, \
            client(api.base_url, Role.CUSTOMER, "obs-ann") as buyer, \
            simulator(workdir) as marketplace:
        await create_product(admin, "obs-tee", [SKU])
        await create_location(admin, "wh-obs")
        response = await admin.put("/v1/channels/mkt", json={
            "name": "Marketplace", "locations": ["wh-obs"], "buffer": 0})
        assert response.status_code == 200, response.text
        response = await admin.put("/v1/channels/mkt/connection", json={
            "kind": "marketplace", "base_url": marketplace.base_url, "api_key": API_KEY,
            "webhook_secret": SECRET})
        assert response.status_code == 200, response.text
        await receive(admin, SKU, "wh-obs", 20)

        async def listed() -> bool:
            return await marketplace.listing(SKU) == 20

        await eventually(listed, "the receive pushed to the marketplace", 30)
        async with admin.stream("GET", "/v1/stream/inventory", params={"skus": SKU}) as stream:
            assert stream.status_code == 200
            await anext(stream.aiter_lines())  # a live connection was counted
        held = await buyer.post("/v1/reservations", json={"lines": [{"sku": SKU, "quantity": 1}]})
        assert held.status_code == 201, held.text
        committed = await buyer.post(f"/v1/reservations/{held.json()['id']}/commit")
        assert committed.status_code == 200, committed.text
        cart = (await buyer.post("/v1/carts", json={})).json()
        added = await buyer.post(f"/v1/carts/{cart['id']}/items",
                                 json={"sku": SKU, "quantity": 1})
        assert added.status_code == 200, added.text
        paid = await buyer.post("/v1/checkout", json={"cart_id": cart["id"]})
        assert paid.status_code == 201, paid.text
        recs = await buyer.get("/v1/recommendations")
        assert recs.status_code == 200, recs.text


def rules_without_for(workdir: Path) -> list[str]:
    """The rules as they are, but with every `for:` removed: a test cannot wait InstockDown's
    minute (nor any other's). Nothing else changes."""
    copies = []
    for path in rule_files():
        doc = yaml.safe_load(path.read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                rule.pop("for", None)
        copy = workdir / f"rules-{path.name}"
        copy.write_text(yaml.safe_dump(doc, sort_keys=False))
        copies.append(str(copy))
    return copies


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("observability")
    prometheus_bin, alertmanager_bin = tool("prometheus"), tool(
        "prometheus-alertmanager", "alertmanager")
    receiver = AlertReceiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    processes: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as databases:
        factories: dict[str, ServerFactory] = {}
        for backend in backends():
            url = databases.enter_context(migrated_database(backend, workdir))
            factories[JOBS[backend]] = ServerFactory(Database(backend, url, workdir), workdir)
        factory = factories["instock"]
        try:
            async def start_shop() -> Server:
                _, api = await payments_and_api(factory, payments_env)
                await drive_traffic(api, workdir)
                return api

            async def start_plain(plain: ServerFactory) -> Server:
                api = await plain.start()
                async with client(api.base_url, Role.ADMIN) as admin:
                    await create_product(admin, "obs-tee", [SKU])
                    await create_location(admin, "wh-obs")
                    await receive(admin, SKU, "wh-obs", 20)
                return api

            async def start_all() -> dict[str, Server]:  # at once: each start costs seconds
                others = [job for job in factories if job != "instock"]
                started = await asyncio.gather(
                    start_shop(), *(start_plain(factories[job]) for job in others))
                return dict(zip(["instock", *others], started, strict=True))

            shops = {job: (server, factories[job].db)
                     for job, server in asyncio.run(start_all()).items()}
            api = shops["instock"][0]

            am_port = free_port()
            am_config = workdir / "alertmanager.yml"
            am_config.write_text(yaml.safe_dump({
                "route": {"receiver": "test", "group_by": ["alertname"], "group_wait": "0s",
                          "group_interval": "1s", "repeat_interval": "1h"},
                "receivers": [{"name": "test", "webhook_configs": [
                    {"url": f"http://{HOST}:{receiver.port}/alerts", "send_resolved": False}]}],
            }))
            am_log = workdir / "alertmanager.log"
            processes.append(start([
                alertmanager_bin, f"--config.file={am_config}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address={HOST}:{am_port}", "--cluster.listen-address="], am_log))

            prom_port = free_port()
            prom_config = workdir / "prometheus.yml"
            prom_config.write_text(yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": rules_without_for(workdir),
                "alerting": {"alertmanagers": [
                    {"static_configs": [{"targets": [f"{HOST}:{am_port}"]}]}]},
                "scrape_configs": [{"job_name": job, "static_configs": [
                    {"targets": [f"{HOST}:{server.port}"]}]} for job, (server, _) in shops.items()],
            }))
            prom_log = workdir / "prometheus.log"
            processes.append(start([
                prometheus_bin, f"--config.file={prom_config}",
                f"--storage.tsdb.path={workdir / 'prometheus-data'}",
                f"--web.listen-address={HOST}:{prom_port}"], prom_log))
            base = f"http://{HOST}:{prom_port}"
            wait_for(lambda: httpx.get(f"{base}/-/ready", timeout=2).status_code == 200,
                     "Prometheus ready", 30, prom_log)
            wait_for(lambda: httpx.get(f"http://{HOST}:{am_port}/-/ready",
                                       timeout=2).status_code == 200,
                     "Alertmanager ready", 30, am_log)
            # rate() needs two samples in its window, so wait for a few scrapes after `up`.
            wait_for(lambda: query(base, 'count_over_time(up{job="instock"}[1m]) >= 4'),
                     "four scrapes of instock", 30, prom_log)
            yield Stack(api, factory.db, base, receiver, workdir, shops)
        finally:
            for process in reversed(processes):
                stop(process)
            for each in factories.values():
                each.stop_all()
            receiver.shutdown()


def query(base: str, expr: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_every_dashboard_and_rule_expression_parses_and_returns_series(stack: Stack) -> None:
    expressions: list[Expression] = dashboard_expressions() + rule_expressions()
    # Recording rules are evaluated every second: let the ones alerts build on exist first.
    wait_for(lambda: query(stack.prometheus, "instock:http_errors:ratio_rate5m"),
             "the recording rules' first evaluation", 15)
    failed, empty = [], []
    for expression in expressions:
        try:
            if not query(stack.prometheus, expression.expr):
                empty.append(expression)
        except ValueError as error:
            failed.append(f"{expression.where}: {error}\n    {expression.expr}")
    assert not failed, "expressions Prometheus refused:\n" + "\n".join(failed)
    assert not empty, ("expressions that returned no series (a metric not exported, or a "
                       "label set never seen):\n" + "\n".join(
                           f"{e.where}\n    {e.expr}" for e in empty))
    assert len(expressions) > 40


def delivered(stack: Stack, alertname: str, job: str = "instock") -> dict[str, Any] | None:
    for notification in stack.receiver.notifications:
        for alert in notification["alerts"]:
            if alert["labels"].get("alertname") == alertname and (
                    alert["labels"].get("job") == job):
                return dict(alert)
    return None


@pytest.mark.parametrize("backend", backends())
def test_tampered_stock_is_a_drift_whose_alert_reaches_the_webhook(stack: Stack,
                                                                   backend: str) -> None:
    """A stock level changed in the database behind the code: the server's reconciler reports
    a drift within its interval, InstockDriftDetected fires through Prometheus and
    Alertmanager, an approved repair writes a compensating entry and the next pass is clean."""
    job = JOBS[backend]
    api, db = stack.shops[job]
    tampered = time.monotonic()
    asyncio.run(db.execute(sa.text(
        f"UPDATE stock_levels SET on_hand = on_hand + 30 WHERE sku = '{SKU}'")))
    staff = {"Authorization": "Bearer " + token(Role.INVENTORY, "ops-obs")}
    drifts_url = f"{api.base_url}/v1/reconciliation/drifts"

    def found() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = httpx.get(drifts_url, headers=staff).json()["items"]
        return items

    [drift] = wait_for(found, "the drift reported", 10)
    assert time.monotonic() - tampered < 10  # within the default interval (5 s) and a pass
    assert (drift["kind"], drift["sku"]) == ("level_mismatch", SKU)
    alert = wait_for(lambda: delivered(stack, "InstockDriftDetected", job),
                     "InstockDriftDetected delivered to the webhook receiver", 30)
    assert alert["status"] == "firing" and alert["labels"]["severity"] == "warning"
    approved = httpx.post(f"{drifts_url}/{drift['id']}/approve", headers=staff,
                          json={"reason": "the tamper test: the ledger is right"})
    assert approved.status_code == 200, approved.text
    ledger = httpx.get(f"{api.base_url}/v1/ledger", params={"sku": SKU, "limit": 1000},
                       headers=staff).json()["entries"]
    assert (ledger[-1]["kind"], ledger[-1]["actor"]) == ("reconcile", "ops-obs")
    wait_for(lambda: not found() and query(
        stack.prometheus, f'instock_reconciliation_drifts{{job="{job}"}} == 0'),
             "a clean pass, and Prometheus sees no open drift", 30)


def test_an_alert_reaches_the_webhook_through_alertmanager(stack: Stack) -> None:
    stack.api.sigkill()  # InstockDown: up{job="instock"} == 0 from the next scrape on

    alert = wait_for(lambda: delivered(stack, "InstockDown"),
                     "InstockDown delivered to the webhook receiver", 30)
    assert alert["status"] == "firing"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["job"] == "instock"
    assert alert["labels"]["instance"] == f"{HOST}:{stack.api.port}"
    assert alert["annotations"]["summary"] == (
        f"instock {HOST}:{stack.api.port} does not answer its scrape")
    assert alert["annotations"]["runbook_url"].endswith("runbooks/http.md#instockdown")
