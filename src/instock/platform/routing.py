"""Route matching that skips a context's router when none of its paths can match.

FastAPI (0.165) matches a request against each included router in turn, and each router
tries every route of its own at a few microseconds a route: about 90 µs to reach the checkout
route and 170-200 µs for `/livez` behind all of them, on every request (half of `/livez`'s
CPU; a route in the first routers, such as a stock write's, pays 25-30 µs).
Every path a router serves begins with a literal part (up to its
first `{`), and a request path that starts with none of them cannot match any of its routes,
nor partially (a wrong method still needs the path to match): one `str.startswith` refuses
it. A router that matches is then asked exactly as before, so which route serves a request
does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.routing import Match
from starlette.types import Scope

Matcher = Callable[[Scope], tuple[Match, Scope]]


def skip_unmatchable_routers(app: FastAPI) -> None:
    """Give each router included in `app` a prefix check in front of its matching. Call it
    once every router is included: a route added to a router later would not be seen."""
    for route in app.router.routes:
        prefixes = literal_prefixes(route)
        if prefixes:
            # An instance attribute in front of the class's method: FastAPI keeps calling
            # route.matches(scope), and the route stays what it was for everything else
            # (the OpenAPI document, url_path_for, the handling itself).
            vars(route)["matches"] = gated(route.matches, prefixes)


def literal_prefixes(route: Any) -> tuple[str, ...]:
    """The literal beginnings of the paths an included router serves; () when `route` is no
    included router or one of its routes has no path pattern to read (it is left ungated)."""
    contexts = getattr(route, "effective_route_contexts", None)
    if contexts is None:
        return ()
    prefixes: set[str] = set()
    for context in contexts():
        path_format = getattr(context.starlette_route, "path_format", None) or getattr(
            context, "path_format", None)
        if not path_format:
            return ()
        prefixes.add(path_format.split("{", 1)[0])
    return tuple(sorted(prefixes))


def gated(matches: Matcher, prefixes: tuple[str, ...]) -> Matcher:
    def matches_if_possible(scope: Scope) -> tuple[Match, Scope]:
        # Under a root path the route path is the path less that root: left to FastAPI.
        if scope.get("root_path") or scope["path"].startswith(prefixes):
            return matches(scope)
        return Match.NONE, {}

    return matches_if_possible
