"""The pages' routes: each renders a template with what the page needs to start; everything
else the page asks the API for, through GraphQL, like any other client."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from instock.config import Settings
from instock.web import HERE, STATIC

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
static_files = StaticFiles(directory=STATIC)


@router.get("/", response_class=HTMLResponse)
async def storefront(request: Request) -> HTMLResponse:
    """The drop storefront: the drop's product, its sizes live, reserve and checkout."""
    settings: Settings = request.app.state.settings
    starts = settings.drop_starts_at.isoformat() if settings.drop_starts_at else ""
    return templates.TemplateResponse(request, "storefront.html", {
        "product_id": settings.storefront_product, "channel": settings.storefront_channel,
        "drop_starts_at": starts})


@router.get("/drops/{drop_id}", response_class=HTMLResponse)
async def drop_room(request: Request, drop_id: str) -> HTMLResponse:
    """A drop's waiting room: the shopper's browser solves the proof of work, takes a place,
    watches it move, and reserves with the pass once admitted (static/drop.js)."""
    return templates.TemplateResponse(request, "drop.html", {"drop_id": drop_id})


@router.get("/widget/polls.js", response_class=FileResponse)
async def poll_widget() -> FileResponse:
    """The poll widget: one script tag renders a shopper's next poll into any page."""
    return FileResponse(STATIC / "polls.js", media_type="text/javascript")


@router.get("/ops", response_class=HTMLResponse)
async def operations_console(request: Request) -> HTMLResponse:
    """The operations console (a staff token): live stock, ledger, reservations, orders,
    webhook deliveries, experiments and the audit."""
    return templates.TemplateResponse(request, "ops.html", {})
