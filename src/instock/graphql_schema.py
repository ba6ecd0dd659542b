"""The GraphQL schema: one from each context's types (DESIGN.md §8), with the extensions that
guard and speed it. Part of the composition root (app.py mounts it)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from strawberry.extensions import (
    DisableIntrospection,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.tools import merge_types

from instock.analytics.graphql import AnalyticsQuery
from instock.catalog.graphql import CatalogQuery
from instock.config import Settings
from instock.customers.graphql import CustomersMutation, CustomersQuery
from instock.drops.graphql import DropsMutation, DropsQuery, DropsSubscription
from instock.experiments.graphql import ExperimentsQuery
from instock.inventory.graphql import InventoryMutation, InventoryQuery
from instock.live.graphql import LiveSubscription
from instock.orders.graphql import OrdersMutation, OrdersQuery
from instock.platform.graphql import (
    Limits,
    PrintableInputs,
    ProblemErrors,
    ReusingExecution,
    Schema,
    allowlist,
    persisted_only,
    query_limits,
)
from instock.polls.graphql import PollsMutation, PollsQuery
from instock.recommendations.graphql import (
    RecommendationsMutation,
    RecommendationsQuery,
    RecommendationsSubscription,
)
from instock.services import CONTEXTS
from instock.waitlist.graphql import WaitlistMutation
from instock.web import OPERATIONS
from instock.webhooks.graphql import WebhooksQuery

GRAPHQL_DOCUMENTS = 1000  # distinct query documents kept parsed and validated


# Each context's root types, in the order they are merged (the order of the schema's fields).
QUERIES = (("catalog", CatalogQuery), ("inventory", InventoryQuery), ("orders", OrdersQuery),
           ("recommendations", RecommendationsQuery), ("experiments", ExperimentsQuery),
           ("webhooks", WebhooksQuery), ("customers", CustomersQuery), ("polls", PollsQuery),
           ("analytics", AnalyticsQuery), ("drops", DropsQuery))
MUTATIONS = (("inventory", InventoryMutation), ("orders", OrdersMutation),
             ("recommendations", RecommendationsMutation), ("waitlist", WaitlistMutation),
             ("customers", CustomersMutation), ("polls", PollsMutation),
             ("drops", DropsMutation))
SUBSCRIPTIONS = (("live", LiveSubscription), ("recommendations", RecommendationsSubscription),
                 ("drops", DropsSubscription))


def graphql_contexts(served: frozenset[str]) -> frozenset[str]:
    """Whose fields a process's endpoint has: every context's with the `graphql` service,
    else its own contexts' (instock/services.py)."""
    return frozenset(CONTEXTS) if "graphql" in served else served & frozenset(CONTEXTS)


def graphql_schema(settings: Settings) -> Schema | None:
    """One schema from the root types of the contexts this process serves (DESIGN.md §8);
    None when none of them has a query (a GraphQL schema needs one)."""
    contexts = graphql_contexts(settings.served)
    queries, mutations, subscriptions = ([t for name, t in types if name in contexts]
                                         for types in (QUERIES, MUTATIONS, SUBSCRIPTIONS))
    if not queries:
        return None
    extensions: list[type[SchemaExtension] | Callable[[], SchemaExtension]] = [
        # A storefront sends the same few documents again and again: parse and validate each
        # once (validation alone cost ~4 ms a request).
        partial(ParserCache, maxsize=GRAPHQL_DOCUMENTS),
        partial(ValidationCache, maxsize=GRAPHQL_DOCUMENTS),
        ProblemErrors, PrintableInputs, query_limits(Limits(
            max_depth=settings.graphql_max_depth, max_aliases=settings.graphql_max_aliases,
            max_cost=settings.graphql_max_cost))]
    if settings.graphql_persisted_only:
        extensions += [persisted_only(allowlist(OPERATIONS)), DisableIntrospection]
    return Schema(
        query=merge_types("Query", tuple(queries)),
        mutation=merge_types("Mutation", tuple(mutations)) if mutations else None,
        subscription=(merge_types("Subscription", tuple(subscriptions))
                      if subscriptions else None),
        extensions=extensions, execution_context_class=ReusingExecution)
