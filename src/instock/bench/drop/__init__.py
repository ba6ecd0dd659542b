"""`instock bench drop`: B buyers at once for U units of one hot SKU, five ways side by side.

Every strategy gets a SKU of its own with U units at one location, created through the
services (catalogue, location, a receipt) on a fresh database (`--database` only chooses the
backend and, for PostgreSQL, the server: the bench creates a database there, migrates it and
drops it afterwards). All B buyers wait at one barrier and are released together; each asks
for one unit once (`--mode drop`), or again and again for `--seconds` while a restocker
receives U more whenever the SKU sells out (`--mode sustained`; a refused buyer waits for
that restock).

The strategies (raw SQL on instock's own tables, see `sql.py`, except the last):
- `for_update`: SELECT … FOR UPDATE, decide, write (BEGIN IMMEDIATE on SQLite);
- `occ_retry`: read unlocked, UPDATE … WHERE version = read version, retry on 0 rows;
- `conditional_update`: one UPDATE … WHERE available >= 1 RETURNING per request;
- `redis_gate` (with `--redis`): a Lua check-and-decrement, write-behind to the database;
- `drop_lane`: instock itself, `InventoryService.reserve` (over HTTP with `--http URL`).

What each row says:
- `confirmed`, `refused`, `errors`: what the buyers were told (a refusal is "sold out");
- `throughput_rps`: confirmations per second, from the release to the last confirmation (a
  drop), or those answered while buyers were asking over `--seconds` (sustained: requests
  still queued then finish afterwards, and count in `confirmed` but not here);
  `requests_per_s`: every answer over the whole run (`elapsed_s`);
- `p50_ms` … `p99_ms`: from a buyer's request start to its answer, confirmed or refused;
  `answered_within_ms` (a drop): from the release to the last buyer's answer, the time by
  which every buyer knew (null if any got no answer);
- `conflicts`: retries the strategy needed (failed version checks; for the lane its batch
  retries when the service counts them, else the version conflicts its metrics counted);
- `oversold`: units confirmed beyond the stock, or held reserved beyond on_hand by the
  database afterwards (`db_excess`), whichever is more; `lost`: confirmed ids the database
  does not hold after the run (after a write-behind has had DRAIN_TIMEOUT to catch up). Bad
  results are reported as they are, and listed in words under `summary.findings`.

Over HTTP the buyers share `--connections` raw keep-alive connections (`bench/wire.py`), and
so does the ceiling: `GET /livez` B times at once, before the drop; `ratio_to_livez` is the
drop's `requests_per_s` over that rate.

Latency and throughput are measured in this process, which also drives the buyers: on a
small machine the load generator takes CPU from the database and from the lane alike.
"""

from instock.bench.drop.run import MODES, STRATEGIES, SUSTAINED_SECONDS, Plan, Result, choose, run

__all__ = ["MODES", "STRATEGIES", "SUSTAINED_SECONDS", "Plan", "Result", "choose", "run"]
