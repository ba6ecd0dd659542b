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

from instock.catalog.graphql import CatalogQuery
from instock.config import Settings
from instock.customers.graphql import CustomersMutation, CustomersQuery
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
from instock.waitlist.graphql import WaitlistMutation
from instock.web import OPERATIONS
from instock.webhooks.graphql import WebhooksQuery

GRAPHQL_DOCUMENTS = 1000  # distinct query documents kept parsed and validated


def graphql_schema(settings: Settings) -> Schema:
    """One schema from each context's types (DESIGN.md §8)."""
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
        query=merge_types("Query", (CatalogQuery, InventoryQuery, OrdersQuery,
                                    RecommendationsQuery, ExperimentsQuery, WebhooksQuery,
                                    CustomersQuery, PollsQuery)),
        mutation=merge_types("Mutation", (InventoryMutation, OrdersMutation,
                                          RecommendationsMutation, WaitlistMutation,
                                          CustomersMutation, PollsMutation)),
        subscription=merge_types("Subscription", (LiveSubscription,
                                                  RecommendationsSubscription)),
        extensions=extensions, execution_context_class=ReusingExecution)
