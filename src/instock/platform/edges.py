"""The edge of every request: what a body may be, and the headers every answer carries.

One ASGI middleware, before anything parses a body:
- a body larger than `max_body_bytes` is refused with 413 (by its Content-Length before a byte
  is read, or as soon as the streamed bytes pass the limit);
- a body on POST, PUT or PATCH must be JSON (`application/json` or `application/*+json`) unless
  its route declares other types (a form for one-click unsubscribe): else 415;
- a JSON body nested deeper than `max_json_depth` is refused with 422 before the JSON parser
  recurses into it;
- every answer carries `X-Content-Type-Options: nosniff` and `Referrer-Policy: no-referrer`;
  an HTML page also `Content-Security-Policy: frame-ancestors 'none'` and
  `X-Frame-Options: DENY` (nobody frames the storefront or the console to click-jack them);
  over TLS, `Strict-Transport-Security`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instock.platform.errors import InstockError, send_problem

JSON = frozenset({"application/json"})
ANY = frozenset({"*/*"})  # a route that reads its raw bytes itself (a signed webhook)
_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


class PayloadTooLarge(InstockError):
    status, slug, title = 413, "payload-too-large", "The request body is too large"


class UnsupportedMediaType(InstockError):
    status, slug, title = 415, "unsupported-media-type", "The body's Content-Type is not accepted"


class TooDeep(InstockError):
    status, slug, title = 422, "json-too-deep", "The JSON body is nested too deeply"


@dataclass(frozen=True)
class EdgeRules:
    max_body_bytes: int = 1024 * 1024
    max_json_depth: int = 32
    # Path prefix -> the body types its routes take instead of JSON.
    media_types: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hsts_seconds: int = 365 * 24 * 3600

    def accepted(self, path: str) -> frozenset[str]:
        for prefix, types in self.media_types.items():
            if path.startswith(prefix):
                return types
        return JSON


def json_depth(body: bytes, limit: int) -> int:
    """How deep the arrays and objects of a JSON text nest, counting no further than `limit`
    + 1 (the caller only needs to know it is over). Brackets inside strings do not count. Only
    structural characters are visited, so a large flat body costs little."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # inside a string, the byte after a backslash is taken as it is
    for match in _STRUCTURE.finditer(body):
        at, char = match.start(), match.group()
        if in_string:
            if at == escaped_at:
                continue
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
            continue
        if char == b'"':
            in_string = True
        elif char in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in (b"]", b"}"):
            depth -= 1
    return deepest


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, *, rules: EdgeRules) -> None:
        self.app, self.rules = app, rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        send = self._with_headers(scope, send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                receive = await self._checked_body(scope, receive)
            except InstockError as refused:
                # The unread rest of a refused body is not drained: the connection closes.
                await send_problem(send, refused, scope["path"], {"connection": "close"})
                return
        await self.app(scope, receive, send)

    async def _checked_body(self, scope: Scope, receive: Receive) -> Receive:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        limit = self.rules.max_body_bytes
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"at most {limit} bytes", limit=limit)
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"at most {limit} bytes", limit=limit)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0]
            media = media.strip().lower()
            accepted = self.rules.accepted(scope["path"])
            is_json = media == "application/json" or (
                media.startswith("application/") and media.endswith("+json"))
            if accepted is not ANY and not (
                    media in accepted or (is_json and "application/json" in accepted)):
                raise UnsupportedMediaType(
                    f"send {' or '.join(sorted(accepted))}, not {media or 'no Content-Type'}",
                    errors=[{"field": "Content-Type",
                             "reason": f"must be {' or '.join(sorted(accepted))}"}])
            if is_json and json_depth(body, self.rules.max_json_depth) > \
                    self.rules.max_json_depth:
                raise TooDeep(f"at most {self.rules.max_json_depth} levels of arrays and "
                              "objects", errors=[{"field": "body", "reason": "nested too deeply"}])
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _with_headers(self, scope: Scope, send: Send) -> Send:
        tls = scope.get("scheme") == "https"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                names = {name.lower() for name, _ in headers}
                added = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"no-referrer")]
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/html"):
                    added += [(b"content-security-policy", b"frame-ancestors 'none'"),
                              (b"x-frame-options", b"DENY")]
                if tls:
                    added.append((b"strict-transport-security",
                                  f"max-age={self.rules.hsts_seconds}".encode()))
                message = {**message, "headers": headers + [
                    (k, v) for k, v in added if k not in names]}
            await send(message)

        return sending
