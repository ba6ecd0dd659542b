"""Process-wide settings for a long-running instock process (a server, a worker, a bench)."""

from __future__ import annotations

import gc

from threadpoolctl import threadpool_limits

# Python's default (700 new objects) starts a young-generation collection hundreds of times per
# batch when thousands of requests are in flight, and every collection walks all of their
# futures and coroutines: in a drop that was most of the CPU. Collecting after 20,000 keeps
# cycles collected, less often. Not more: a collection walks every young object (and each
# tenth one the older ones too), and at 200,000 those pauses were 40-90 ms (the older
# generation's up to 380 ms) in a server holding a recommender, each a latency spike.
YOUNG_GENERATION_THRESHOLD = 20_000


_tuned = False


def tune_for_throughput() -> None:
    """Collect garbage less often, and never re-scan what startup built (modules, tables,
    models): `gc.freeze` moves it out of the collector's sight. And one BLAS thread."""
    global _tuned
    _tuned = True
    one_blas_thread()
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)


def one_blas_thread() -> None:
    """NumPy's BLAS on the calling thread only, for this whole process.

    A server's matrix products are small and per request (a list's ALS scores: one
    matrix-vector product over 10,000 items). Split over BLAS's threads, each waited for the
    second core, which the event loop's other work, the database driver's thread or another
    process held: on two cores a list cost half as much again (`bench recs`: 85 fresh lists a
    second per process with two BLAS threads, 120 with one). Training already asks for one
    (ALS, in `latent`). NumPy is imported first: the limit reaches only libraries loaded."""
    import numpy  # noqa: F401 - loads BLAS

    threadpool_limits(1, "blas")


def keep_out_of_collections() -> None:
    """What was just built to last (a loaded catalogue, a fitted model: millions of objects) is
    moved out of the collector's sight, so no collection walks it again. It is still freed when
    released, as long as it holds no reference cycle (one would stay, as garbage). Only in a
    process tuned for throughput (a server; not a test run building many apps)."""
    if _tuned:
        gc.freeze()
