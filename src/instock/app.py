"""The composition root: builds adapters from settings, wires the contexts, returns the app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import instock.catalog.api
import instock.inventory.api
from instock.catalog.service import CatalogService
from instock.config import Settings, get_settings
from instock.inventory.service import InventoryService
from instock.platform import errors, telemetry
from instock.platform.auth import TokenAuthority, load_or_create_secret
from instock.platform.db import Database
from instock.platform.idempotency import IdempotencyMiddleware

log = structlog.get_logger(__name__)


@dataclass
class Container:
    """Everything built from settings, for the app and for CLI commands alike."""

    settings: Settings
    db: Database
    tokens: TokenAuthority
    catalog: CatalogService
    inventory: InventoryService


def build(settings: Settings | None = None) -> Container:
    settings = settings or get_settings()
    db = Database(settings.database_url, pool_size=settings.db_pool_size)
    tokens = TokenAuthority(load_or_create_secret(settings.jwt_secret, settings.state_dir),
                            settings.jwt_issuer, settings.jwt_ttl_seconds)
    catalog_service = CatalogService(db)
    inventory_service = InventoryService(
        db, catalog_service, default_ttl_seconds=settings.reservation_ttl_seconds,
        max_ttl_seconds=settings.reservation_max_ttl_seconds,
        conflict_retries=settings.conflict_retries)
    return Container(settings, db, tokens, catalog_service, inventory_service)


async def run_sweeper(inventory_service: InventoryService, interval: float) -> None:
    while True:
        try:
            await inventory_service.sweep()
        except Exception:  # a failed round is logged and retried; the sweeper must not die
            log.exception("sweeper_failed")
        await asyncio.sleep(interval)


def create_app(settings: Settings | None = None) -> FastAPI:
    container = build(settings)
    settings = container.settings
    telemetry.configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            from instock.migrate import upgrade
            await asyncio.to_thread(upgrade, settings.database_url)
        sweeper = (asyncio.create_task(run_sweeper(container.inventory,
                                                   settings.sweeper_interval_seconds))
                   if settings.run_sweeper else None)
        yield
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        await container.db.dispose()

    app = FastAPI(title="instock", version="0.1.0", lifespan=lifespan,
                  description="Inventory that is never oversold, live stock, recommendations.")
    app.state.settings = settings
    app.state.tokens = container.tokens
    app.state.catalog = container.catalog
    app.state.inventory = container.inventory
    errors.install_handlers(app)
    app.add_middleware(IdempotencyMiddleware, db=container.db, tokens=container.tokens)
    telemetry.install(app)  # added last, so outermost: it times and logs everything
    app.include_router(instock.catalog.api.router)
    app.include_router(instock.inventory.api.router)

    @app.get("/livez", include_in_schema=False)
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            await container.db.ping()
        except Exception as exc:
            log.warning("not_ready", error=type(exc).__name__)
            return errors.problem_response(errors.problem_document(
                503, "not-ready", "Database unreachable", "the database does not answer"))
        return JSONResponse({"status": "ready", "database": container.db.backend})

    return app
