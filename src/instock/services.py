"""Which contexts one process serves: `instock serve --services inventory,orders` (the setting
`INSTOCK_SERVICES`), so a fleet deploys and scales each apart from one code base. The default,
`all`, is every context in one process, as the embedded default always was.

A process mounts the REST routes, GraphQL fields, gRPC services and background work of its
contexts only. Two names are not contexts: `web` (the storefront's and console's pages and
their static files) and `graphql` (the GraphQL endpoint with every context's fields; without it
a process's endpoint has its own contexts' fields only). Part of the composition root."""

from __future__ import annotations

from collections.abc import Iterable

# In the order a request is matched against their routes (about a third of a millisecond
# through all of them): the storefront's hottest routes come first.
CONTEXTS = ("recommendations", "inventory", "live", "catalog", "waitlist", "customers",
            "privacy", "polls", "notifications", "orders", "payments", "webhooks", "channels",
            "experiments", "reconciliation", "identity", "analytics", "drops")
SURFACES = ("web", "graphql")
NAMES = CONTEXTS + SURFACES
ALL = frozenset(NAMES)


class UnknownService(ValueError):
    """A name in INSTOCK_SERVICES / --services that is not a context or surface."""


def parse(spec: str | Iterable[str]) -> frozenset[str]:
    """The services a spec names: `all` (or empty) is every one; otherwise a comma-separated
    list of names from NAMES, each checked."""
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return ALL
    unknown = sorted(set(names) - ALL)
    if unknown:
        raise UnknownService(f"unknown service {', '.join(unknown)}: choose from all, "
                             f"{', '.join(NAMES)}")
    return frozenset(names)


def describe(services: frozenset[str]) -> str:
    """`all`, or the names in the house's order (for logs and the banner)."""
    return "all" if services == ALL else ",".join(n for n in NAMES if n in services)
