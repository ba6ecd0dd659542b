"""Query limits: depth, aliases and cost, measured on the document before anything runs.

One walk over the chosen operation, with every fragment spread expanded where it is used: an
alias inside a fragment counts once per spread (the hole behind GHSA-fr49-mhgj-crfc was
counting a fragment's aliases once however often it is spread). Introspection fields
(`__schema`, `__type`) are not measured.

The cost map (documented in the README): every field that returns an object costs 1 unless
`Limits.costs` names it ("Type.field" -> cost), a scalar field costs 0. A field with a `first` or
`limit` argument multiplies what is under it by that number (the first list under it, a
connection's `edges`, is that page); any other list counts as `Limits.default_list_size` items.
So `products(first: 50) { edges { node { variants { stock { available } } } } }` costs
1 + 50 * (1 + 1 + 1 + 20 * 1) = 1,151. The cost is reported in the response's
`extensions.cost` and a query over `max_cost` is refused before it runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from strawberry.extensions import SchemaExtension

from instock.platform.graphql.errors import problem_error
from instock.platform.ratelimit import STATE_KEY as RATE_LIMIT_STATE
from instock.platform.ratelimit import Refused, Weighed

SIZE_ARGUMENTS = ("first", "limit")
MEASURED_DOCUMENTS = 1000  # measures kept; beyond, documents are measured every time


@dataclass(frozen=True)
class Limits:
    max_depth: int = 10
    max_aliases: int = 20
    max_cost: int = 25_000
    default_list_size: int = 20
    costs: Mapping[str, int] = field(default_factory=dict)

    def check(self, found: Measure) -> None:
        """Raise the first limit `found` breaks, as an error with a stable code."""
        for code, value, limit, what in (
                ("DEPTH_LIMIT", found.depth, self.max_depth, "depth"),
                ("ALIAS_LIMIT", found.aliases, self.max_aliases, "aliases"),
                ("COST_LIMIT", found.cost, self.max_cost, "cost")):
            if value > limit:
                raise GraphQLError(f"query {what} {value} is over the limit of {limit}",
                                   extensions={"code": code, "status": 400, "limit": limit,
                                               "found": value})


@dataclass(frozen=True)
class Measure:
    depth: int
    aliases: int
    cost: int


def measure(document: DocumentNode, schema: GraphQLSchema, limits: Limits,
            variables: Mapping[str, Any] | None = None,
            operation_name: str | None = None) -> Measure:
    fragments = {d.name.value: d for d in document.definitions
                 if isinstance(d, FragmentDefinitionNode)}
    operation = _operation(document, operation_name)
    if operation is None:
        return Measure(0, 0, 0)
    root = schema.get_root_type(operation.operation)
    if root is None:
        return Measure(0, 0, 0)
    walk = _Walk(fragments, limits, variables or {})
    return walk.selection(operation.selection_set, root, frozenset())


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((op for op in operations if op.name and op.name.value == name), None)


@dataclass
class _Walk:
    fragments: Mapping[str, FragmentDefinitionNode]
    limits: Limits
    variables: Mapping[str, Any]

    def selection(self, selection_set: SelectionSetNode | None, parent: Any,
                  seen: frozenset[str], paged: bool = False) -> Measure:
        depth = aliases = cost = 0
        for node, owner in self._fields(selection_set, parent, seen):
            found = self.field(node, owner, seen, paged)
            depth, aliases, cost = max(depth, found.depth), aliases + found.aliases, \
                cost + found.cost
        return Measure(depth, aliases, cost)

    def _fields(self, selection_set: SelectionSetNode | None, parent: Any,
                seen: frozenset[str]) -> Iterator[tuple[FieldNode, Any]]:
        """Every field selected, fragments expanded (a fragment already on the path is not
        followed again: the spec forbids cycles, and validation reports them)."""
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, FieldNode):
                yield node, parent
            elif isinstance(node, InlineFragmentNode):
                yield from self._fields(node.selection_set, parent, seen)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                fragment = self.fragments.get(node.name.value)
                if fragment is not None:
                    yield from self._fields(fragment.selection_set, parent,
                                            seen | {node.name.value})

    def field(self, node: FieldNode, parent: Any, seen: frozenset[str],
              paged: bool) -> Measure:
        """`paged`: a field above gave the page size, so a list here is that page."""
        name = node.name.value
        alias = 1 if node.alias else 0
        if name.startswith("__"):
            return Measure(0, alias, 0)
        definition = (parent.fields.get(name)
                      if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else None)
        if definition is None:  # unknown: validation says so
            return Measure(1, alias, 0)
        named = get_named_type(definition.type)
        composite = isinstance(named, GraphQLObjectType | GraphQLInterfaceType)
        own = self.limits.costs.get(f"{parent.name}.{name}", 1 if composite else 0)
        given = self._given_size(node)
        is_list = _is_list(definition.type)
        inner = self.selection(node.selection_set, named, seen,
                               paged=given is not None or (paged and not is_list))
        size = given if given is not None else (
            self.limits.default_list_size if is_list and not paged else 1)
        return Measure(inner.depth + 1, alias + inner.aliases, own + size * inner.cost)

    def _given_size(self, node: FieldNode) -> int | None:
        for argument in node.arguments or ():
            if argument.name.value in SIZE_ARGUMENTS:
                value = argument.value
                if isinstance(value, IntValueNode):
                    return max(int(value.value), 0)
                if isinstance(value, VariableNode):
                    given = self.variables.get(value.name.value)
                    if isinstance(given, int):
                        return max(given, 0)
        return None


def _is_list(kind: GraphQLOutputType) -> bool:
    while isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    return isinstance(kind, GraphQLList)


async def charge(context: Any, cost: int) -> None:
    """Count the query at its cost against the rate limits weighted by cost (the middleware
    left them in the request's state: it cannot measure a query). Over a limit, the answer is
    a 429 whose error carries the problem, with Retry-After, as on REST."""
    request = getattr(context, "request", None)
    state = request.scope.get("state", {}) if request is not None else {}
    weighed: Weighed | None = state.get(RATE_LIMIT_STATE)
    if weighed is None:
        return
    response = context.response
    try:
        headers = await weighed.charge(cost)
    except Refused as refused:
        response.status_code = refused.error.status
        response.headers.update(refused.headers)
        raise problem_error(refused.error) from None
    response.headers.update(headers)


def query_limits(limits: Limits) -> type[SchemaExtension]:
    """A schema extension enforcing `limits` (a class: Strawberry makes one per operation)."""

    # The same few documents come again and again: each measured once per set of the values
    # that can change its measure (integer variables: page sizes).
    measured: dict[tuple[str, str | None, tuple[tuple[str, int], ...]], Measure] = {}

    class QueryLimits(SchemaExtension):
        cost = 0

        async def on_validate(self) -> AsyncIterator[None]:
            context = self.execution_context
            if context.graphql_document is not None:
                sizes = tuple(sorted((k, v) for k, v in (context.variables or {}).items()
                                     if isinstance(v, int)))
                key = (context.query or "", context.operation_name, sizes)
                found = measured.get(key)
                if found is None:
                    found = measure(context.graphql_document, context.schema._schema, limits,
                                    context.variables, context.operation_name)
                    if context.query and len(measured) < MEASURED_DOCUMENTS:
                        measured[key] = found
                self.cost = found.cost
                limits.check(found)
                await charge(context.context, found.cost)
            yield

        def get_results(self) -> dict[str, Any]:
            return {"cost": {"requested": self.cost, "limit": limits.max_cost}}

    return QueryLimits
