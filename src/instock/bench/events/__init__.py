"""`instock bench events`: how fast a committed change reaches a live client, per bus, and how
many live clients one process holds.

Latency, per bus. A fresh database and a real `instock serve` process on that bus, running the
outbox relay in-process as the embedded default does (the sweeper and the event consumers are
off unless `--consumers`: neither is on the commit-to-client path, and a fleet runs consumers as
workers). A receiver process of its own holds SSE connections subscribed to every SKU (at most
100 per connection) and stamps each `event: stock` frame's (sku, version) when it arrives. The
driver changes stock on an open-loop schedule: change i is due at t0 + i/rate whatever happened
to the changes before it, so a slow server does not lower the offered rate (changes it cannot
take yet queue in the bench; `achieved_rate` says what it sustained).

When was a version committed? Somewhere between sending the write and reading its answer. The
answer carries the SKU's new version (the ETag), so for every version received:
- `p50_ms` ... `max_ms` are measured from the answer: an under-estimate, it leaves out the
  server's re-read of the stock after commit and the answer's trip back to the bench; the push
  often wins that race, so these can be negative;
- `from_send` is measured from sending the write: an over-estimate, it includes the write;
- `from_commit` is measured from the outbox row's `created_at`, stamped inside the committing
  transaction just before COMMIT (read back from the database after the run): usually the
  closest, an over-estimate by the time from that stamp to the end of COMMIT, which grows when
  the committing process is busy (then `p50_ms` can be the better one).
The truth lies between the first two (and is never below zero). The processes share one
machine, so their clocks agree: the receiver stamps CLOCK_MONOTONIC (`time.monotonic`),
converted to wall time to meet the server's UTC stamps.

Where the time goes: `server_cpu_percent` is the server's CPU share during the drive (one core
is 100: near it, the one Python process is the limit, and pushes wait behind writes in its
event loop); `write_ms` is the writes' own latency, queueing in the bench included.

A client may skip versions (each connection keeps only the newest pending update per SKU): a
committed version not received while a newer one of that SKU was is `coalesced`, not a latency
sample; one never superseded either is `lost` (it should be 0).

Drivers: `http` (default) posts adjustments to the server itself, the honest end-to-end path.
`service` commits through InventoryService in the bench process, as a worker would: the answer
is then the commit itself (no HTTP hop), but writes queued on one SKU often read back a later
version than their own (`versions_reported_twice`), so trust its `from_commit`. `outbox`
commits only what the push path sees, the SKU's version bump and its stock_changed event, from
the bench process: not a real stock change, but it reaches rates the write path cannot on a
small machine, so it measures the push path (relay, bus, hub, SSE) alone. For both, the
server's relay hears of a commit made by another process only through PostgreSQL's NOTIFY; on
SQLite it finds it on its 1 s fallback poll, so there they measure the poll, not the push.

Capacity. One server on the memory bus; `--clients` SSE connections from this process over raw
asyncio streams (an httpx client per connection would cost more than the server does), each
subscribed to a shared hot SKU and one of its own, counted as connected when its first
`event: stock` frame arrives. The server's RSS (VmRSS, with its children) is read before and
after; then one change to the hot SKU goes out and `fanout_ms` is how long until every client
had it, measured from sending that write (`fanout_write_ms` is the write's own share; the
first clients usually have the change before its answer arrives). Every connection is a file
descriptor on both sides: this process raises its soft RLIMIT_NOFILE to the hard limit before
it starts the server, which inherits it (a server started some other way needs `ulimit -n`
above its client count too).

Databases: `--database` only chooses the backend and, for PostgreSQL, the server and login. The
bench never writes into the database it names: SQLite runs get new files in a temporary
directory, PostgreSQL runs a new database per server (CREATE DATABASE, so the login needs that
right), dropped afterwards. Each networked bus run gets its own stream (`?stream=`), deleted
afterwards, so runs never mix.
"""

from instock.bench.events.latency import DRIVERS
from instock.bench.events.plan import Plan
from instock.bench.events.run import Result, run

__all__ = ["DRIVERS", "Plan", "Result", "run"]
