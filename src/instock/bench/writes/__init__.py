"""`instock bench writes`: what a write costs over HTTP, against the same server's `/livez`.

The server. Without `--http`: a scratch database on the backend `--database` names, the
payment sandbox at 0 ms a call, and one `instock serve` process on them (memory bus; relay and
consumers in-process, sweeper off). With `--http URL`: that running server (it must share
this configuration's signing key; checkouts then go to whatever provider it has, and
provider captures are not checked).

The shop, seeded through the API: the bench location, one catalogue variant per SKU
(`--skus` for adjustments, as many for reservations, `--checkout-skus` for checkouts), and a
receipt of 100,000 units for each (parallel requests, with a progress bar).

The ceiling: `GET /livez` from `--concurrency` closed-loop clients on the same raw keep-alive
connections (`bench/wire.py`) for `--seconds`. Every case's `ratio_to_livez` is its HTTP
requests/s at saturation over that rate.

Each case, in turn: a few untimed operations, then saturation (`--concurrency` clients, each
starting its next operation as its last one ends, for `--seconds`), then an open loop at a
fixed offered rate (`--rate` requests/s, by default half of the case's saturated rate) for
`--seconds`, whose latencies count from each operation's due time (no coordinated omission):
- adjustment: a receipt of one unit, then a count, in turn on each SKU, spread round-robin
  over the SKUs (POST /v1/inventory/adjustments, an admin token);
- reservation: POST /v1/reservations of one unit by a customer (1,000 customers' tokens),
  then its POST …/commit: two requests an operation, both counted, spread over the SKUs;
- checkout: POST /v1/checkout of one unit by a customer (reserve, authorise, commit,
  capture, hand to fulfilment in the request), over the checkout SKUs;
- drop: `bench drop --http`'s case as it is, `--drop-buyers` at once for `--drop-units` of
  one SKU (no offered rate: a drop is everyone at once).

Each row: requests/s, ratio to `/livez`, p50/p95/p99 (request start to answer), and per
request the server's own counts (its /metrics: SQL statements, transactions committed and
rolled back, process CPU) over the phase, the relay's and consumers' work included (the
report's `counters` says so). `offered` holds the same at the fixed rate.

The checks, like the other benches': `oversold` is the units held (reserved or committed)
beyond on_hand over the SKUs; `lost` the answered writes the record does not hold: for
adjustments each answered level version must be in the SKU's ledger; for reservations and
checkouts every unit answered must be committed or reserved (paid ones committed), and with
our own sandbox its captures are reported beside them. Finally the server re-folds the whole
ledger (`audit`, as `instock audit verify`): `ledger.ok`. Bad results are listed in words
under `findings`.
"""

from instock.bench.writes.plan import CASES, Plan
from instock.bench.writes.run import Result, run

__all__ = ["CASES", "Plan", "Result", "run"]
