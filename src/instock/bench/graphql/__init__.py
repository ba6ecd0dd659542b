"""`instock bench graphql`: the storefront's product page as one GraphQL query against the
REST calls it replaces, commit-to-subscriber latency of `stockChanged`, and how many GraphQL
subscribers one process holds.

The shop. A fresh database and one `instock serve` process on the memory bus (relay in-process,
sweeper and consumers off, as the events bench runs it), seeded with the page's product (20
sizes, each stocked) and 15 other stocked products of its brand and category, so the
recommendations strip has its 10 items.

The page, both ways, at the same steady open-loop rate (`--rate` pages/s for `--seconds`; page
i is due at t0 + i/rate however slow earlier ones are, so a slow server cannot hide latency),
over raw keep-alive HTTP/1.1 connections (a pool of 64 per side: time waiting for one counts):
- query: one POST /graphql asking for the product, each size's `stock(channel: "web")` and
  `recommendations(sessionId, context: "product:<id>", limit: 10)`; any `errors` in the body,
  a missing size or an empty strip is an error;
- rest: GET /v1/products/{id}, then (a client learns the SKUs from the product) the 20
  GET /v1/inventory/{sku}?channel=web and GET /v1/recommendations at once; a page's latency
  runs from its due time until its last answer.
Both use the same admin token (REST's product and inventory routes need one) and the same
1,000 session ids. The query runs first, then REST, after an untimed warm-up of both.

Subscriptions. On the same server, `--listeners` GraphQL subscribers (graphql-transport-ws,
the `websockets` library, in a process of their own so the load generator's CPU does not delay
their stamps), each with one `stockChanged` on all 20 SKUs; stock adjustments are posted
over HTTP at `--changes-per-s` for `--seconds` (open loop, the events bench's HTTP driver). Every
subscriber's arrivals are matched with the commits by (sku, version), as the events bench
does for SSE: `p50_ms`/`p99_ms` run from the outbox row's `created_at` (stamped inside the
committing transaction) to the arrival; `from_answer` (from the write's answer, an
under-estimate) and `from_send` (from sending it, an over-estimate) bound it. A version a
subscriber skipped because a newer one of that SKU came first is `coalesced`; one never
superseded and never received is `lost` (it should be 0).

Capacity. A fresh server holding `--subscribers` subscriptions, each its own WebSocket with
`stockChanged` on a shared hot SKU and one of its own, from a client process that connects 200
at a time; each counts once its first message (the current state) arrived. The server's RSS
(with its children) is read before and with them; then one change to the hot SKU goes out and
`fanout_ms` is how long until every subscriber had it, from sending the write. Clients ask for
no permessage-deflate (its zlib state would be a per-connection cost the client chose).
Both processes raise their soft RLIMIT_NOFILE to the hard limit (each WebSocket is a
descriptor on both sides).
"""

from instock.bench.graphql.plan import Plan
from instock.bench.graphql.run import Result, run

__all__ = ["Plan", "Result", "run"]
