"""What runs behind the API, as settings ask: the relay, consumers, sweeper, sagas, webhook
delivery, channels and reconciliation. An API process of the embedded default runs them all
beside serving; a fleet's API processes turn them off and `instock worker all` runs them."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from instock.channels.worker import ChannelWorker
from instock.inventory.service import InventoryService
from instock.notifications.service import NotificationsService
from instock.orders.saga import SagaRunner
from instock.platform.bus.consumer import Consumer
from instock.platform.retry import keep_running
from instock.webhooks.service import WebhooksService

if TYPE_CHECKING:  # the composition root imports this module
    from instock.app import Container


async def run_sweeper(inventory_service: InventoryService, interval: float) -> None:
    """Sweep every `interval` seconds; a failed round is logged and the next one comes."""
    await keep_running(inventory_service.sweep, "sweeper", pause=interval)


async def run_analytics_upkeep(container: Container) -> None:
    """Analytics' monthly partitions made ahead and dropped past retention, once a day."""
    await keep_running(lambda: container.analytics.keep_months(
        container.settings.analytics_retention_months), "analytics_upkeep", pause=86_400)


async def run_stockout_alerts(container: Container) -> None:
    """Check every SKU for a stock-out before its next receipt, every few minutes."""
    settings = container.settings
    await keep_running(lambda: container.analytics.predict_stockouts(
        settings.analytics_alert_horizon_days), "stockout_alerts",
        pause=settings.analytics_alert_seconds)


async def run_draw_announcer(container: Container, every: float = 5.0) -> None:
    """Tell entrants of drawn drops of the rights that rolled over to them (drop.won.v1, once
    each). Every few seconds: a right holds from its window's start whether or not it has been
    announced, so a late announcement costs the winner only notice."""
    await keep_running(container.drops.draws.announce, "draw_announcer", pause=every)


async def run_draws_at_close(container: Container, every: float) -> None:
    """Draw each draw drop once its entries close, within `every` seconds, whoever else runs
    this too (the stored draw is one: drops/draws.py). POST /v1/drops/{id}/draw stays for
    staff who will not wait."""
    await keep_running(container.drops.draws.draw_closed, "draws_at_close", pause=every)


async def run_drop_capacity(container: Container, every: float) -> None:
    """Set each capacity drop's rate from its measured checkouts, once per `every` seconds
    (looked at twice as often, so no period is missed; the stored segment is one whoever else
    runs this: drops/capacity.py)."""
    await keep_running(container.drops.capacity.recompute, "drop_capacity", pause=every / 2)


async def publish_refusals(inventory: InventoryService, every: float = 5.0) -> None:
    """An API process publishes the demand it refused for want of stock, every few seconds
    (whatever duties it runs: the counts are its own)."""
    await keep_running(inventory.publish_refusals, "publish_refusals", pause=every)


async def watch_oversell(inventory: InventoryService, every: float) -> None:
    """Keep this process's instock_oversold_units current: a canary (`instock fleet canary`,
    or the Argo analysis) reads it from every process."""
    await keep_running(inventory.sample_oversold, "oversell_watch", pause=every)


async def run_webhook_delivery(webhooks: WebhooksService) -> None:
    """Deliver outbound webhooks forever; a failed round is logged and the worker goes on."""
    await keep_running(webhooks.run, "webhook_delivery")


async def run_channel_worker(container: Container) -> None:
    """Push marketplace listings and carry out marketplace orders, forever."""
    worker = ChannelWorker(container.channels,
                           rate_per_second=container.settings.channel_push_rate_per_second)
    await keep_running(worker.run, "channel_worker")


async def run_sagas(runner: SagaRunner, pause: float) -> None:
    """Take over due sagas (a checkout whose process died, a step waiting for a provider)."""
    await keep_running(runner.run_due, "sagas", pause=pause)


async def run_notifications(notifications: NotificationsService) -> None:
    """Send due notifications forever; a failed round is logged and the sender goes on."""
    await keep_running(notifications.run, "notifications")


async def run_consumer(consumer: Consumer) -> None:
    """Consume forever; a broken bus connection is logged and the consumer starts again."""
    await keep_running(consumer.run, "consumer", origin=f"consumer:{consumer.name}",
                       consumer=consumer.name)


# The settings that switch `worker_duties` on, one each (keep the two together).
WORKER_DUTY_SETTINGS = ("run_sweeper", "run_relay", "run_consumers", "run_sagas",
                        "run_webhook_delivery", "run_reconciler", "run_back_in_stock_waves",
                        "run_notifications", "run_draws", "run_drop_capacity")


def api_only_env() -> dict[str, str]:
    """The environment that turns every worker duty off: a fleet's API processes."""
    return {f"INSTOCK_{name.upper()}": "false" for name in WORKER_DUTY_SETTINGS}


def worker_duties(container: Container) -> list[Coroutine[Any, Any, None]]:
    """The work behind the API, as settings ask, of the process's services (instock/services.py;
    the relay serves every context's outbox): an API process of the embedded default does it
    all itself; a fleet's API processes turn it off and run `instock worker all` beside."""
    settings = container.settings
    served = settings.served
    work: list[Coroutine[Any, Any, None]] = []
    if settings.run_sweeper and "inventory" in served:
        work.append(run_sweeper(container.inventory, settings.sweeper_interval_seconds))
    if settings.run_relay:
        work.append(container.relay().run())
    if settings.run_consumers:
        work.extend(run_consumer(container.consumer(name))
                    for name in container.consumer_specs(served))
        if "channels" in served:
            work.append(run_channel_worker(container))
        if "drops" in served:
            work.append(run_draw_announcer(container))
        if "analytics" in served:
            work.append(run_analytics_upkeep(container))
            work.append(run_stockout_alerts(container))
    if settings.run_sagas and "orders" in served:
        work.append(run_sagas(container.orders.runner, settings.saga_poll_seconds))
    if settings.run_webhook_delivery and "webhooks" in served:
        work.append(run_webhook_delivery(container.webhooks))
    if settings.run_reconciler and "reconciliation" in served:
        work.append(container.reconciliation.run())
    if settings.run_back_in_stock_waves and "waitlist" in served:
        work.append(container.waitlist.run_waves())
    if settings.run_notifications and "notifications" in served:
        work.append(run_notifications(container.notifications))
    if settings.run_draws and "drops" in served:
        work.append(run_draws_at_close(container, settings.drop_draw_seconds))
    if settings.run_drop_capacity and "drops" in served:
        work.append(run_drop_capacity(container, settings.drop_capacity_seconds))
    return work
