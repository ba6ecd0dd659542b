"""Importing this registers every table on the shared metadata (migrations, schema checks)."""

import instock.analytics.store
import instock.catalog.store
import instock.channels.store
import instock.customers.store
import instock.drops.store
import instock.experiments.store
import instock.identity.store
import instock.inventory.store
import instock.notifications.store
import instock.orders.store
import instock.payments.store
import instock.platform.bus.inbox
import instock.platform.bus.outbox
import instock.platform.idempotency
import instock.platform.inbound
import instock.polls.store
import instock.privacy.store
import instock.recommendations.store
import instock.reconciliation.store
import instock.waitlist.store
import instock.webhooks.store  # noqa: F401
