"""Importing this registers every table on the shared metadata (migrations, schema checks)."""

import instock.catalog.store
import instock.inventory.store
import instock.platform.bus.inbox
import instock.platform.bus.outbox
import instock.platform.idempotency
import instock.recommendations.store
import instock.waitlist.store  # noqa: F401
