"""GraphQL operations made from the schema alone, one per root field, with valid made-up
arguments (so only the field's own checks can refuse them): for the every-door test."""

from __future__ import annotations

from typing import Any

import httpx
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    get_named_type,
    is_composite_type,
)

SCALARS: dict[str, Any] = {"String": "nope", "ID": "nope", "Int": 1, "Float": 1.0,
                           "Boolean": True, "DateTime": "2026-01-01T00:00:00+00:00",
                           "Date": "2026-01-01", "Decimal": "1.00", "JSON": {}, "UUID":
                           "00000000-0000-7000-8000-000000000000"}
# Arguments whose made-up value must have a shape of its own to pass validation. A customer's
# id is the asking customer's own (OWN), so only a role can refuse it.
OWN_CUSTOMER = "door-cust-a"
BY_NAME: dict[str, Any] = {"quantity": 1, "first": 1, "limit": 1, "context": "home",
                           "channel": "web", "customerId": OWN_CUSTOMER, "type": "view",
                           "kind": "receive"}
# Root fields whose `id` argument names a customer.
CUSTOMER_IDS = {"customer", "updateCustomer"}


def value_for(kind: GraphQLInputType, field: str = "") -> Any:
    """A valid made-up value of an input type: required fields filled, lists of one."""
    if isinstance(kind, GraphQLNonNull):
        return value_for(kind.of_type, field)
    if isinstance(kind, GraphQLList):
        return [value_for(kind.of_type, field)]
    if isinstance(kind, GraphQLEnumType):
        return next(iter(kind.values))
    if isinstance(kind, GraphQLInputObjectType):
        return {name: value_for(f.type, name) for name, f in kind.fields.items()
                if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined}
    assert isinstance(kind, GraphQLScalarType)
    return BY_NAME.get(field, SCALARS.get(kind.name, "nope"))


def operation(kind: str, name: str, field: GraphQLField) -> tuple[str, dict[str, Any]]:
    """`kind` is query or mutation: the operation asking for `name` with every required
    argument, as variables."""
    required = {arg: spec for arg, spec in field.args.items()
                if isinstance(spec.type, GraphQLNonNull)}
    declared = ", ".join(f"${arg}: {spec.type}" for arg, spec in required.items())
    values = {arg: (OWN_CUSTOMER if arg == "id" and name in CUSTOMER_IDS
                    else value_for(spec.type, arg)) for arg, spec in required.items()}
    passed = ", ".join(f"{arg}: ${arg}" for arg in required)
    selection = " { __typename }" if is_composite_type(get_named_type(field.type)) else ""
    head = f"{kind} Door({declared})" if declared else f"{kind} Door"
    query = f"{head} {{ {name}{f'({passed})' if passed else ''}{selection} }}"
    return query, values


def operations(schema: GraphQLSchema) -> list[tuple[str, str, dict[str, Any]]]:
    """(Type.field, query, variables) for every root query and mutation field."""
    found = []
    for kind, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert isinstance(root, GraphQLObjectType)
        for name, field in root.fields.items():
            query, variables = operation(kind, name, field)
            found.append((f"{root.name}.{name}", query, variables))
    return found


def classify(answer: httpx.Response) -> str:
    """'-' refused for want of a token, 'x' refused for its role, 'Y' let in."""
    codes = {e.get("extensions", {}).get("code") for e in answer.json().get("errors") or []}
    if "UNAUTHORIZED" in codes:
        return "-"
    return "x" if "FORBIDDEN" in codes else "Y"
