"""What every context's GraphQL types share: the request context and its DataLoaders,
who is asking, typed errors that carry the REST problem document, and the query limits.

The schema itself is composed in the composition root (`instock.app`) from each context's
`graphql.py`; nothing here knows a business context."""

from instock.platform.graphql.context import (
    GraphContext,
    Info,
    correlation_id,
    entry_context,
    parse,
    require,
)
from instock.platform.graphql.errors import ProblemErrors, Schema
from instock.platform.graphql.inputs import PrintableInputs
from instock.platform.graphql.limits import Limits, query_limits
from instock.platform.graphql.paging import PageInfo, decode_cursor, encode_cursor
from instock.platform.graphql.persisted import allowlist, persisted_only
from instock.platform.graphql.results import Results, ReusingExecution, reusable
from instock.platform.graphql.router import InstockGraphQLRouter

__all__ = [
    "GraphContext", "Info", "InstockGraphQLRouter", "Limits", "PageInfo", "PrintableInputs",
    "ProblemErrors", "Results", "ReusingExecution", "Schema", "allowlist", "correlation_id",
    "decode_cursor", "encode_cursor", "entry_context", "parse", "persisted_only",
    "query_limits", "require", "reusable",
]
