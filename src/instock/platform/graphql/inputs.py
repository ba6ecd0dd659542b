"""Strings a client sends through GraphQL hold no control characters (PostgreSQL text cannot
hold NUL): checked once per request, before anything runs, in the query's literals and in its
variables, so such input is a VALIDATION_ERROR naming the argument, never a 500 (as REST's
`platform.text.Printable`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, ClassVar

from graphql import ArgumentNode, DocumentNode, StringValueNode, visit
from graphql.language import Visitor
from strawberry.extensions import SchemaExtension

from instock.platform.errors import ValidationFailed
from instock.platform.graphql.errors import problem_error

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
CLEAN_DOCUMENTS = 1000  # query texts known to hold no such literal


class PrintableInputs(SchemaExtension):
    # Shared by every request (Strawberry makes an instance per operation).
    _clean: ClassVar[set[str]] = set()

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        if context.graphql_document is not None and query not in self._clean:
            _check_literals(context.graphql_document)
            if len(self._clean) < CLEAN_DOCUMENTS:
                self._clean.add(query)
        for name, value in (context.variables or {}).items():
            _check_value(name, value)
        yield


def _check_value(field: str, value: Any) -> None:
    if isinstance(value, str):
        if _CONTROL.search(value):
            raise problem_error(ValidationFailed(field, "control characters are not allowed"))
    elif isinstance(value, dict):
        for key, inner in value.items():
            _check_value(f"{field}.{key}", inner)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_value(f"{field}[{i}]", inner)


class _Literals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.argument = "query"

    def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
        self.argument = node.name.value

    def enter_string_value(self, node: StringValueNode, *_: Any) -> None:
        if _CONTROL.search(node.value):
            raise problem_error(ValidationFailed(self.argument,
                                                 "control characters are not allowed"))


def _check_literals(document: DocumentNode) -> None:
    visit(document, _Literals())
