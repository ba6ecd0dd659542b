"""Settings, read once from INSTOCK_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSTOCK_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./instock.db"
    bus_url: str = "memory://"
    redis_url: str | None = None
    # Connections per process (and as many again in overflow); PostgreSQL allows ~100 in all.
    db_pool_size: int = Field(default=10, ge=1)
    # Where the embedded default keeps what it creates on first run (the JWT key).
    state_dir: Path = Path(".instock")
    jwt_secret: str | None = None
    jwt_issuer: str = "instock"
    jwt_ttl_seconds: int = 3600 * 24
    currency: str = "EUR"
    reservation_ttl_seconds: int = Field(default=900, ge=1)
    reservation_max_ttl_seconds: int = Field(default=86400, ge=1)
    sweeper_interval_seconds: float = Field(default=1.0, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_json: bool = True
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
    # SSE and WebSocket clients get a heartbeat after this many quiet seconds.
    live_heartbeat_seconds: float = Field(default=15.0, gt=0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
