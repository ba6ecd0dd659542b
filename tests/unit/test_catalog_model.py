"""The pure catalog model: product versions and what a product update changes and announces."""

from __future__ import annotations

from decimal import Decimal

import pytest

from instock.catalog.events import ProductCreated, ProductUpdated
from instock.catalog.model import CatalogError, Product, ProductPatch, Variant
from instock.platform.bus.envelope import envelope


def created() -> Product:
    return Product.create(Product(id="tee", title="Tee", brand="North", category="tops",
                                  price=Decimal("20"), currency="EUR",
                                  variants=[Variant("tee-s"), Variant("tee-m")]), set())


def test_a_new_product_is_version_one_and_announces_its_state() -> None:
    product = created()
    [event] = product.events
    assert isinstance(event, ProductCreated)
    assert (product.version, event.version, event.skus) == (1, 1, ["tee-s", "tee-m"])
    doc = envelope(event, None)
    assert (doc["subject"], doc["sequence"], doc["data"]["price"]) == ("tee", 1, "20")


def test_an_update_changes_only_what_it_names_and_bumps_the_version() -> None:
    product = created()
    changed = product.update(ProductPatch(title="Heavy tee", price=Decimal("24.50"),
                                          brand="North"))  # the brand is as it was
    assert changed == ["price", "title"]
    assert (product.title, product.brand, product.price, product.version) == (
        "Heavy tee", "North", Decimal("24.50"), 2)
    event = product.events[-1]
    assert isinstance(event, ProductUpdated)
    assert (event.version, event.changed, event.title, event.sequence) == (
        2, ["price", "title"], "Heavy tee", 2)
    assert event.model_dump(mode="json")["price"] == "24.50"


def test_an_update_that_changes_nothing_is_no_change() -> None:
    product = created()
    assert product.update(ProductPatch(title="Tee", price=Decimal("20.00"))) == []
    assert (product.version, len(product.events)) == (1, 1)


@pytest.mark.parametrize("price", [Decimal("-1"), Decimal("NaN"), Decimal("Infinity")])
def test_an_update_with_a_bad_price_is_refused_and_changes_nothing(price: Decimal) -> None:
    product = created()
    with pytest.raises(CatalogError) as raised:
        product.update(ProductPatch(title="Other", price=price))
    assert raised.value.field == "price"
    assert (product.title, product.version) == ("Tee", 1)


def test_amounts_are_fixed_point_text_even_when_stored_normalised() -> None:
    product = created()
    product.update(ProductPatch(price=Decimal("100").normalize()))  # Decimal('1E+2')
    assert product.events[-1].model_dump(mode="json")["price"] == "100"
