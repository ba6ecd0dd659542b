"""Every GraphQL type of every context has a name of its own: strawberry keeps one of two
types that share a name without a word (analytics' Conversion once hid the experiments')."""

from __future__ import annotations

import importlib
import pkgutil
from collections import defaultdict

import instock


def test_no_two_graphql_types_share_a_name() -> None:
    names: dict[str, dict[int, str]] = defaultdict(dict)  # name -> the classes bearing it
    for found in pkgutil.iter_modules(instock.__path__):
        try:
            module = importlib.import_module(f"instock.{found.name}.graphql")
        except ModuleNotFoundError:
            continue
        for value in vars(module).values():
            definition = getattr(value, "__strawberry_definition__", None)
            if definition is not None:  # the same class imported elsewhere counts once
                names[definition.name][id(value)] = f"{module.__name__}.{value.__qualname__}"
    assert len(names) > 20  # the contexts' types were found
    assert {name: sorted(where.values()) for name, where in names.items()
            if len(where) > 1} == {}
