"""Which contexts a process serves (instock/services.py): its routes, GraphQL fields,
consumers and background duties follow INSTOCK_SERVICES; the default is everything."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from instock import services
from instock.app import build, create_app
from instock.graphql_schema import graphql_schema
from instock.workers import worker_duties
from tests.support import make_settings

MEMORY = "sqlite+aiosqlite:///:memory:"


def test_a_spec_names_known_services_or_all() -> None:
    assert services.parse("all") == services.parse("") == services.ALL
    assert services.parse(" Orders , payments") == {"orders", "payments"}
    with pytest.raises(services.UnknownService, match="unknown service invntory"):
        services.parse("orders,invntory")
    with pytest.raises(ValidationError, match="unknown service"):
        make_settings(MEMORY, Path("."), services="nope")


def routes(tmp_path: Path, spec: str) -> set[str]:
    app = create_app(make_settings(MEMORY, tmp_path, services=spec))
    return set(app.openapi()["paths"])


def test_a_process_documents_only_its_contexts_routes(tmp_path: Path) -> None:
    everything = routes(tmp_path, "all")
    orders = routes(tmp_path, "orders,payments")
    assert orders and orders < everything
    assert "/v1/checkout" in orders
    assert not any(p.startswith(("/v1/inventory", "/v1/recommendations", "/v1/products"))
                   for p in orders)
    # Split over processes, the contexts still serve every route once, and no route twice.
    parts = [routes(tmp_path, ",".join(group)) for group in (
        ("inventory", "catalog", "live", "waitlist", "drops"), ("orders", "payments"),
        ("recommendations", "experiments"), ("customers", "privacy", "identity", "polls"),
        ("notifications", "webhooks", "channels"), ("analytics", "reconciliation"))]
    assert set().union(*parts) == everything
    assert sum(len(part) for part in parts) == len(everything)


def test_graphql_has_the_served_contexts_fields(tmp_path: Path) -> None:
    def fields(spec: str) -> set[str]:
        schema = graphql_schema(make_settings(MEMORY, tmp_path, services=spec))
        assert schema is not None
        return {field.name for field in schema.schema_converter.type_map["Query"].definition.fields}

    orders = fields("orders,payments")
    assert "cart" in orders and "recommendations" not in orders and "product" not in orders
    assert fields("graphql") == fields("all") >= orders | {"recommendations", "product"}
    assert graphql_schema(make_settings(MEMORY, tmp_path, services="payments")) is None


def test_consumers_and_duties_are_the_served_contexts(tmp_path: Path) -> None:
    everything = build(make_settings(MEMORY, tmp_path, run_sweeper=True, run_sagas=True,
                                     run_consumers=True, run_relay=True, run_draws=True))
    orders = build(make_settings(MEMORY, tmp_path, services="orders,payments", run_sweeper=True,
                                 run_sagas=True, run_consumers=True, run_relay=True,
                                 run_draws=True))
    assert set(orders.consumer_specs(orders.settings.served)) == {"payment-events"}
    assert len(everything.consumer_specs(everything.settings.served)) > 10
    mine, all_ = worker_duties(orders), worker_duties(everything)
    try:
        names = [d.__qualname__ for d in mine]
        assert "run_sagas" in names and "run_sweeper" not in names  # the sweeper: inventory's
        assert "run_draws_at_close" not in names  # drops' duty
        assert names.count("run_consumer") == 1
        assert {"run_sagas", "run_sweeper", "run_channel_worker", "run_draws_at_close"} <= {
            d.__qualname__ for d in all_}
    finally:
        for coroutine in mine + all_:
            coroutine.close()
