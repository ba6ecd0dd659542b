"""The demo catalogue: a streetwear drop and a cosmetics line whose stock sits in lots; and a
queue drop of the sneakers a newcomer can watch open a couple of minutes after `make run`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from instock.app import Container
from instock.catalog.model import Product, Variant
from instock.drops.model import Drop, Mode
from instock.inventory.model import Adjustment, AdjustmentKind, Channel
from instock.platform.db import utcnow
from instock.platform.entry_context import EntryContext
from instock.platform.errors import AlreadyExists

SEED = EntryContext(actor="seed:demo", reason="demo data")
# The demo's queue drop: the Runner One sneakers (25 of each size, one per customer), opening
# DROP_LEAD after the demo starts, admitting DROP_RATE shoppers a second, for DROP_LENGTH.
DROP_SKUS = tuple(f"RUN-1-{size}" for size in range(40, 46))
DROP_LEAD = timedelta(minutes=2)
DROP_LENGTH = timedelta(minutes=15)
DROP_RATE = 2.0


def demo_products(currency: str) -> list[Product]:
    def product(id: str, title: str, brand: str, category: str, price: str, tags: list[str],
                variants: list[Variant], **attributes: str) -> Product:
        return Product(id=id, title=title, brand=brand, category=category, price=Decimal(price),
                       currency=currency, tags=tags, attributes=attributes, variants=variants,
                       replenishable=category == "skincare")

    return [
        product("hoodie-drop-01", "Heavyweight Drop Hoodie", "Northline", "hoodies", "129.00",
                ["drop", "streetwear"],
                [Variant(f"HOOD-01-{size}", {"size": size, "colour": "black"})
                 for size in ("S", "M", "L", "XL")], material="cotton"),
        product("runner-one", "Runner One", "Stride", "sneakers", "189.99",
                ["drop", "limited"],
                [Variant(f"RUN-1-{size}", {"size": str(size), "colour": "white"})
                 for size in (40, 41, 42, 43, 44, 45)]),
        product("vitamin-c-serum", "Vitamin C Serum 30 ml", "Lumen", "skincare", "34.50",
                ["cosmetics", "vegan"], [Variant("SERUM-C-30", {"volume": "30ml"})]),
        product("lip-balm", "Lip Balm", "Lumen", "skincare", "9.90", ["cosmetics"],
                [Variant("BALM-01", {"flavour": "vanilla"})]),
        product("glow-kit", "Glow Kit (serum + 2 balms)", "Lumen", "skincare", "49.00",
                ["cosmetics", "bundle"],
                [Variant("GLOW-KIT", {"kind": "kit"}, {"SERUM-C-30": 1, "BALM-01": 2})]),
    ]


async def seed_demo(c: Container) -> bool:
    """Load the demo once; False when it is already there."""
    try:
        await c.inventory.create_location("wh-berlin", "Berlin warehouse", "warehouse")
    except AlreadyExists:
        return False
    await c.inventory.create_location("store-paris", "Paris flagship store", "store")
    await c.inventory.save_channel(Channel("app", "Mobile app", 90, ["wh-berlin"]))
    for product in demo_products(c.settings.currency):
        await c.catalog.create_product(product)
    today = utcnow().date()

    async def receive(sku: str, location: str, quantity: int, lot: str | None = None,
                      days: int = 0) -> None:
        await c.inventory.adjust(Adjustment(
            sku, location, AdjustmentKind.RECEIVE, quantity, lot,
            today + timedelta(days=days) if lot else None), SEED)

    for hoodie, quantity in (("S", 40), ("M", 80), ("L", 80), ("XL", 30)):
        await receive(f"HOOD-01-{hoodie}", "wh-berlin", quantity)
    for shoe in range(40, 46):
        await receive(f"RUN-1-{shoe}", "wh-berlin", 25)
        await c.inventory.set_policy(f"RUN-1-{shoe}", per_customer_limit=1,
                                     low_stock_threshold=5)
    await receive("HOOD-01-M", "store-paris", 10)
    await receive("SERUM-C-30", "wh-berlin", 60, "LC-2401", days=45)
    await receive("SERUM-C-30", "wh-berlin", 120, "LC-2405", days=300)
    await receive("SERUM-C-30", "store-paris", 12, "LC-2401", days=45)
    await receive("BALM-01", "wh-berlin", 200, "LB-77", days=500)
    return True


async def seed_demo_drop(c: Container) -> Drop:
    """The demo's queue drop, scheduled unless one is live. Idempotent: while a drop of the
    sneakers has not ended (started or not), that one is the demo's drop and nothing is made;
    once it has ended (DROP_LENGTH after its start) the sneakers sell as any others, and the
    next run schedules a fresh drop DROP_LEAD ahead. A drop is never moved: shoppers may hold
    places in it."""
    live = await c.drops.live_with(DROP_SKUS[0])
    if live is not None:
        return live
    starts = c.drops.clock().replace(microsecond=0) + DROP_LEAD
    drop = Drop(id="", skus=DROP_SKUS, starts_at=starts, mode=Mode.QUEUE,
                admit_per_second=DROP_RATE, per_customer_limit=1, channels=(),
                ends_at=starts + DROP_LENGTH, seed="",  # id, seed, created_at: the service's
                created_at=starts, created_by=SEED.actor)
    return await c.drops.schedule(drop)
