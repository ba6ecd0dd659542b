"""Persisted-query mode: only the operations the pages themselves send may run.

The allowlist is the sha256 of each operation in the pages' operations file, computed from that
file as packaged (so it cannot go stale against the pages). With the mode on, any other query
text is refused with `PERSISTED_QUERY_NOT_FOUND` before it is parsed, and introspection is off."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

# An operation starts at a line beginning `query`, `mutation` or `subscription` and runs to
# the next one (the pages' operations use no fragments); the pages split the file the same way.
_START = re.compile(r"^(?:query|mutation|subscription)\b", re.MULTILINE)


def operations(text: str) -> list[str]:
    """The operations of a .graphql file, each stripped of surrounding blank lines."""
    starts = [match.start() for match in _START.finditer(text)]
    return [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)], strict=True)]


def digest(query: str) -> str:
    return hashlib.sha256(query.strip().encode()).hexdigest()


def allowlist(*files: Path) -> frozenset[str]:
    return frozenset(digest(op) for path in files for op in operations(path.read_text()))


def persisted_only(allowed: frozenset[str]) -> type[SchemaExtension]:
    class PersistedOnly(SchemaExtension):
        def on_operation(self) -> Iterator[None]:
            query = self.execution_context.query or ""
            if digest(query) not in allowed:
                raise GraphQLError(
                    "only the pages' persisted queries may run on this server",
                    extensions={"code": "PERSISTED_QUERY_NOT_FOUND", "status": 400,
                                "sha256": digest(query)})
            yield

    return PersistedOnly
