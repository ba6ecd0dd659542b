"""The pages people open: the drop storefront (`/`) and the operations console (`/ops`).

Static files and templates only; the pages talk to the API through GraphQL and REST like any
other client. `OPERATIONS` holds every GraphQL operation the pages send: the persisted-query
allowlist is made from it."""

from pathlib import Path

HERE = Path(__file__).parent
STATIC = HERE / "static"
OPERATIONS = STATIC / "operations.graphql"
