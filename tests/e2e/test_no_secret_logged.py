"""No secret is ever logged (issue 20): a server at debug level, spans on the console, through a
run that handles every kind of secret the house holds, then its whole log scanned for them and
for card-like numbers.

The secrets: the JWT signing key, the personal-data master key, an API client's secret (and a
wrong one tried), the bearer tokens, a webhook signing secret, a marketplace's API key and
webhook secret. Card-like numbers: 13 to 19 digits, spaced or not, that pass the Luhn check;
one is sent where a shopper might type it (a profile's name) and one where a bot might (a SKU
in a refused reservation)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from instock.platform.auth import Role
from tests.e2e.harness import (
    ServerFactory,
    bearer,
    client,
    create_location,
    create_product,
    receive,
)
from tests.e2e.sandboxes import payments_and_api
from tests.support import TEST_SECRET
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.slow

CARD = "4111 1111 1111 1111"
WEBHOOK_SECRET = "whsec_never-in-a-log-0123456789abcdef"
MARKETPLACE_KEY = "mk_live_never-in-a-log-0123456789"
MARKETPLACE_SECRET = "whsec_marketplace-never-in-a-log-0123"


def luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


# A card number as people and forms write it: 13-19 digits in one run, or in groups of four
# (Amex: 4-6-5) split by one space or dash, starting as issuers' numbers do (2-6: Mastercard's
# 2-series, Amex, Visa, Mastercard, Discover), and not inside a longer token (an id, a time).
CARD_LIKE = re.compile(
    r"(?<![\w.:/-])(?:[2-6]\d{12,18}|[2-6]\d{3}([ -])\d{4}\1\d{4}\1\d{1,7}"
    r"|3[47]\d{2}([ -])\d{6}\2\d{5})(?![\w.:/-])")


def card_like(text: str) -> list[str]:
    return [m.group() for m in CARD_LIKE.finditer(text)
            if luhn(re.sub(r"\D", "", m.group()))]


def test_the_card_scan_finds_cards_and_not_ids_or_times() -> None:
    assert card_like(f"name: Pat {CARD}!") == [CARD]
    assert card_like("4111111111111111 and 3782-822463-10005") == [
        "4111111111111111", "3782-822463-10005"]
    assert card_like("4111111111111112") == []  # fails Luhn
    for not_a_card in ("13-475059535756", "1796544788293", "01a24a88-6e1c-7000-afab-4111",
                       "ts=4111111111111111x", "2026-12-06T09:13:02"):
        assert card_like(not_a_card) == [], not_a_card


async def test_a_full_run_logs_no_secret_and_no_card_number(servers: ServerFactory,
                                                            tmp_path: Path) -> None:
    _, server = await payments_and_api(servers, lambda url: {
        "INSTOCK_PAYMENTS_URL": url, "INSTOCK_LOG_LEVEL": "debug",
        "INSTOCK_TRACE_CONSOLE": "true"})
    receiver = await Receiver().start()
    tokens: list[str] = []
    try:
        async with client(server.base_url, Role.ADMIN) as admin:
            await create_product(admin, "vault", ["vault-1"])
            await create_location(admin, "wh-vault")
            await receive(admin, "vault-1", "wh-vault", 10)
            made = (await admin.post("/v1/oauth/clients", json={
                "name": "erp", "scopes": ["inventory"]})).json()
            secret = made["client_secret"]
            async with httpx.AsyncClient(base_url=server.base_url) as anon:
                granted = await anon.post("/v1/oauth/token", data={
                    "grant_type": "client_credentials", "client_id": made["id"],
                    "client_secret": secret})
                tokens.append(granted.json()["access_token"])
                refused = await anon.post("/v1/oauth/token", data={
                    "grant_type": "client_credentials", "client_id": made["id"],
                    "client_secret": secret + "-wrong"})
                assert refused.status_code == 401
                assert (await anon.get("/v1/locations", headers={
                    "Authorization": f"Bearer {tokens[0]}"})).status_code == 200
                broken = await anon.get("/v1/locations", headers={
                    "Authorization": f"Bearer {tokens[0][:-4]}AAAA"})
                assert broken.status_code == 401
            subscription = (await admin.post("/v1/webhooks/subscriptions", json={
                "url": receiver.url(), "event_types": ["webhook.*"],
                "secret": WEBHOOK_SECRET})).json()
            ping = await admin.post(f"/v1/webhooks/subscriptions/{subscription['id']}/test")
            assert ping.status_code == 200, ping.text
            connected = await admin.put("/v1/channels/web/connection", json={
                "base_url": receiver.url("/market"), "api_key": MARKETPLACE_KEY,
                "webhook_secret": MARKETPLACE_SECRET})
            assert connected.status_code == 200, connected.text
            tokens.append(str(admin.headers["Authorization"]).removeprefix("Bearer "))
        async with client(server.base_url, Role.CUSTOMER, "vault-shopper") as shopper:
            tokens.append(str(shopper.headers["Authorization"]).removeprefix("Bearer "))
            profile = await shopper.put("/v1/customers/vault-shopper", json={
                "name": f"Pat {CARD}", "email": "pat@example.com", "phone": "+33612345678"})
            assert profile.status_code == 200, profile.text
            bot = await shopper.post("/v1/reservations", json={
                "lines": [{"sku": CARD.replace(" ", ""), "quantity": 1}]})
            assert bot.status_code == 422
            order = await shopper.post("/v1/checkout", json={
                "lines": [{"sku": "vault-1", "quantity": 1}]})
            assert order.status_code == 201, order.text
        async with httpx.AsyncClient(base_url=server.base_url) as anon:
            await anon.get("/v1/inventory/vault-1", headers=bearer(Role.ADMIN) | {
                "Authorization": "Bearer not.a.token"})
    finally:
        await receiver.stop()
        server.stop()  # flushes the console exporter and the log
    log = server.log_path.read_text(errors="replace")
    # The run was logged and traced: what is scanned is not empty.
    assert "webhook_attempt" in log and "/v1/oauth/token" in log, log[-500:]
    master = (tmp_path / "state" / "pii-master.keys")
    secrets = {"the JWT key": TEST_SECRET, "an API client's secret": secret,
               "a wrong client secret": secret + "-wrong",
               "the webhook secret": WEBHOOK_SECRET, "the marketplace key": MARKETPLACE_KEY,
               "the marketplace secret": MARKETPLACE_SECRET,
               **{f"bearer token {i}": token for i, token in enumerate(tokens)}}
    if master.exists():
        for i, line in enumerate(master.read_text().split()):
            secrets[f"master key {i}"] = line.split(":", 1)[-1]
    leaked = [what for what, value in secrets.items() if value and value in log]
    assert leaked == [], f"secrets in the log: {leaked}"
    assert card_like(log) == [], card_like(log)[:5]
