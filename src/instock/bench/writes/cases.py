"""The write cases over HTTP: what one operation sends, and what the record must hold after."""

from __future__ import annotations

import asyncio
import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from instock.bench.drop.sql import LOCATION
from instock.bench.writes.load import Phase
from instock.bench.writes.plan import (
    ADJUST_PATH,
    CUSTOMERS,
    SETTLE_SECONDS,
    STOCK_PER_SKU,
    Client,
    Failed,
    adjustment_sku,
    checkout_sku,
    in_parallel,
    ok,
    problem_slug,
    reservation_sku,
)
from instock.platform.auth import Role


class Case(Protocol):
    name: str
    requests_per_operation: int  # HTTP requests one operation makes when all goes well

    async def operation(self, i: int, due: float, phase: Phase) -> None:
        """One operation; its requests recorded into `phase`, failures too."""

    async def prepare(self, advance: Callable[[int], None]) -> None:
        """Before the first operation: what the record holds already (a server given with
        --http may have served an earlier run on the same SKUs)."""

    async def check(self, advance: Callable[[int], None]) -> dict[str, Any]:
        """What the server holds afterwards: `oversold`, `lost` and the counts behind them."""

    def checks(self) -> int:
        """Requests `check` makes (its progress bar's length)."""


@dataclass
class Levels:
    """Stock summed over some SKUs, as the server reads it back."""

    on_hand: int = 0
    reserved: int = 0
    committed: int = 0
    excess: int = 0  # units held (reserved or committed) beyond on_hand, over every SKU

    def since(self, before: Levels) -> Levels:
        """What changed since `before` (the excess stays absolute: none is ever right)."""
        return Levels(self.on_hand - before.on_hand, self.reserved - before.reserved,
                      self.committed - before.committed, self.excess)


async def read_levels(client: Client, skus: list[str], advance: Callable[[int], None]) -> Levels:
    admin = client.bearer(Role.ADMIN, "bench")

    async def one(sku: str) -> dict[str, Any]:
        answer = ok(await client.pool.request("GET", f"/v1/inventory/{sku}", admin))
        level: dict[str, Any] = answer.json()
        return level

    levels = Levels()
    for level in await in_parallel([functools.partial(one, sku) for sku in skus], advance):
        levels.on_hand += level["on_hand"]
        levels.reserved += level["reserved"]
        levels.committed += level["committed"]
        levels.excess += max(0, level["reserved"] + level["committed"] - level["on_hand"])
    return levels


def _customer_tokens(client: Client) -> list[dict[str, str]]:
    # Minted before the clock starts: signing tokens is the bench's cost, not the server's.
    return [client.bearer(Role.CUSTOMER, f"buyer-{n}") for n in range(CUSTOMERS)]


class Adjustments:
    """A receipt of one unit, then a count, in turn on each SKU: one POST each, spread over
    the SKUs round-robin. Each answer names the level's new version; afterwards each answered
    version must be in that SKU's ledger (lost if not; answered twice: `duplicate_versions`)."""

    name = "adjustment"
    requests_per_operation = 1

    def __init__(self, client: Client, skus: int) -> None:
        self.client, self.skus = client, skus
        self.head = client.pool.head("POST", ADJUST_PATH, client.bearer(Role.ADMIN, "bench"),
                                     json_body=True)
        self.versions: dict[str, list[int]] = {}

    def body(self, i: int) -> bytes:
        sku, round_ = adjustment_sku(i % self.skus), i // self.skus
        if round_ % 2 == 0:
            change = {"kind": "receive", "quantity": 1}
        else:
            # Counts climb 10 a round, receipts 1: a count always changes the level.
            change = {"kind": "count", "quantity": 2 * STOCK_PER_SKU + 10 * round_}
        return json.dumps({"sku": sku, "location": LOCATION, "reason": "bench", **change}
                          ).encode()

    async def operation(self, i: int, due: float, phase: Phase) -> None:
        try:
            answer = await self.client.pool.send(self.head, self.body(i))
            stock = ok(answer).json()
        except Exception as exc:
            phase.fail(exc)
            return
        phase.answer(due)
        version = next(lv["version"] for lv in stock["locations"] if lv["location"] == LOCATION)
        self.versions.setdefault(stock["sku"], []).append(int(version))

    async def prepare(self, advance: Callable[[int], None]) -> None:
        """Nothing: each answered version is looked for in the ledger, whatever came before."""

    def checks(self) -> int:
        return 2 * len(self.versions)

    async def check(self, advance: Callable[[int], None]) -> dict[str, Any]:
        ledgers = await in_parallel(
            [functools.partial(self._ledger_versions, sku) for sku in self.versions], advance)
        lost = duplicates = 0
        for (_, answered), recorded in zip(self.versions.items(), ledgers, strict=True):
            duplicates += len(answered) - len(set(answered))
            lost += len(set(answered) - recorded)
        levels = await read_levels(self.client, list(self.versions), advance)
        return {"oversold": levels.excess, "lost": lost, "duplicate_versions": duplicates,
                "adjusted_skus": len(self.versions),
                "lost_checked_via": "each answered version in GET /v1/ledger?sku="}

    async def _ledger_versions(self, sku: str) -> set[int]:
        admin = self.client.bearer(Role.ADMIN, "bench")
        versions: set[int] = set()
        after = 0
        while True:
            page = ok(await self.client.pool.request(
                "GET", f"/v1/ledger?sku={sku}&location={LOCATION}&after_version={after}"
                f"&limit=1000", admin)).json()["entries"]
            versions.update(int(e["version"]) for e in page)
            if len(page) < 1000:
                return versions
            after = max(int(e["version"]) for e in page)


@dataclass
class Tally:
    """What the buyers of a case were told."""

    held: int = 0  # reservations (or orders) answered as placed
    done: int = 0  # of those, committed (or paid)
    waiting: int = 0  # checkouts answered 202: their saga goes on in the background
    refused: Counter[str] = field(default_factory=Counter)


class Reservations:
    """A reservation of one unit (a customer's token, `POST /v1/reservations`), then its
    commit: two requests an operation, spread over the SKUs round-robin. Afterwards the
    SKUs' levels must hold every unit answered: committed ones committed, the rest reserved."""

    name = "reservation"
    requests_per_operation = 2

    def __init__(self, client: Client, skus: int) -> None:
        self.client, self.skus = client, skus
        self.tokens = _customer_tokens(client)
        self.heads = [client.pool.head("POST", "/v1/reservations", token, json_body=True)
                      for token in self.tokens]
        self.tally = Tally()
        self.before = Levels()

    def sku_names(self) -> list[str]:
        return [reservation_sku(n) for n in range(self.skus)]

    async def prepare(self, advance: Callable[[int], None]) -> None:
        self.before = await read_levels(self.client, self.sku_names(), advance)

    async def operation(self, i: int, due: float, phase: Phase) -> None:
        buyer = i % CUSTOMERS
        body = json.dumps({"lines": [{"sku": reservation_sku(i % self.skus), "quantity": 1}]})
        try:
            answer = ok(await self.client.pool.send(self.heads[buyer], body.encode()))
        except Exception as exc:
            phase.fail(exc)
            return
        phase.answer(due)
        self.tally.held += 1
        head = self.client.pool.head("POST", f"/v1/reservations/{answer.json()['id']}/commit",
                                     self.tokens[buyer])
        try:
            commit = ok(await self.client.pool.send(head))
        except Exception as exc:
            phase.fail(exc)
            return
        phase.answer(commit.sent)
        self.tally.done += 1

    def checks(self) -> int:
        return self.skus

    async def check(self, advance: Callable[[int], None]) -> dict[str, Any]:
        levels = (await read_levels(self.client, self.sku_names(), advance)).since(self.before)
        return _held_check(self.tally, levels) | {
            "reservations": self.tally.held, "commits": self.tally.done}


def _held_check(tally: Tally, levels: Levels) -> dict[str, Any]:
    """Every unit a buyer was told of is in the levels (committed, or still reserved); the
    levels hold nothing beyond what is on hand."""
    lost = max(0, tally.held - levels.committed - levels.reserved,
               tally.done - levels.committed)
    return {"oversold": levels.excess, "lost": lost, "db_committed": levels.committed,
            "db_reserved": levels.reserved,
            # Units held that no answer told of: a request that failed in flight may still
            # have landed (see `errors`).
            "unexplained": max(0, levels.committed + levels.reserved - tally.held)}


class Checkouts:
    """`POST /v1/checkout` of one unit by a customer (reserve, authorise at the payment
    provider, commit, capture, hand to fulfilment, all in the request), spread over the
    checkout SKUs. 201 is paid; 202 goes on in the background and is waited for afterwards.
    Every paid unit must be committed, and (when the provider is ours) captured once."""

    name = "checkout"
    requests_per_operation = 1

    def __init__(self, client: Client, skus: int, sandbox: str | None) -> None:
        self.client, self.skus, self.sandbox = client, skus, sandbox
        self.heads = [client.pool.head("POST", "/v1/checkout", token, json_body=True)
                      for token in _customer_tokens(client)]
        self.tally = Tally()
        self.before = Levels()

    def sku_names(self) -> list[str]:
        return [checkout_sku(n) for n in range(self.skus)]

    async def prepare(self, advance: Callable[[int], None]) -> None:
        self.before = await read_levels(self.client, self.sku_names(), advance)

    async def operation(self, i: int, due: float, phase: Phase) -> None:
        body = json.dumps({"lines": [{"sku": checkout_sku(i % self.skus), "quantity": 1}]})
        try:
            answer = await self.client.pool.send(self.heads[i % CUSTOMERS], body.encode())
        except Exception as exc:
            phase.fail(exc)
            return
        if answer.status not in (201, 202):
            phase.fail(Failed(answer))
            if answer.status in (402, 409):  # failed at the provider or out of stock
                self.tally.refused[problem_slug(answer)] += 1
            return
        phase.answer(due)
        self.tally.held += 1
        if answer.status == 201:
            self.tally.done += 1
        else:
            self.tally.waiting += 1

    def checks(self) -> int:
        return self.skus

    async def check(self, advance: Callable[[int], None]) -> dict[str, Any]:
        skus = self.sku_names()
        levels = (await read_levels(self.client, skus, advance)).since(self.before)
        settle = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while levels.reserved > 0 and asyncio.get_running_loop().time() < settle:
            await asyncio.sleep(0.5)  # a saga answered 202 is still on its way
            levels = (await read_levels(self.client, skus, lambda _: None)).since(self.before)
        found = _held_check(self.tally, levels) | {
            "paid": self.tally.done, "answered_202": self.tally.waiting,
            "refused": dict(self.tally.refused)}
        if self.sandbox is not None:  # ours: its captures must be the committed units
            async with httpx.AsyncClient(base_url=self.sandbox, timeout=30) as http:
                stats = (await http.get("/_sandbox/stats")).raise_for_status().json()
            found["provider_captures"] = stats.get("captures", 0)
        return found
