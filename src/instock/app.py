"""The composition root: builds adapters from settings, wires the contexts, returns the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from opentelemetry.sdk.trace.export import SpanExporter
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

import instock.analytics.api
import instock.catalog.api
import instock.channels.api
import instock.customers.api
import instock.customers.store
import instock.drops.api
import instock.drops.store
import instock.experiments.api
import instock.experiments.store
import instock.identity.api
import instock.inventory.api
import instock.inventory.store
import instock.live.api
import instock.notifications.api
import instock.notifications.store
import instock.orders.api
import instock.orders.store
import instock.payments.api
import instock.polls.api
import instock.polls.store
import instock.privacy.api
import instock.recommendations.api
import instock.recommendations.store
import instock.reconciliation.api
import instock.waitlist.api
import instock.waitlist.store
import instock.webhooks.api
import instock.webhooks.store
from instock import rate_limits, services
from instock.analytics.service import AnalyticsService
from instock.catalog.service import CatalogService
from instock.channels.connector import connector_factory
from instock.channels.service import ChannelsService
from instock.config import Settings, get_settings
from instock.customers.service import CustomersService
from instock.drops.declines import PAYMENT_FAILURES
from instock.drops.room import RoomSettings
from instock.drops.service import DropSettings, DropsService
from instock.drops.tokens import DropTokens
from instock.experiments.service import CONVERSIONS, ExperimentsService
from instock.graphql_schema import graphql_schema
from instock.identity.service import IdentityService
from instock.inventory.grpc import SERVICE_NAME as INVENTORY_RPC
from instock.inventory.grpc import InventoryServicer, RemoteInventory
from instock.inventory.port import Inventory
from instock.inventory.service import InventoryService
from instock.live import model as live_model
from instock.live.events import Update
from instock.live.graphql import channel_stock
from instock.live.service import LiveHub
from instock.notifications.service import NotificationsService
from instock.notifications.wiring import notifications_service
from instock.orders.saga import SagaRunner, SagaSettings
from instock.orders.service import OrderSettings, OrdersService
from instock.payments.providers import make_provider
from instock.payments.service import PAYMENT_EVENTS, PaymentsService
from instock.platform import errors, health, routing, telemetry, tracing
from instock.platform.auth import TokenAuthority, load_or_create_secret
from instock.platform.bus import Bus, Envelope, connect, schemas
from instock.platform.bus.consumer import Consumer, ConsumerSpec
from instock.platform.bus.health import BackboneMonitor
from instock.platform.bus.relay import Relay
from instock.platform.cache import grouped_cache
from instock.platform.db import Database
from instock.platform.drain import CloseWhileDraining, Drain, Duties, readiness_refusal
from instock.platform.edges import ANY, EdgeMiddleware, EdgeRules
from instock.platform.flags import versioned_flags
from instock.platform.graphql import (
    InstockGraphQLRouter,
    Results,
)
from instock.platform.idempotency import IdempotencyMiddleware
from instock.platform.outbound import OutboundGuard
from instock.platform.personal import TABLES as PLATFORM_TABLES
from instock.platform.personal import PlatformTraces
from instock.platform.ratelimit import RateLimitMiddleware
from instock.platform.rpc import CallPolicy, RpcServer, start_server
from instock.platform.runtime import tune_for_throughput
from instock.platform.tokens import hmac_key, private_key, public_key
from instock.polls.service import PollSettings, PollsService
from instock.privacy.model import PersonalData
from instock.privacy.service import PrivacyService, load_keyring
from instock.recommendations.engine import MODEL_NAMES
from instock.recommendations.grpc import SERVICE_NAME as RECOMMENDATIONS_RPC
from instock.recommendations.grpc import RecommendationsServicer
from instock.recommendations.service import (
    AVAILABILITY,
    CATALOGUE,
    POLL_ANSWERS,
    PROFILES,
    RecommendationsService,
    RecsSettings,
)
from instock.recommendations.stream_files import behaviour_files
from instock.reconciliation.model import RepairPolicy
from instock.reconciliation.service import ReconcileSettings, ReconciliationService
from instock.waitlist.service import WaitlistService, WaveSettings
from instock.web import pages
from instock.webhooks.service import FANOUT, Policy, WebhooksService
from instock.workers import publish_refusals, watch_oversell, worker_duties

log = structlog.get_logger(__name__)

@dataclass
class Container:
    """Everything built from settings, for the app and for CLI commands alike."""

    settings: Settings
    db: Database
    tokens: TokenAuthority
    catalog: CatalogService
    inventory: InventoryService
    waitlist: WaitlistService
    bus: Bus
    webhooks: WebhooksService
    channels: ChannelsService
    payments: PaymentsService
    orders: OrdersService
    experiments: ExperimentsService
    recommendations: RecommendationsService
    backbone: BackboneMonitor
    reconciliation: ReconciliationService
    privacy: PrivacyService
    customers: CustomersService
    platform_traces: PlatformTraces
    polls: PollsService
    notifications: NotificationsService
    identity: IdentityService
    analytics: AnalyticsService
    drops: DropsService

    def relay(self) -> Relay:
        # The relay checks events against the models the published schemas are generated
        # from (~3 µs each, not ~200 µs: a drop writes thousands a second); consumers, which
        # take events from the bus, check the full JSON Schema.
        return Relay(self.db, self.bus, validate=schemas.validate_model,
                     retention=timedelta(seconds=self.settings.outbox_retention_seconds))

    def consumer_specs(self, contexts: frozenset[str] = services.ALL) -> dict[str, ConsumerSpec]:
        """The durable consumers of the given contexts (every one of this code base by
        default), by name."""
        by_context = {
            "recommendations": [AVAILABILITY, CATALOGUE, POLL_ANSWERS, PROFILES,
                                *self._stream_files()],
            "waitlist": [self.waitlist.notifier()],
            "notifications": [self.notifications.consumer()], "webhooks": [FANOUT],
            "channels": [self.channels.stock_consumer(), self.channels.orders_consumer()],
            "payments": [PAYMENT_EVENTS], "experiments": [CONVERSIONS],
            "customers": [self.customers.poll_answers_consumer(),
                          self.customers.behaviour_consumer()],
            "analytics": [self.analytics.consumer()],
            "drops": [self.drops.draws.claims_consumer(), PAYMENT_FAILURES,
                      self.drops.capacity.consumer()]}
        return {spec.name: spec for context, specs in by_context.items()
                if context in contexts for spec in specs}

    def _stream_files(self) -> list[ConsumerSpec]:
        """Behaviour events as files for `instock recs stream`, when a directory is set."""
        folder = self.settings.recs_stream_dir
        return [behaviour_files(folder)] if folder is not None else []

    def consumer(self, name: str) -> Consumer:
        return Consumer(self.db, self.bus, self.consumer_specs()[name],
                        attempts=self.settings.consumer_attempts,
                        redeliver_after=self.settings.consumer_redeliver_seconds,
                        linger=self.settings.consumer_linger_seconds,
                        validate=schemas.validate)

    async def close(self) -> None:
        if isinstance(self.orders.inventory, RemoteInventory):
            await self.orders.inventory.close()
        await self.experiments.close()
        await self.drops.rooms.close()
        await self.recommendations.cache.close()
        await self.inventory.sold_out.close()
        await self.payments.provider.close()
        await self.notifications.close()
        await self.bus.close()
        await self.db.dispose()
        tracing.shutdown()  # exports what is still pending


def build(settings: Settings | None = None, span_exporter: SpanExporter | None = None
          ) -> Container:
    """The adapters and services; `span_exporter` (tests) receives every span besides the
    exporters the settings ask for."""
    settings = settings or get_settings()
    # First: the clients built below are traced only if tracing is on by then.
    tracing.configure(otlp_endpoint=settings.otlp_endpoint, console=settings.trace_console,
                      sample_ratio=settings.trace_sample_ratio,
                      service_name=settings.service_name, exporter=span_exporter)
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    tracing.instrument_engines(db.engines)
    tokens_secret = load_or_create_secret(settings.jwt_secret, settings.state_dir)
    tokens = token_authority(settings, tokens_secret)
    catalog_service = CatalogService(db, settings.currency, settings.read_cache_seconds)
    inventory_service = InventoryService(
        db, catalog_service, default_ttl_seconds=settings.reservation_ttl_seconds,
        max_ttl_seconds=settings.reservation_max_ttl_seconds,
        conflict_retries=settings.conflict_retries, batch_max=settings.reserve_batch_max,
        read_cache_seconds=settings.read_cache_seconds,
        # Namespaced by database: flags carry that database's versions, and one Redis may
        # serve several deployments (or test databases).
        sold_out=versioned_flags(settings.redis_url, settings.sold_out_ttl_seconds,
                                 f"sold_out:{db.url.database}"))
    # Orders call inventory where it runs: in this process, or over gRPC when this process
    # does not serve it and the settings say where it is served.
    inventory: Inventory = inventory_service
    if "inventory" not in settings.served and settings.inventory_url:
        inventory = RemoteInventory(settings.inventory_url, tokens, CallPolicy(
            settings.grpc_deadline_seconds, settings.grpc_attempts))
    guard = outbound_guard(settings)
    webhooks = WebhooksService(db, Policy(
        attempts=settings.webhook_attempts, backoff_base=settings.webhook_backoff_base_seconds,
        backoff_max=settings.webhook_backoff_max_seconds,
        timeout=settings.webhook_timeout_seconds), guard=guard)
    payments = PaymentsService(
        db, make_provider(settings),
        webhook_tolerance_seconds=settings.payments_webhook_tolerance_seconds)
    runner = SagaRunner(db, inventory, payments, SagaSettings(
        settings.saga_lease_seconds, settings.saga_max_attempts, settings.saga_kill_after))
    orders = OrdersService(db, catalog_service, inventory, runner, OrderSettings(
        settings.currency, settings.cart_hold_seconds, settings.checkout_hold_seconds,
        settings.saga_inline))
    channels = ChannelsService(
        db, inventory_service,
        connectors=connector_factory(settings.connector_timeout_seconds,
                                     settings.connector_attempts, guard), guard=guard,
        webhook_tolerance_seconds=settings.marketplace_webhook_tolerance_seconds,
        order_attempts=settings.channel_order_attempts, orders=orders)
    recommendations = RecommendationsService(
        db, grouped_cache(settings.redis_url, settings.recs_cache_ttl_seconds,
                          f"recs:{db.url.database}"),
        RecsSettings(settings.recs_cache_ttl_seconds, settings.recs_refit_seconds,
                     settings.recs_history_limit, settings.recs_artefacts,
                     settings.recs_fit_budget_seconds))
    experiments = ExperimentsService(db, models=MODEL_NAMES,
                                     stored_actions=recommendations.actions_of)
    # Each list names the experiment variant its shopper is in (set here: each needs the other).
    recommendations.assign = experiments.assign
    privacy = PrivacyService(db, load_keyring(settings.pii_master_keys,
                                              settings.pii_master_key_file, settings.state_dir))
    customers = CustomersService(db, privacy)
    polls = PollsService(db, PollSettings(settings.poll_minutes_between))
    drops = DropsService(
        db, catalog_service, inventory_service,
        DropTokens(tokens_secret, settings.jwt_issuer,
                   pass_ttl_seconds=settings.drop_pass_seconds,
                   ticket_ttl_seconds=settings.drop_ticket_seconds),
        DropSettings(settings.drop_pass_seconds, settings.drop_ticket_seconds,
                     settings.drop_gate_refresh_seconds, settings.drop_proof_bits,
                     settings.drop_challenge_seconds,
                     RoomSettings(settings.drop_room_tick_seconds,
                                  settings.drop_room_push_seconds),
                     settings.drop_capacity_seconds))
    # Every reservation of a drop's SKUs asks the drops context first, wherever it comes from
    # (REST, GraphQL, the checkout saga, gRPC): inventory holds the port, never drops' tables.
    inventory_service.gate = drops.gate
    db.on_commit(partial(keep_copies_fresh, catalog_service, inventory_service, drops))
    container = Container(settings, db, tokens, catalog_service, inventory_service,
                          WaitlistService(db, catalog_service, inventory_service, WaveSettings(
                              settings.back_in_stock_wave_factor,
                              settings.back_in_stock_wave_seconds)),
                          connect(settings.bus_url),
                          webhooks, channels, payments, orders, experiments, recommendations,
                          BackboneMonitor(db, []), ReconciliationService(
                              db, inventory_service, catalog_service, orders, recommendations,
                              channels, reconcile_settings(settings)),
                          privacy, customers, PlatformTraces(db),
                          polls,
                          notifications_service(settings, db, customers, tokens_secret),
                          IdentityService(db, tokens,
                                          token_ttl_seconds=settings.oauth_token_ttl_seconds,
                                          revocation_poll_seconds=(
                                              settings.oauth_revocation_poll_seconds)),
                          AnalyticsService(db, catalog_service, inventory_service,
                                           recommendations, polls),
                          drops)
    container.backbone.consumers = list(container.consumer_specs())
    privacy.registry = personal_data(container)
    return container


def personal_data(c: Container) -> list[PersonalData]:
    """Where each context keeps data about a person: export and erasure both walk this list
    (a test fails when a table with a personal column is missing from it). The platform's
    copies (events, stored responses) come last: erasing the others writes no new ones."""
    return [c.privacy.personal_data(),
            PersonalData("customers", instock.customers.store.PERSONAL_TABLES,
                         c.customers.export_subject, c.customers.erase_subject),
            PersonalData("polls", instock.polls.store.PERSONAL_TABLES,
                         c.polls.export_subject, c.polls.erase_subject, per_alias=True),
            PersonalData("orders", instock.orders.store.PERSONAL_TABLES,
                         c.orders.export_subject, c.orders.erase_subject),
            PersonalData("inventory", instock.inventory.store.PERSONAL_TABLES,
                         c.inventory.export_subject, c.inventory.erase_subject),
            PersonalData("waitlist", instock.waitlist.store.PERSONAL_TABLES,
                         c.waitlist.export_subject, c.waitlist.erase_subject),
            PersonalData("drops", instock.drops.store.PERSONAL_TABLES,
                         c.drops.export_subject, c.drops.erase_subject),
            PersonalData("notifications", instock.notifications.store.PERSONAL_TABLES,
                         c.notifications.export_subject, c.notifications.erase_subject),
            PersonalData("recommendations", instock.recommendations.store.PERSONAL_TABLES,
                         c.recommendations.export_subject, c.recommendations.erase_subject,
                         aliases=c.recommendations.sessions_of),
            PersonalData("experiments", instock.experiments.store.PERSONAL_TABLES,
                         c.experiments.export_subject, c.experiments.erase_subject),
            PersonalData("webhooks", instock.webhooks.store.PERSONAL_TABLES,
                         c.webhooks.export_subject, c.webhooks.erase_subject, per_alias=True),
            PersonalData("platform", PLATFORM_TABLES, c.platform_traces.export_subject,
                         c.platform_traces.erase_subject, per_alias=True)]


def reconcile_settings(settings: Settings) -> ReconcileSettings:
    return ReconcileSettings(
        RepairPolicy(settings.reconcile_auto_repair_units,
                     Decimal(str(settings.reconcile_auto_repair_value))),
        settings.reconcile_interval_seconds, settings.reconcile_sweep_per_pass,
        grace_seconds=settings.reconcile_grace_seconds,
        marketplace_every_seconds=settings.reconcile_marketplace_seconds)


def keep_copies_fresh(catalog: CatalogService, inventory: InventoryService,
                      drops: DropsService, envelopes: list[Envelope]) -> None:
    """Events committed by this process (at commit) or heard from the bus: the read copies
    they made old are dropped."""
    catalog.heard(envelopes)
    inventory.heard(envelopes)
    drops.heard(envelopes)


def background_work(container: Container, hub: LiveHub) -> list[Coroutine[Any, Any, None]]:
    """What an API process runs beside serving requests, as settings ask, for its services:
    live push, keeping its copies fresh and following revocations it always needs."""
    served = container.settings.served
    work: list[Coroutine[Any, Any, None]] = [hub.run(), container.backbone.run(),
                                             container.identity.follow_revocations()]
    if "experiments" in served:
        work.append(container.experiments.run_exposure_writer())
    if "inventory" in served:
        work += [publish_refusals(container.inventory),
                 watch_oversell(container.inventory, container.settings.oversell_watch_seconds)]
    if container.settings.run_recommender and "recommendations" in served:
        work.append(container.recommendations.run(container.bus))
    return work + worker_duties(container)


# Each context's REST routes (mounted in the order of services.CONTEXTS).
ROUTERS = {"recommendations": instock.recommendations.api.router,
           "inventory": instock.inventory.api.router, "live": instock.live.api.router,
           "catalog": instock.catalog.api.router, "waitlist": instock.waitlist.api.router,
           "customers": instock.customers.api.router, "privacy": instock.privacy.api.router,
           "polls": instock.polls.api.router,
           "notifications": instock.notifications.api.router,
           "orders": instock.orders.api.router, "payments": instock.payments.api.router,
           "webhooks": instock.webhooks.api.router, "channels": instock.channels.api.router,
           "experiments": instock.experiments.api.router,
           "reconciliation": instock.reconciliation.api.router,
           "identity": instock.identity.api.router, "analytics": instock.analytics.api.router,
           "drops": instock.drops.api.router}


async def serve_rpc(container: Container) -> RpcServer | None:
    """The gRPC services of this process's contexts, on INSTOCK_GRPC_PORT (none: None)."""
    served, tokens = container.settings.served, container.tokens
    add: list[tuple[str, Callable[[grpc.aio.Server], None]]] = []
    if "inventory" in served:
        add.append((INVENTORY_RPC, InventoryServicer(container.inventory, tokens).add_to))
    if "recommendations" in served:
        add.append((RECOMMENDATIONS_RPC, RecommendationsServicer(
            container.recommendations, tokens).add_to))
    if not add:
        return None
    return await start_server(container.settings.host, container.settings.grpc_port, add)


def live_hub(container: Container) -> LiveHub:
    async def snapshot(sku: str) -> Update:
        view = await container.inventory.stock(sku)
        return live_model.stock_state(sku, view.version, view.available)

    def heard(update: Update) -> None:  # another process's stock change clears our flags too
        available = update.body["available"]
        container.inventory.sold_out.observe(update.key, (update.version or 0, available == 0))

    def copies(envelope: Envelope) -> None:  # other processes' changes age our copies
        keep_copies_fresh(container.catalog, container.inventory, container.drops,
                          [envelope])

    return LiveHub(container.bus, snapshot, schemas.validate_model, on_stock=heard,
                   on_event=copies,
                   unknown_skus=container.catalog.unknown_skus,
                   heartbeat_seconds=container.settings.live_heartbeat_seconds)


def token_authority(settings: Settings, secret: str) -> TokenAuthority:
    """The keys tokens are signed and verified with, as the settings name them."""
    previous = [hmac_key(s.strip()) for s in settings.jwt_previous_secrets.split(",")
                if s.strip()]
    previous += [public_key(Path(p.strip()).read_bytes())
                 for p in settings.jwt_previous_public_key_files.split(",") if p.strip()]
    signing = (private_key(settings.jwt_private_key_file.read_bytes())
               if settings.jwt_private_key_file else None)
    return TokenAuthority(secret, settings.jwt_issuer, settings.jwt_ttl_seconds,
                          audience=settings.jwt_audience,
                          leeway_seconds=settings.jwt_leeway_seconds, previous=previous,
                          signing=signing)


def outbound_guard(settings: Settings) -> OutboundGuard:
    ports = frozenset(int(p) for p in settings.outbound_ports.split(",") if p.strip())
    return OutboundGuard(allow_loopback=settings.outbound_allow_loopback, ports=ports,
                         hosts={k.lower(): v for k, v in settings.outbound_hosts.items()})


def create_app(settings: Settings | None = None,
               span_exporter: SpanExporter | None = None) -> FastAPI:
    container = build(settings, span_exporter)
    settings = container.settings
    telemetry.configure_logging(settings.log_level, settings.log_json)
    if tracing.enabled():
        log.info("tracing_on", otlp=settings.otlp_endpoint, console=settings.trace_console,
                 sample_ratio=settings.trace_sample_ratio)
    hub = live_hub(container)
    limiter = rate_limits.limiter(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            from instock.migrate import upgrade
            await asyncio.to_thread(upgrade, settings.database_url)
        duties = Duties(background_work(container, hub))
        if settings.tune_gc:
            tune_for_throughput()
        rpc = await serve_rpc(container) if settings.grpc_port else None
        yield
        if rpc is not None:  # calls in flight finish, as requests do
            await rpc.stop(settings.shutdown_timeout_seconds)
        await duties.stop(settings.shutdown_timeout_seconds)  # batches in hand finish first
        if limiter is not None:
            await limiter.close()
        await container.close()

    app = FastAPI(title="instock", version="0.1.0", lifespan=lifespan,
                  description="Inventory that is never oversold, live stock, recommendations.")
    app.state.settings = settings
    app.state.drain = Drain(settings.drain_seconds)  # stopping gracefully: platform/serving.py
    app.state.tokens = container.tokens
    app.state.catalog = container.catalog
    app.state.inventory = container.inventory
    app.state.live = hub
    app.state.waitlist = container.waitlist
    app.state.customers = container.customers
    app.state.privacy = container.privacy
    app.state.polls = container.polls
    app.state.notifications = container.notifications
    app.state.orders = container.orders
    app.state.payments = container.payments
    app.state.webhooks = container.webhooks
    app.state.channels = container.channels
    app.state.reconciliation = container.reconciliation
    app.state.experiments = container.experiments
    app.state.recommendations = container.recommendations
    app.state.identity = container.identity
    app.state.analytics = container.analytics
    app.state.drops = container.drops
    app.state.channel_stock = channel_stock(container.inventory)
    app.state.graphql_results = Results()
    errors.install_handlers(app)
    app.add_middleware(IdempotencyMiddleware, db=container.db, tokens=container.tokens,
                       unstored=instock.customers.api.PERSONAL_PATHS)
    if settings.poll_widget_origins:  # the widget on other sites' pages (bearer auth, no cookies)
        app.add_middleware(CORSMiddleware, allow_methods=["GET", "POST"],
                           allow_origins=[o.strip() for o in
                                          settings.poll_widget_origins.split(",") if o.strip()],
                           allow_headers=["Content-Type", "Authorization"], max_age=600)
    if limiter is not None:  # outside the idempotency middleware: a refusal touches no table
        app.add_middleware(RateLimitMiddleware, limiter=limiter, tokens=container.tokens,
                           exempt=rate_limits.EXEMPT)
    app.add_middleware(EdgeMiddleware, rules=EdgeRules(
        settings.max_body_bytes, settings.max_json_depth, media_types={
            # Signed inbound webhooks verify their raw bytes whatever they are labelled; a
            # mail client's one-click unsubscribe posts a form (RFC 8058).
            "/v1/webhooks/payments/": ANY, "/v1/webhooks/marketplaces/": ANY,
            "/v1/notifications/unsubscribe": ANY,
            "/v1/oauth/token": frozenset({"application/x-www-form-urlencoded"})}))
    # The client's address, for the limits and the logs: X-Forwarded-For only from a trusted
    # proxy (`instock serve` turns uvicorn's own handling off, which trusts 127.0.0.1).
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=rate_limits.trusted_proxies(settings))
    app.add_middleware(CloseWhileDraining, drain=app.state.drain)
    telemetry.install(app)  # added last, so outermost: it times and logs everything
    tracing.instrument_app(app)  # around even that: its log lines name the request's span
    # A request is matched against the routes in this order, one router at a time (a router
    # none of whose paths can match is skipped at once: platform/routing.py): the
    # storefront's hottest routes come first, its product page (GraphQL) before all.
    # Only the services this process serves (instock/services.py).
    schema = graphql_schema(settings)
    if schema is not None:
        app.include_router(InstockGraphQLRouter(schema), prefix="/graphql",
                           include_in_schema=False)
    for name in services.CONTEXTS:
        if name in settings.served:
            # Any route may be refused by a rate limit (or a limit that fails closed).
            app.include_router(ROUTERS[name], responses=errors.problem_responses(429, 503))
    if "web" in settings.served:
        app.include_router(pages.router)
        app.mount("/static", pages.static_files, name="static")

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        if app.state.drain.draining:  # stopping: the load balancer must take us out first
            return errors.problem_response(readiness_refusal())
        ready, checks = await health.readiness(
            health.dependencies(container.db, container.bus, container.recommendations.cache
                                if container.settings.redis_url else None),
            {"outbox": lambda: health.outbox_report(container.backbone.last),
             "reconciler": lambda: health.reconciler_report(
                 settings.run_reconciler, container.reconciliation.last_pass,
                 settings.reconcile_interval_seconds)})
        if not ready:
            down = ", ".join(name for name, check in checks.items()
                             if check.get("required") and check["status"] != "up")
            log.warning("not_ready", down=down)
            return errors.problem_response(errors.problem_document(
                503, "not-ready", "A required dependency is down", f"down: {down}",
                database=container.db.backend, checks=checks))
        return JSONResponse({"status": "ready", "database": container.db.backend,
                             "checks": checks})

    routing.skip_unmatchable_routers(app)
    return app
