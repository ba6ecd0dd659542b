"""One error hierarchy for the whole house, rendered as application/problem+json (RFC 9457).

Services raise these; `install_handlers` turns them (and validation errors, and anything
unexpected) into problem documents. No stack trace or SQL ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://instock.dev/problems/"

log = structlog.get_logger(__name__)


class InstockError(Exception):
    """Base of every error a client may see. `slug` names a stable problem type."""

    status: ClassVar[int] = 400
    slug: ClassVar[str] = "bad-request"
    title: ClassVar[str] = "Bad request"

    def __init__(self, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extensions = extensions

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem_document(self.status, self.slug, self.title, self.detail, instance,
                                **self.extensions)


class ValidationFailed(InstockError):
    status, slug, title = 422, "validation-error", "The request is not valid"

    def __init__(self, field: str, reason: str, *more: tuple[str, str]) -> None:
        pairs = [(field, reason), *more]
        super().__init__("; ".join(f"{f}: {r}" for f, r in pairs),
                         errors=[{"field": f, "reason": r} for f, r in pairs])


def validation_problem(errors: Sequence[Mapping[str, Any]], *,
                       located: bool = True) -> ValidationFailed:
    """Pydantic's errors as one ValidationFailed naming each field (`lines[0].sku`).
    `located`: the first part of each error's location is where the value came from (FastAPI's
    "body", "query"…), not a field; a model validated directly has no such part."""
    pairs = [(_field_of(tuple(e.get("loc", ())), located), str(e.get("msg", "invalid")))
             for e in errors] or [("body", "invalid")]
    return ValidationFailed(*pairs[0], *pairs[1:])


class NotFound(InstockError):
    status, slug, title = 404, "not-found", "Not found"


class AlreadyExists(InstockError):
    status, slug, title = 409, "already-exists", "Already exists"


class Conflict(InstockError):
    status, slug, title = 409, "conflict", "Conflict with the current state"


class VersionConflict(Conflict):
    """Someone else changed the row first; internal writes retry this before giving up."""

    slug, title = "version-conflict", "Concurrent update, try again"


class PreconditionFailed(InstockError):
    status, slug, title = 412, "precondition-failed", "If-Match does not match the current version"


class Unauthorized(InstockError):
    status, slug, title = 401, "unauthorized", "Authentication required"


class Forbidden(InstockError):
    status, slug, title = 403, "forbidden", "Not allowed"


class IdempotencyKeyReused(InstockError):
    status, slug = 422, "idempotency-key-reused"
    title = "Idempotency-Key reused with another request"


class IdempotencyInProgress(InstockError):
    status, slug, title = 409, "idempotency-in-progress", "A request with this key is in progress"


class RateLimited(InstockError):
    status, slug, title = 429, "rate-limited", "Too many requests"


class RateLimitUnavailable(InstockError):
    """A policy that fails closed could not reach its counters."""

    status, slug, title = 503, "rate-limit-unavailable", "Rate limits cannot be checked"


class FieldError(BaseModel):
    field: str
    reason: str


class Problem(BaseModel):
    """The RFC 9457 document every error answers with (extension members vary by type)."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` declaring problem+json answers, for routers to document errors."""
    reasons = {400: "Bad request", 401: "No valid bearer token", 403: "Role not allowed",
               404: "Not found", 409: "Conflict with the current state",
               412: "If-Match does not match", 422: "Invalid request",
               429: "Over a rate limit (Retry-After: when to come back)",
               503: "A dependency is down (Retry-After: when to come back)"}
    schema = Problem.model_json_schema()
    return {status: {"description": reasons.get(status, "Error"),
                     "content": {PROBLEM_JSON: {"schema": schema}}} for status in statuses}


def problem_document(status: int, slug: str, title: str, detail: str | None,
                     instance: str | None = None, **extensions: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": TYPE_BASE + slug, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    if instance:
        doc["instance"] = instance
    doc.update(extensions)
    return doc


def problem_response(doc: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(doc, status_code=doc["status"], media_type=PROBLEM_JSON, headers=headers)


async def send_problem(send: Send, error: InstockError, instance: str | None = None,
                       headers: Mapping[str, str] | None = None) -> None:
    """The error's problem answer straight onto an ASGI connection: for a middleware, which
    answers below the app's exception handlers."""
    body = orjson.dumps(error.problem(instance))
    await send({"type": "http.response.start", "status": error.status, "headers": [
        (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in (headers or {}).items())]})
    await send({"type": "http.response.body", "body": body})


def _field_of(loc: tuple[Any, ...], located: bool = True) -> str:
    # ("body", "lines", 0, "sku") -> "lines[0].sku"; the location kind is not part of the field.
    parts = (list(loc[1:]) if located and loc and loc[0] in ("body", "query", "path", "header")
             else list(loc))
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or str(loc[0] if loc else "body")


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(InstockError)
    async def _instock(request: Request, exc: InstockError) -> JSONResponse:
        return problem_response(exc.problem(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc.errors()).problem(request.url.path))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = {400: "bad-request", 404: "not-found",
                405: "method-not-allowed"}.get(exc.status_code, "http-error")
        extra = ({"errors": [{"field": "body", "reason": str(exc.detail)}]}
                 if exc.status_code == 400 else {})
        return problem_response(
            problem_document(exc.status_code, slug, str(exc.detail), None, request.url.path,
                             **extra),
            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return problem_response(problem_document(
            500, "internal-error", "Internal error", "The server could not complete the request.",
            request.url.path))


def error_of(problem: dict[str, Any]) -> InstockError:
    """The error a problem document describes (a remote call's, or one stored), as its own
    class (found by the problem type's slug among the house's errors), carrying the same
    detail and extensions."""
    slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
    cls = _by_slug().get(slug, InstockError)
    known = {"type", "title", "status", "detail", "instance"}
    error = cls.__new__(cls)
    InstockError.__init__(error, str(problem.get("detail", "")),
                          **{k: v for k, v in problem.items() if k not in known})
    return error


def _by_slug() -> dict[str, type[InstockError]]:
    """Every error class of the house by slug (the first, most general, wins a shared slug)."""
    found: dict[str, type[InstockError]] = {}
    pending: list[type[InstockError]] = [InstockError]
    while pending:
        cls = pending.pop(0)
        found.setdefault(cls.slug, cls)
        pending.extend(cls.__subclasses__())
    return found
