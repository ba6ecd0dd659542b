"""Settings, read once from INSTOCK_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from instock import services


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTOCK_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./instock.db"
    # Which contexts this process serves (instock/services.py): `all`, or a list such as
    # `inventory,catalog,live`; its routes, GraphQL fields, gRPC services and background work.
    services: str = "all"
    # gRPC (platform/rpc.py): the port this process serves its contexts' gRPC services on (0:
    # none), and where a context this process does not run is served: orders call inventory
    # there (grpc://host:port) when inventory is not among its services, else in-process.
    grpc_port: int = Field(default=0, ge=0, le=65535)
    inventory_url: str | None = Field(default=None, pattern=r"^grpc://[^/]+$")
    grpc_deadline_seconds: float = Field(default=5.0, gt=0)
    grpc_attempts: int = Field(default=3, ge=1)
    bus_url: str = "memory://"
    redis_url: str | None = None
    # Connections per process (and as many again in overflow); PostgreSQL allows ~100 in all.
    db_pool_size: int = Field(default=10, ge=1)
    # Where the embedded default keeps what it creates on first run (the JWT key).
    state_dir: Path = Path(".instock")
    jwt_secret: str | None = None
    # Master keys sealing personal data (privacy context): `kid:base64key[,kid:base64key…]`,
    # 32-byte keys, the first one current (new and rotated data keys go under it), the others
    # still opening keys wrapped before a rotation. From the environment or a file in that
    # format; with neither, one is created on first run under state_dir and kept there.
    pii_master_keys: str | None = None
    pii_master_key_file: Path | None = None
    # Rate limits (instock.rate_limits declares every policy): on unless "off"; overrides map
    # a policy's name to its limit, e.g. {"customer": "100/minute"} (JSON in the environment).
    # Counters are shared in Redis when redis_url is set, else kept in each process.
    rate_limits: Literal["on", "off"] = "on"
    rate_limit_overrides: dict[str, str] = Field(default_factory=dict)
    # Analytics' hourly facts are kept this many months (whole monthly partitions are dropped).
    analytics_retention_months: int = Field(default=25, ge=1)
    # How often SKUs are checked for a stock-out before their next receipt, and how far ahead a
    # SKU with no receipt expected is warned of (inventory.stockout_predicted.v1).
    analytics_alert_seconds: float = Field(default=300, gt=0)
    analytics_alert_horizon_days: int = Field(default=14, ge=1)
    # How long a request waits for the shared counters before the policy's failure mode
    # (open or closed) decides: short, so a slow Redis never slows the API.
    rate_limit_store_timeout_seconds: float = Field(default=0.25, gt=0, le=10)
    # Proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names the
    # client; from any other peer the header is ignored, so a client cannot pick its address.
    trusted_proxies: str = ""
    # Request bodies (platform/edges.py): larger is a 413, JSON nested deeper a 422.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_json_depth: int = Field(default=32, ge=2)
    # URLs other people give us (webhook subscribers, marketplaces) are called only on these
    # ports, never at private, loopback or link-local addresses (platform/outbound.py).
    # Loopback (any port) is for local development and the tests; hosts pins names to
    # addresses, e.g. {"shop.example": "203.0.113.7"} (JSON in the environment).
    outbound_allow_loopback: bool = False
    outbound_ports: str = "80,443,8080,8443"
    outbound_hosts: dict[str, str] = Field(default_factory=dict)
    jwt_issuer: str = "instock"
    # Tokens (platform/tokens.py): every token names this audience and its key (`kid`); a clock
    # skew up to jwt_leeway_seconds is forgiven. With a PEM Ed25519 or RSA private key, tokens
    # are signed with it (EdDSA / RS256) and its public key is at /.well-known/jwks.json.
    # Keys that signed before a rotation keep verifying: previous secrets (comma-separated)
    # and previous public key files (comma-separated paths).
    jwt_audience: str = "instock-api"
    jwt_leeway_seconds: float = Field(default=30, ge=0, le=300)
    jwt_private_key_file: Path | None = None
    jwt_previous_secrets: str = ""
    jwt_previous_public_key_files: str = ""
    # API clients (OAuth 2.0 client credentials, POST /v1/oauth/token): their tokens' life, and
    # how soon a revocation made in another process is heard here.
    oauth_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    oauth_revocation_poll_seconds: float = Field(default=2.0, gt=0)
    jwt_ttl_seconds: int = 3600 * 24
    currency: str = "EUR"
    reservation_ttl_seconds: int = Field(default=900, ge=1)
    reservation_max_ttl_seconds: int = Field(default=86400, ge=1)
    sweeper_interval_seconds: float = Field(default=1.0, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    # Stopping gracefully (platform/drain.py): told SIGTERM, an API process answers /readyz 503
    # "draining" for drain_seconds while it still serves (a load balancer's health checks take
    # it out meanwhile: HAProxy's `inter 500ms fall 2` need ~1 s; SIGINT, a Ctrl-C, skips the
    # wait), then sends SSE and WebSocket clients away with a reconnect hint and finishes the
    # requests in flight; a worker finishes its batches in hand. Both give up after
    # shutdown_timeout_seconds.
    drain_seconds: float = Field(default=2.0, ge=0, le=300)
    # How often each API process serving inventory samples instock_oversold_units.
    oversell_watch_seconds: float = Field(default=5.0, gt=0, le=3600)
    shutdown_timeout_seconds: int = Field(default=10, ge=1, le=600)
    # How long an idle keep-alive connection stays open. Longer than a load balancer keeps an
    # idle one to reuse (HAProxy purges its pool every 5 s by default, AWS ALB after 60 s), so
    # the balancer, never this server, closes it: a server closing an idle connection as the
    # balancer sends a request on it leaves that request unanswered. (Uvicorn's default is 5 s.)
    keep_alive_seconds: float = Field(default=75.0, gt=0, le=3600)
    log_level: str = "info"
    log_json: bool = True
    # Tracing (OpenTelemetry) is off unless spans have somewhere to go: an OTLP/HTTP collector
    # (its base URL, e.g. http://localhost:4318) and/or the console (one JSON span a line on
    # stdout, what `make run` turns on). Off, it costs nothing. A trace is kept with this
    # probability, decided once where it starts and followed by every process it reaches.
    otlp_endpoint: str | None = None
    trace_console: bool = False
    trace_sample_ratio: float = Field(default=1.0, ge=0, le=1)
    service_name: str = "instock"
    migrate_on_start: bool = True
    # Each API process may run the reservation sweeper too; it is safe with many running.
    run_sweeper: bool = True
    # Internal writes retry version conflicts this many times before answering 409.
    conflict_retries: int = 8
    # A SKU seen with nothing left is refused from a flag (in Redis when redis_url is set, else
    # in each process) without the database. Any commit that returns stock clears it at once;
    # this bounds how long a flag can outlive a clear that never came (a killed process, or in
    # a process without Redis, another process's restock whose event has not arrived yet).
    sold_out_ttl_seconds: float = Field(default=1.0, gt=0)
    # Collect garbage less often once serving (instock.platform.runtime); off in test processes
    # that build many apps, where freezing would keep each one's garbage for good.
    tune_gc: bool = True
    # Pages shoppers look at (GraphQL products and their stock, recommendations) may read a
    # copy kept in memory: events drop it the moment it is old (this process's at commit,
    # others' from the bus); this bounds a copy's life should an event never come. 0: no copies.
    read_cache_seconds: float = Field(default=1.0, ge=0)
    # The most reservations one group commit decides in one transaction.
    reserve_batch_max: int = Field(default=2000, ge=1)
    # Each API process may run the outbox relay (one leads at a time, the others stand by) and
    # the event consumers; the embedded default does both, a fleet runs `instock worker ...`.
    run_relay: bool = True
    run_consumers: bool = True
    outbox_retention_seconds: int = Field(default=86400, ge=0)
    # A consumer retries a failing event this many times, then dead-letters it.
    consumer_attempts: int = Field(default=5, ge=1)
    # A delivery not acked for this long is handed to another member of the consumer group.
    consumer_redeliver_seconds: float = Field(default=30.0, gt=0)
    # A consumer that has an event waits this long for the ones behind it (or until its batch
    # is full) before its transaction: at a few hundred events/s a transaction per event or two
    # cost more CPU than the API's own writes (inbox claims, positions, commit); 50 ms of delay
    # makes them a tenth. 0: every burst at once. Live pushes (SSE, WebSocket) do not wait.
    consumer_linger_seconds: float = Field(default=0.05, ge=0, le=5)
    # Recommendations: every API process keeps a recommender fed by the bus (run_recommender);
    # it refits (and re-tunes) on the latest `recs_history_limit` behaviour events this often.
    # Lists are cached per shopper for `recs_cache_ttl_seconds` (in Redis when redis_url is
    # set), dropped at once when the shopper acts, and checked against live stock on every read.
    run_recommender: bool = True
    recs_refit_seconds: float = Field(default=600.0, gt=0)
    recs_history_limit: int = Field(default=500_000, ge=1)
    recs_cache_ttl_seconds: float = Field(default=60.0, gt=0)
    # How long a refit may search for better components and hyper-parameters than the base
    # configuration (whose weights are always tuned). Its thread shares the GIL with requests.
    recs_fit_budget_seconds: float = Field(default=15.0, ge=0, le=3600)
    # Statistics trained offline (`instock recs train --out DIR`, kept current by `instock recs
    # stream`): when the artefact exists, each refit takes its counts instead of the history's.
    recs_artefacts: Path | None = None
    # Where the `recs-stream-files` consumer drops behaviour events as CSV files for
    # `instock recs stream --source` (the consumer runs only when this is set).
    recs_stream_dir: Path | None = None
    # Polls: a session is shown at most one poll per this many minutes (the same one may come
    # back on a reload; another waits).
    poll_minutes_between: float = Field(default=30.0, ge=0)
    # Drops: an admission pass from a waiting room is good for `drop_pass_seconds`, a queue
    # ticket for `drop_ticket_seconds` (asking again re-issues it, same place); each process's
    # copy of which SKUs are in a drop (the reservation gate) is at most
    # `drop_gate_refresh_seconds` old, and refreshed at once on a `drop.*` event.
    drop_pass_seconds: float = Field(default=120.0, gt=0, le=3600)
    drop_ticket_seconds: float = Field(default=86_400.0, gt=0)
    drop_gate_refresh_seconds: float = Field(default=1.0, ge=0)
    # The proof of work a shopper solves before taking a ticket (drops/bots.py): leading zero
    # bits of SHA-256, 65,536 hashes on average at 16; 0 asks none (the proof rule then never
    # trips). A challenge must come back within `drop_challenge_seconds`.
    drop_proof_bits: int = Field(default=16, ge=0, le=32)
    drop_challenge_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # The live waiting room (SSE, drops/room.py): each process recomputes a drop's room every
    # `drop_room_tick_seconds`, and tells a watcher it moved up at most every
    # `drop_room_push_seconds` (admission and a sell-out at once).
    drop_room_tick_seconds: float = Field(default=1.0, gt=0, le=60)
    drop_room_push_seconds: float = Field(default=5.0, ge=0, le=600)
    # Draws: each process of the embedded default (and `instock worker all`) draws every draw
    # drop whose entries have closed, looking every `drop_draw_seconds` (run_draws; several may
    # run: a drop has one stored draw). Staff may still draw at once (POST .../draw).
    run_draws: bool = True
    drop_draw_seconds: float = Field(default=5.0, gt=0, le=3600)
    # Capacity drops (admission "capacity", drops/capacity.py): each process of the embedded
    # default (and `instock worker all`) measures their checkouts and sets their rate, which may
    # change every `drop_capacity_seconds` (run_drop_capacity; several may run: one rate is
    # stored per drop and period).
    run_drop_capacity: bool = True
    drop_capacity_seconds: float = Field(default=10.0, gt=0, le=3600)
    # Origins of other sites' pages that embed the poll widget, comma-separated
    # (`https://shop.example,https://www.shop.example`): their browsers may call the API (CORS).
    # Empty: only pages served by instock itself.
    poll_widget_origins: str = ""
    # SSE and WebSocket clients get a heartbeat after this many quiet seconds.
    live_heartbeat_seconds: float = Field(default=15.0, gt=0)
    # The storefront page (`/`): the drop it shows, and when the drop opens (none: open now).
    storefront_product: str = "hoodie-drop-01"
    storefront_channel: str = "web"
    drop_starts_at: AwareDatetime | None = None
    # GraphQL: only the pages' own operations may run (and no introspection) when true.
    graphql_persisted_only: bool = False
    graphql_max_depth: int = Field(default=10, ge=1)
    graphql_max_aliases: int = Field(default=20, ge=0)
    graphql_max_cost: int = Field(default=25_000, ge=1)
    # Orders: a cart's holds run this long after the buyer's last touch; checkout holds the stock
    # this long for the payment to finish (a hold that runs out makes the checkout fail).
    cart_hold_seconds: int = Field(default=900, ge=1)
    checkout_hold_seconds: int = Field(default=600, ge=1)
    # Sagas (checkout, cancellation, return): whoever runs one leases it this long per step; a
    # failing forward step is tried this many times before it is undone. Each API process may
    # run due sagas too (as the sweeper); a fleet runs `instock worker sagas`.
    run_sagas: bool = True
    # Checkout runs its saga in the request (the answer is the outcome); off, it answers 202 at
    # once and a saga worker does the rest.
    saga_inline: bool = True
    saga_lease_seconds: float = Field(default=30.0, gt=0)
    saga_max_attempts: int = Field(default=3, ge=1)
    saga_poll_seconds: float = Field(default=0.5, gt=0)
    # Fault injection for crash tests only: SIGKILL the process right after this saga step.
    saga_kill_after: str | None = None
    # Payments: which provider (`sandbox`, the local `instock sandbox payments` process, or
    # `stripe`), where it is, its keys. Every provider call times out after
    # payments_timeout_seconds, is retried (what is safe to retry) up to payments_retry_attempts
    # times in all, and passes a circuit breaker that opens after payments_breaker_threshold
    # consecutive failures and lets a trial call through after the cooldown.
    payment_provider: Literal["sandbox", "stripe"] = "sandbox"
    payments_url: str = "http://127.0.0.1:8100"
    payments_api_key: str = "sk_test_instock_sandbox"
    payments_webhook_secret: str = "whsec_instock_sandbox"  # noqa: S105 - the local sandbox's published test secret
    # A webhook signed longer ago than this (or this far in the future) is a replay.
    payments_webhook_tolerance_seconds: int = Field(default=300, ge=1)
    payments_timeout_seconds: float = Field(default=5.0, gt=0)
    payments_retry_attempts: int = Field(default=3, ge=1)
    payments_retry_backoff_seconds: float = Field(default=0.1, ge=0)
    payments_retry_max_backoff_seconds: float = Field(default=2.0, ge=0)
    payments_breaker_threshold: int = Field(default=5, ge=1)
    payments_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # Outbound webhooks: each API process may run a delivery worker (safe with several running;
    # a fleet runs `instock worker webhooks`). A delivery is attempted this many times, waiting
    # base·2^(n-1) seconds (capped, jittered into its upper half) after failure n, then
    # dead-lettered; each attempt waits at most the timeout for an answer.
    run_webhook_delivery: bool = True
    # Reconciliation: every process of the embedded default (and `instock worker reconcile`)
    # checks stock against its ledger, reservations and outbox every interval (several may
    # run: one leads, the others stand by). A drift of at most this many units
    # and this much value is repaired at once by a `reconcile` ledger entry; larger ones wait
    # for staff (GET /v1/reconciliation/drifts). Each pass also checks this many SKUs of the
    # whole catalogue in turn, so stock no one changes is verified too.
    run_reconciler: bool = True
    reconcile_interval_seconds: float = Field(default=5.0, gt=0)
    reconcile_auto_repair_units: int = Field(default=2, ge=0)
    reconcile_auto_repair_value: float = Field(default=100.0, ge=0)
    reconcile_sweep_per_pass: int = Field(default=500, ge=0)
    # Committed stock and the orders holding it are written apart (a checkout commits, then
    # takes the money), and copies of stock (recommendations' view, marketplace listings)
    # follow it within their freshness bound: a difference is a drift once it has lasted this
    # long. Marketplaces' listings are pulled (whole) this often.
    reconcile_grace_seconds: float = Field(default=30.0, ge=0)
    reconcile_marketplace_seconds: float = Field(default=60.0, ge=0)
    webhook_attempts: int = Field(default=8, ge=1, le=100)
    webhook_backoff_base_seconds: float = Field(default=30.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Marketplace channels: each channel's available-to-sell is pushed at most this many times a
    # second (pushes beyond it wait, and the changes that pile up go out as one); a marketplace
    # webhook signed further than the tolerance from now is a replay; each marketplace call
    # times out after connector_timeout_seconds and is tried connector_attempts times in all.
    channel_push_rate_per_second: float = Field(default=10.0, gt=0)
    marketplace_webhook_tolerance_seconds: float = Field(default=300.0, gt=0)
    connector_timeout_seconds: float = Field(default=5.0, gt=0)
    connector_attempts: int = Field(default=4, ge=1)
    # A marketplace order that cannot be carried out is retried with backoff this many times.
    channel_order_attempts: int = Field(default=8, ge=1)
    # Back in stock: a wave tells at most k x available waiting customers (first subscribed
    # first); while some still wait, the next wave comes this many seconds later, sized to the
    # stock then, and none once it sold out again (a later restock starts a new one). Each API
    # process may send due waves (run_back_in_stock_waves; several may run).
    back_in_stock_wave_factor: int = Field(default=2, ge=1)
    back_in_stock_wave_seconds: float = Field(default=60.0, gt=0)
    run_back_in_stock_waves: bool = True
    # Notifications: each API process may run the sender (several may run: each claims its
    # own rows). Mail goes to smtp_url (`make run` starts the local sink there) from mail_from;
    # the sink keeps what it receives under mail_dir (default: <state_dir>/mail).
    run_notifications: bool = True
    smtp_url: str = "smtp://127.0.0.1:8025"
    mail_from: str = "instock <shop@instock.localhost>"
    mail_dir: Path | None = None
    # Where a recipient's links point (the one-click unsubscribe): this server as the world
    # reaches it.
    public_url: str = "http://127.0.0.1:8000"
    # Staff alerts (low stock, sold out) go to this address and/or Slack incoming webhook.
    staff_email: str | None = None
    slack_webhook_url: str | None = None
    sms_url: str | None = None  # the SMS provider (`instock sandbox sms`); none: no SMS
    # Send-time rules: no marketing or back-in-stock message in the recipient's quiet hours
    # (their time zone, else default_time_zone; deferred to the end, not dropped); at most
    # notify_rate_per_hour to one recipient (over it: suppressed), transactional order mail
    # excepted; email paced to email_rate_per_second (0: unpaced), Slack to one a second.
    quiet_hours_start: str = Field(default="22:00", pattern=r"^\d{2}:\d{2}$")
    quiet_hours_end: str = Field(default="08:00", pattern=r"^\d{2}:\d{2}$")
    default_time_zone: str = "UTC"
    notify_rate_per_hour: int = Field(default=10, ge=1)
    email_rate_per_second: float = Field(default=0.0, ge=0)
    slack_rate_per_second: float = Field(default=1.0, gt=0)
    # A send is attempted this many times (waiting base·2^(n-1) s, capped, between), then
    # dead-lettered; each waits at most the timeout; a breaker per channel opens after
    # notify_breaker_threshold failures in a row.
    notify_attempts: int = Field(default=5, ge=1)
    notify_backoff_base_seconds: float = Field(default=30.0, gt=0)
    notify_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    notify_timeout_seconds: float = Field(default=10.0, gt=0)
    notify_breaker_threshold: int = Field(default=5, ge=1)
    notify_breaker_cooldown_seconds: float = Field(default=30.0, gt=0)
    # Sends at once per channel that is not paced (an SMTP round trip is mostly waiting).
    notify_send_concurrency: int = Field(default=8, ge=1)
    # Templates here override the packaged ones of the same name (a brand's own mail).
    notify_template_dir: Path | None = None

    @field_validator("services")
    @classmethod
    def _known_services(cls, value: str) -> str:
        services.parse(value)  # an unknown name fails at start, not at the first request
        return value

    @property
    def served(self) -> frozenset[str]:
        """The services (contexts and surfaces) this process serves."""
        return services.parse(self.services)


@lru_cache
def get_settings() -> Settings:
    return Settings()
