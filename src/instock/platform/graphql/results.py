"""Completed results of a field, reused while what they were made of is unchanged.

A drop's product page is one query asked hundreds of times a second by different shoppers,
and its product part (twenty sizes, each with its stock: some 120 fields) is the same for all
of them until a unit moves. Completing those fields costs about a millisecond each time; here
it is done once per change instead.

A resolver offers its result with `reusable(info, made_of, render)`: `made_of` are the very
objects the result was rendered from (copies from `platform.readcache`, which replaces a copy
the moment its entity changes). The completed result is kept under the field's selection (the
same query text, the variables it uses, the caller's role) and reused while the resolver is
handed the same objects again: identity, not equality, so nothing can be stale that the read
caches would not serve anyway. A result that raised any error inside is never kept.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLOutputType,
    GraphQLResolveInfo,
    Node,
    VariableNode,
)
from graphql.pyutils import Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from instock.platform.graphql.context import Info

MAX_RESULTS = 1000  # distinct (selection, variables, role) results kept per process


@dataclass(frozen=True, slots=True)
class _Reuse:
    completed: Any  # returned as the field's completed value


@dataclass(frozen=True, slots=True)
class _Keep:
    value: Any  # what to complete
    key: Hashable
    node: FieldNode
    made_of: tuple[object, ...]
    results: Results


@dataclass(slots=True)
class _Entry:
    node: FieldNode  # held: the key carries its id, which must not be reused meanwhile
    made_of: tuple[object, ...]
    completed: Any


class Results:
    """One process's kept results (the app holds one; requests find it in their context)."""

    def __init__(self, max_entries: int = MAX_RESULTS) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._variables: dict[int, tuple[FieldNode, tuple[str, ...]]] = {}
        self.hits = 0
        self.misses = 0

    def find(self, key: Hashable, node: FieldNode, made_of: tuple[object, ...]) -> Any | None:
        entry = self._entries.get(key)
        if entry is None or entry.node is not node or len(entry.made_of) != len(made_of) \
                or any(a is not b for a, b in zip(entry.made_of, made_of, strict=True)):
            self.misses += 1
            return None
        self.hits += 1
        return entry.completed

    def keep(self, key: Hashable, node: FieldNode, made_of: tuple[object, ...],
             completed: Any) -> None:
        self._entries.pop(key, None)
        self._entries[key] = _Entry(node, made_of, completed)
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def variables_of(self, node: FieldNode, info: GraphQLResolveInfo) -> tuple[str, ...]:
        """The variables this field's selection uses (its fragments' included), found once."""
        known = self._variables.get(id(node))
        if known is not None and known[0] is node:
            return known[1]
        names: set[str] = set()
        _collect_variables(node, info, names, set())
        found = tuple(sorted(names))
        if len(self._variables) >= self.max_entries:
            self._variables.clear()
        self._variables[id(node)] = (node, found)
        return found


def reusable(info: Info, made_of: tuple[object, ...], render: Callable[[], Any]) -> Any:
    """What the resolver returns: the kept completed result if it was made of `made_of`,
    else `render()`, completed as usual and then kept."""
    results: Results | None = info.context.results
    if results is None:
        return render()
    node = info._raw_info.field_nodes[0]
    variables = info.variable_values or {}
    principal = info.context.principal
    key = (id(node), principal.role if principal else None,
           tuple((name, _frozen(variables.get(name)))
                 for name in results.variables_of(node, info._raw_info)))
    completed = results.find(key, node, made_of)
    if completed is not None:
        return _Reuse(completed)
    return _Keep(render(), key, node, made_of, results)


class ReusingExecution(StrawberryGraphQLCoreExecutionContext):
    """Completes fields as graphql-core does, except those a resolver offered as reusable."""

    def complete_value(self, return_type: GraphQLOutputType, field_details_list: Any,
                       info: GraphQLResolveInfo, path: Path, result: Any,
                       position_context: Any) -> Any:
        kind = type(result)
        if kind is _Reuse:
            return result.completed
        if kind is not _Keep:
            return super().complete_value(return_type, field_details_list, info, path, result,
                                          position_context)
        completed = super().complete_value(return_type, field_details_list, info, path,
                                           result.value, position_context)
        if self.is_awaitable(completed):
            return self._keep_when_done(completed, result, path)
        self._keep(result, path, completed)
        return completed

    async def _keep_when_done(self, completing: Any, keep: _Keep, path: Path) -> Any:
        completed = await completing
        self._keep(keep, path, completed)
        return completed

    def _keep(self, keep: _Keep, path: Path, completed: Any) -> None:
        prefix = path.as_list()
        if any(error.path is not None and error.path[:len(prefix)] == prefix
               for error in self.collected_errors.errors):
            return  # an error inside is this caller's answer, not everyone's
        keep.results.keep(keep.key, keep.node, keep.made_of, completed)


def _collect_variables(node: Node, info: GraphQLResolveInfo, names: set[str],
                       fragments: set[str]) -> None:
    if isinstance(node, VariableNode):
        names.add(node.name.value)
        return
    if isinstance(node, FragmentSpreadNode):
        name = node.name.value
        if name not in fragments and name in info.fragments:
            fragments.add(name)
            _collect_variables(info.fragments[name], info, names, fragments)
    for key in node.keys:
        value = getattr(node, key, None)
        for child in (value if isinstance(value, tuple | list) else (value,)):
            if isinstance(child, Node):
                _collect_variables(child, info, names, fragments)


def _frozen(value: Any) -> Hashable:
    """A variable's value as part of a key (lists and input objects included)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return value if isinstance(value, Hashable) else repr(value)
