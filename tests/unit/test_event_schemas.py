"""Event JSON Schemas: generated from the models, published under docs/events/, and enforced."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from instock.catalog.model import Product, ProductPatch, Variant
from instock.inventory import model
from instock.inventory.model import Allocation, Line, Reservation, StockLevel, delta
from instock.platform.bus import schemas
from instock.platform.bus.envelope import envelope
from instock.platform.bus.schemas import InvalidEvent, check_schemas, validate, write_schemas

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"
REGENERATE = ("regenerate them with `instock events schemas` (or python -c \"from "
              "instock.platform.bus.schemas import write_schemas; write_schemas('docs/events')\")")
OURS = {"inventory.stock_changed.v1", "inventory.low_stock.v1", "inventory.sold_out.v1",
        "inventory.back_in_stock.v1", "reservation.created.v1", "reservation.committed.v1",
        "reservation.released.v1", "reservation.expired.v1", "product.created.v1",
        "product.updated.v1"}
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def test_published_schemas_match_the_models(tmp_path: Path) -> None:
    write_schemas(tmp_path)
    generated = {p.name: p.read_text() for p in tmp_path.iterdir()}
    published = {p.name: p.read_text() for p in DOCS.iterdir()} if DOCS.is_dir() else {}
    assert sorted(generated) == sorted(published), f"docs/events lists other files; {REGENERATE}"
    stale = [name for name in generated if generated[name] != published[name]]
    assert stale == [], f"a model changed without its schema: {stale}; {REGENERATE}"
    assert check_schemas(DOCS) == []


def test_every_type_is_registered_and_its_schema_is_valid_draft_2020_12() -> None:
    assert set(schemas.event_types()) >= OURS
    for name, schema in schemas.schemas().items():
        Draft202012Validator.check_schema(schema)
        assert schema["properties"]["type"] == {"const": name}
        assert schema["properties"]["data"]["additionalProperties"] is False


def test_every_module_declaring_event_types_is_in_the_registry() -> None:
    """A module that imports DomainEvent and declares a `type: ClassVar[str] = ...`."""
    src = Path(__file__).resolve().parents[2] / "src"
    declaring = {".".join(path.relative_to(src).with_suffix("").parts)
                 for path in (src / "instock").rglob("*.py")
                 if "DomainEvent" in (text := path.read_text())
                 and re.search(r"^\s+type: ClassVar\[str\] = ", text, re.MULTILINE)}
    assert declaring, "the scan finds nothing: it no longer matches how events are declared"
    assert declaring <= set(schemas.EVENT_MODULES), "list them in schemas.EVENT_MODULES"


def test_check_names_changed_missing_and_obsolete_files(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        [f"{name}.json" for name in schemas.event_types()] + ["README.md"])
    assert check_schemas(tmp_path) == []
    (tmp_path / "inventory.sold_out.v1.json").write_text("{}\n")
    (tmp_path / "product.created.v1.json").unlink()
    (tmp_path / "inventory.gone.v1.json").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("not ours")
    assert check_schemas(tmp_path) == ["inventory.gone.v1.json", "inventory.sold_out.v1.json",
                                       "product.created.v1.json"]
    write_schemas(tmp_path)
    assert check_schemas(tmp_path) == []
    assert (tmp_path / "notes.txt").exists() and not (tmp_path / "inventory.gone.v1.json").exists()


def test_output_is_stable_sorted_and_ends_with_a_newline() -> None:
    text = schemas.render(schemas.schemas()["inventory.sold_out.v1"])
    assert text.endswith("}\n") and text.startswith('{\n  "$id"')
    assert text == schemas.render(schemas.envelope_schema(schemas.event_types()[
        "inventory.sold_out.v1"]))


# -- envelopes the model produces validate -------------------------------------------------------


def stock_envelopes() -> list[dict[str, Any]]:
    lvl = StockLevel("A", "wh")
    lvl.apply(model.Movement("A", "wh", delta(on_hand=5), "receive", "L1", date(2027, 1, 1)))
    totals = model.stock_totals([lvl], NOW.date())
    events = [model.stock_changed(lvl, "receive", 3, totals),
              *model.sku_alerts("A", 3, 0, 5, None), *model.sku_alerts("A", 3, 5, 0, None),
              *model.sku_alerts("A", 3, 5, 2, 2)]
    return [envelope(e, "corr", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            for e in events]


def reservation_envelopes() -> list[dict[str, Any]]:
    def opened() -> Reservation:
        return Reservation.open("0192f1c4-0000-7000-8000-000000000001", "web", "c1",
                                [Line("A", 2)], [Allocation("A", "wh", None, 2)], NOW,
                                timedelta(minutes=10))

    committed, released, expired = opened(), opened(), opened()
    committed.commit(NOW)
    released.release()
    expired.expire(NOW + timedelta(hours=1))
    return [envelope(e, None) for r in (committed, released, expired) for e in r.events]


def product_envelopes() -> list[dict[str, Any]]:
    product = Product.create(Product(id="tee", title="Tee", brand="b", category="c",
                                     price=Decimal("19.90"), currency="EUR",
                                     variants=[Variant("tee-s", {"size": "S"})]), set())
    product.update(ProductPatch(attributes={"fit": "boxy"}, price=Decimal("1E+2")))
    return [envelope(e, None) for e in product.events]


def test_envelopes_of_every_type_the_models_produce_validate() -> None:
    docs = stock_envelopes() + reservation_envelopes() + product_envelopes()
    for doc in docs:
        validate(doc)
    assert {doc["type"] for doc in docs} == OURS


# -- and broken ones do not ----------------------------------------------------------------------


def broken(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(stock_envelopes()[0])
    change(doc)
    return doc


@pytest.mark.parametrize(("change", "path"), [
    (lambda d: d["data"].pop("totals"), "$.data"),
    (lambda d: d["data"].update(surprise=1), "$.data"),
    (lambda d: d["data"]["totals"].update(available="7"), "$.data.totals.available"),
    (lambda d: d.update(specversion="0.3"), "$.specversion"),
    (lambda d: d.pop("sequence"), "$"),
    (lambda d: d.update(time="2026-11-21T12:00:00"), "$.time"),  # no offset
    (lambda d: d.update(time="yesterday"), "$.time"),
    (lambda d: d.update(id="not-a-uuid"), "$.id"),
    (lambda d: d.update(traceparent="nope"), "$.traceparent"),
    (lambda d: d.update({"Bad-Name": 1}), "$"),
])
def test_a_broken_envelope_is_invalid_and_the_error_names_where(change: Any, path: str) -> None:
    doc = broken(change)
    with pytest.raises(InvalidEvent) as raised:
        validate(doc)
    assert raised.value.path == path
    assert raised.value.event_type == "inventory.stock_changed.v1"
    assert path in str(raised.value) and raised.value.reason


def test_an_extension_attribute_is_allowed_on_the_envelope() -> None:
    validate(broken(lambda d: d.update(partitionkey="A")))


@pytest.mark.parametrize("doc", [
    {"type": "inventory.teleported.v1"}, {"specversion": "1.0"}, ["not", "an", "object"], None])
def test_unknown_types_and_non_objects_are_invalid(doc: Any) -> None:
    with pytest.raises(InvalidEvent) as raised:
        validate(doc)
    assert isinstance(raised.value, ValueError)
    assert raised.value.path in ("$", "$.type")


def test_the_cheap_model_check_refuses_what_the_schema_refuses() -> None:
    good = {"type": "inventory.sold_out.v1", "data": {"sku": "A", "sku_version": 3,
                                                      "available": 0}}
    schemas.validate_model(good)
    for bad in ({**good, "type": "nope.v1"},
                {**good, "data": {"sku": "A", "sku_version": "x", "available": 0}},
                {**good, "data": {"sku": "A", "sku_version": 3, "available": 0, "extra": 1}}):
        with pytest.raises(schemas.InvalidEvent):
            schemas.validate_model(bad)


def test_a_valid_envelope_is_passed_by_the_compiled_schema_and_a_broken_one_explained(
        monkeypatch: pytest.MonkeyPatch) -> None:
    checked: list[str] = []
    real = schemas._validator

    def counting(event_type: str) -> Any:
        checked.append(event_type)
        return real(event_type)

    monkeypatch.setattr(schemas, "_validator", counting)
    doc = stock_envelopes()[0]
    assert doc["type"] == "inventory.stock_changed.v1"
    validate(doc)
    validate(copy.deepcopy(dict(reversed(list(doc.items())))))  # the same content, keys reordered
    assert checked == []  # the compiled schema passed both: the slow reference was not asked
    changed = copy.deepcopy(doc)
    changed["data"]["totals"]["available"] = "7"  # same id, other content: checked, refused
    with pytest.raises(InvalidEvent) as refused:
        validate(changed)
    assert checked == ["inventory.stock_changed.v1"]  # the reference names the problem
    assert refused.value.path == "$.data.totals.available"


def _mutations(doc: Any) -> Iterator[Any]:
    """Copies of `doc` with one leaf replaced by a wrong-looking value or one key dropped."""
    wrong: list[Any] = [None, 7, -1, "", "x", "2026-11-21", "2026-11-21T12:00:00", [], {},
                        "0190d2a4c1e97c3d8b1a2e3f4a5b6c7d", "not a uri ^"]

    def walk(node: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], Any]]:
        keys = node.keys() if isinstance(node, dict) else range(len(node))
        for key in keys:
            child = node[key]
            if isinstance(child, dict | list) and child:
                yield from walk(child, (*path, key))
            for value in wrong:
                yield (*path, key), value
            if isinstance(node, dict):
                yield (*path, key), KeyError

    for path, value in walk(doc, ()):
        copied = copy.deepcopy(doc)
        parent = copied
        for key in path[:-1]:
            parent = parent[key]
        if value is KeyError:
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        yield copied


def test_the_compiled_schema_never_passes_what_the_reference_refuses() -> None:
    tried = refused = 0
    for doc in [*stock_envelopes(), *reservation_envelopes(), *product_envelopes()]:
        reference = schemas._validator(doc["type"])
        compiled = schemas._compiled(doc["type"])
        for mutated in _mutations(doc):
            tried += 1
            if not reference.is_valid(mutated):
                refused += 1
                assert not compiled.is_valid(mutated), mutated
    assert refused > 100 and tried > refused  # the mutations did break things, and not all
