"""GraphQL errors that say what REST's problem+json says.

A service raises the house's errors (`platform.errors`); here each becomes a GraphQL error whose
`extensions` carry the same problem `type`, `title`, `status` and fields, plus a `code`
(`NOT_FOUND`, `VALIDATION_ERROR`, `FORBIDDEN`…). Anything unexpected is masked: no stack trace
or SQL reaches a client, as on REST."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import strawberry
import structlog
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import (
    ExecutionContext,
    ExecutionResult,
    StreamExecutionResult,
)

from instock.platform.errors import InstockError

log = structlog.get_logger(__name__)


def code_of(slug: str) -> str:
    return slug.upper().replace("-", "_")


def problem_error(error: InstockError) -> GraphQLError:
    """A house error raised before execution (where no result's errors are rewritten)."""
    return GraphQLError(error.detail, original_error=error,
                        extensions={"code": code_of(error.slug), **error.problem()})


def typed(error: GraphQLError) -> GraphQLError:
    """The client's view of one error."""
    original = error.original_error
    if isinstance(original, InstockError):
        problem = original.problem()
        return GraphQLError(original.detail, error.nodes, error.source, error.positions,
                            error.path, extensions={"code": code_of(original.slug), **problem})
    if original is None or isinstance(original, GraphQLError):
        # The query itself is wrong (syntax, unknown field, bad variable): the library's
        # message says which; a limit's error already has its code.
        inner = original if isinstance(original, GraphQLError) else error
        extensions: dict[str, Any] = {"code": "GRAPHQL_VALIDATION_FAILED", "status": 400,
                                      **(inner.extensions or {})}
        return GraphQLError(error.message, error.nodes, error.source, error.positions,
                            error.path, extensions=extensions)
    log.error("graphql_unhandled_error", path=error.path, error=type(original).__name__,
              exc_info=original)
    return GraphQLError("Internal error", error.nodes, error.source, error.positions, error.path,
                        extensions={"code": "INTERNAL_ERROR", "status": 500})


class ProblemErrors(SchemaExtension):
    """Rewrites every error of a result with `typed`: a query's or mutation's result, and
    each result a subscription streams."""

    def on_operation(self) -> Iterator[None]:
        yield
        _rewrite(self.execution_context.result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        _rewrite(result)
        yield None


def _rewrite(result: object) -> None:
    if isinstance(result, (GraphQLExecutionResult, ExecutionResult)) and result.errors:
        result.errors = [typed(error) for error in result.errors]


class Schema(strawberry.Schema):
    """A schema that leaves logging errors to `typed`: a refused reservation or a bad query
    is the client's answer, not a server error with a stack trace in the log."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        return None
