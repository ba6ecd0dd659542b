"""Catalog use cases. Other contexts ask this service, never the catalog tables."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from decimal import Decimal

from instock.catalog import store
from instock.catalog.events import PRODUCT_EVENTS
from instock.catalog.model import CatalogError, Product, ProductPatch
from instock.platform.bus import Envelope, outbox
from instock.platform.db import Database, utcnow
from instock.platform.errors import AlreadyExists, NotFound, PreconditionFailed, ValidationFailed
from instock.platform.memo import Memo
from instock.platform.readcache import VersionedCache

# How long a process trusts what it knows of which bundles a SKU is part of. A recipe never
# changes, but a new bundle may take an existing SKU as a component, in another process: until
# this has passed there, that process's changes of the SKU do not move the new kit.
KITS_CACHE_SECONDS = 5.0


class CatalogService:
    def __init__(self, db: Database, currency: str = "EUR",
                 read_cache_seconds: float = 0.0) -> None:
        self.db = db
        self.currency = currency  # a new product's, when its merchandiser names none
        self._recipes: dict[str, dict[str, int]] = {}  # known SKU -> components ({} if none)
        # Component SKU -> the bundles made of it, every bundle at once (see KITS_CACHE_SECONDS):
        # one small query a few seconds, where one a SKU looked at went with a write in two.
        self._kits = Memo(self._load_kits, KITS_CACHE_SECONDS)
        # Products for pages that may read a copy (`get_products(cached=)`); never mutated.
        self._copies: VersionedCache[Product] = VersionedCache(read_cache_seconds)

    async def create_product(self, product: Product, correlation_id: str | None = None) -> Product:
        async with self.db.write() as conn:
            if await store.product_exists(conn, product.id):
                raise AlreadyExists(f"product {product.id} already exists")
            taken = await store.existing_skus(conn, (v.sku for v in product.variants))
            if taken:
                raise AlreadyExists(f"SKUs already exist: {', '.join(sorted(taken))}")
            components = {c for v in product.variants for c in v.components}
            own = {v.sku for v in product.variants}
            missing = components - own - await store.existing_skus(conn, components)
            if missing:
                raise ValidationFailed("variants.components",
                                       f"unknown component SKUs: {', '.join(sorted(missing))}")
            known_bundles = set(await store.recipes(conn, components))
            try:
                Product.create(product, known_bundles)
            except CatalogError as exc:
                raise ValidationFailed(exc.field, exc.reason) from exc
            await store.insert_product(conn, product, utcnow())
            await outbox.add(conn, product.events, correlation_id)
        if components:  # this process sees its new kits at once
            self._kits.forget()
        return product

    async def update_product(self, product_id: str, patch: ProductPatch,
                             expected_version: int | None = None,
                             correlation_id: str | None = None) -> Product:
        """Change product-level fields; `expected_version` (If-Match) makes it a
        compare-and-swap. The product.updated event is written in the same transaction."""
        async with self.db.write() as conn:
            product = await store.get_product(conn, product_id, lock=True)
            if product is None:
                raise NotFound(f"product {product_id} does not exist")
            if expected_version is not None and product.version != expected_version:
                raise PreconditionFailed(f"product {product_id} is at version "
                                         f"{product.version}, not {expected_version}")
            version_before = product.version
            try:
                changed = product.update(patch)
            except CatalogError as exc:
                raise ValidationFailed(exc.field, exc.reason) from exc
            if changed:
                await store.update_product(conn, product, version_before)
                await outbox.add(conn, product.events, correlation_id)
        return product

    async def get_product(self, product_id: str) -> Product:
        async with self.db.read() as conn:
            product = await store.get_product(conn, product_id)
        if product is None:
            raise NotFound(f"product {product_id} does not exist")
        return product

    async def get_products(self, product_ids: Iterable[str], *,
                           cached: bool = False) -> dict[str, Product]:
        """The products that exist among `product_ids`, read together. `cached`: a copy kept
        fresh by the event stream will do (see `platform.readcache`); the caller must not
        change it."""
        if not cached:
            return await self._read_products(product_ids)
        found: dict[str, Product] = {}
        missing = []
        for product_id in product_ids:
            copy = self._copies.get(product_id)
            if copy is None:
                missing.append(product_id)
            else:
                found[product_id] = copy
        if missing:
            read = await self._read_products(missing)
            for product in read.values():
                self._copies.put(product.id, product, product.version)
            found.update(read)
        return found

    def heard(self, envelopes: Iterable[Envelope]) -> None:
        """Events committed here or heard from the bus: product copies they made old go."""
        for envelope in envelopes:
            if envelope.get("type") in PRODUCT_EVENTS and envelope.get("sequence") is not None:
                self._copies.heard(str(envelope.get("subject")), int(envelope["sequence"]))

    async def _read_products(self, product_ids: Iterable[str]) -> dict[str, Product]:
        async with self.db.read() as conn:
            found = await store.get_products(conn, product_ids)
        recipes = await self.recipes(sku for _, skus in found.values() for sku in skus)
        for product, _ in found.values():
            product.variants = [replace(v, components=recipes.get(v.sku, {}))
                                for v in product.variants]
        return {product_id: product for product_id, (product, _) in found.items()}

    async def list_product_ids(self, limit: int = 100, after: str | None = None, *,
                               brand: str | None = None,
                               category: str | None = None) -> list[str]:
        """Product ids in id order after `after`, optionally of one brand or category."""
        async with self.db.read() as conn:
            return await store.list_products(conn, limit, after, brand, category)

    async def unknown_skus(self, skus: Iterable[str]) -> set[str]:
        return (await self.lookup(skus))[0]

    async def lookup(self, skus: Iterable[str]) -> tuple[set[str], dict[str, dict[str, int]]]:
        """Which of the SKUs do not exist, and the compositions of those that are bundles:
        one call, as every reservation needs both."""
        wanted = set(skus)
        await self._learn(wanted)
        return (self._unknown(wanted),
                {sku: recipe for sku in wanted if (recipe := self._recipes.get(sku))})

    async def prices(self, skus: Iterable[str]) -> dict[str, tuple[Decimal, str]]:
        """Price and currency per SKU; a SKU that does not exist is absent."""
        async with self.db.read() as conn:
            return await store.prices(conn, skus)

    async def recipes(self, skus: Iterable[str]) -> dict[str, dict[str, int]]:
        """Bundle compositions of those SKUs that are bundles."""
        return (await self.lookup(skus))[1]

    async def kits_containing(self, skus: Iterable[str]) -> dict[str, dict[str, int]]:
        """The bundles any of these SKUs is a component of, with their recipes.

        Asked on every stock write (a kit's count moves with its components), so it is answered
        from memory: what every bundle is made of, read again after KITS_CACHE_SECONDS.
        """
        index = await self._kits.get(None)
        kits = {kit for sku in skus for kit in index.get(sku, ())}
        return await self.recipes(kits) if kits else {}

    async def _load_kits(self, _: None) -> dict[str, frozenset[str]]:
        async with self.db.read() as conn:
            return await store.bundles_by_component(conn)

    def _unknown(self, skus: set[str]) -> set[str]:
        # Not `skus - self._recipes.keys()`: a set minus a dict's keys walks every key the
        # process knows (~40 µs at 3,000 SKUs, and on every stock write), this walks the few
        # SKUs asked about.
        return {sku for sku in skus if sku not in self._recipes}

    async def _learn(self, skus: set[str]) -> None:
        """Remember which SKUs exist and what bundles are made of.

        Safe to keep for the life of the process, in every process: a SKU is never deleted and
        a bundle's composition never changes once created. Unknown SKUs are asked again.
        """
        missing = self._unknown(skus)
        if not missing:
            return
        async with self.db.read() as conn:
            existing = await store.existing_skus(conn, missing)
            kits = await store.recipes(conn, existing) if existing else {}
        for sku in existing:
            self._recipes[sku] = kits.get(sku, {})
