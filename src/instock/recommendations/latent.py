"""Latent factors: implicit ALS (Hu, Koren & Volinsky) as a hybrid component and as a baseline.

Pure apart from the fitting, which is `implicit`'s (imported only when a model is fitted). A
context is folded in as a new user (implicit's recalculate_user, with Y'Y cached), so it works
for new sessions and for known customers whose latest events are newer than the model; new
items wait for the next refit, which serving does off the request path.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

from instock.recommendations.data import Context, Event, EventLog, FloatArray, IntArray
from instock.recommendations.scores import (
    EMPTY_FLOATS,
    EMPTY_INTS,
    Opinion,
    Sparse,
    best,
    run_starts,
)

ALS_ALPHAS = (1.0, 10.0, 40.0)
DEFAULT_ALS_ALPHA = 10.0
# The hybrid's ALS finds its own candidates among this many items (see LatentFactors.pool).
SERVING_POOL = 10_000

# The pool's items scored first, whose n-th best score bounds which others can matter; and
# float32 products' relative rounding, allowed for in that bound.
POOL_HEAD = 1024
ROUNDING = 1e-4

F32 = npt.NDArray[np.float32]


class LatentFactors:
    """Matrix factorisation of sequence x item counts, scoring a context by its folded-in user.

    `alpha` is the confidence per count: implicit's default of 1 is far too low for click logs,
    the paper's 40 can be too high, hence it is tuned per log (see `baselines.tune_als`).

    `pool`: where its own best items are looked for, the `pool` items of the largest factors
    (ALS gives items seen more the longer vectors), so an opinion's `top` costs a product with
    those rather than with the whole catalogue (on 100,000 items that product was most of a
    served list's time); any item asked for by name (`at`) is still scored exactly. None: the
    whole catalogue, as the baseline does.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        alpha: float = DEFAULT_ALS_ALPHA,
        iterations: int = 15,
        seed: int = 0,
        pool: int | None = None,
    ) -> None:
        self.factors = factors
        self.pool = pool
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.n_items = 0
        self._factors: F32 = np.zeros((0, factors), np.float32)
        self._yty: FloatArray = np.zeros((factors, factors))
        self._yty_reg: FloatArray = regularization * np.eye(factors)  # Y'Y + reg * I
        self._pool: IntArray | None = None  # item codes, longest factors first; None: all
        self._pool_factors: F32 = self._factors
        self._pool_norms: FloatArray = EMPTY_FLOATS

    def fit(self, log: EventLog) -> None:
        from implicit.cpu.als import AlternatingLeastSquares  # heavy import, only when used

        self.n_items = log.n_items
        rows = np.unique(log.seq, return_inverse=True)[1]
        n_rows = int(rows.max()) + 1 if len(rows) else 0
        counts = sp.csr_matrix(
            (np.ones(len(log), np.float32), (rows, log.item)), shape=(n_rows, log.n_items)
        )
        counts.sum_duplicates()
        if not counts.nnz:  # nothing to factorise (a new shop): no opinion until a refit
            self._factors = np.zeros((log.n_items, self.factors), np.float32)
            self._yty = np.zeros((self.factors, self.factors))
            return
        with warnings.catch_warnings(), threadpool_limits(1, "blas"):
            # implicit warns about multi-threaded BLAS; the limit above is exactly its advice.
            warnings.simplefilter("ignore", RuntimeWarning)
            model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
            )
            model.fit(counts, show_progress=False)
        self.load_factors(model.item_factors)

    @property
    def item_factors(self) -> F32:
        return self._factors

    def load_factors(self, item_factors: npt.ArrayLike) -> None:
        """Take item factors fitted elsewhere (an artefact, Spark's ALS); rows are item codes."""
        self._factors = np.asarray(item_factors, np.float32)
        self.n_items = len(self._factors)
        self._yty = self._factors.T.astype(np.float64) @ self._factors
        self._yty_reg = self._yty + self.regularization * np.eye(len(self._yty))
        self._pool, self._pool_factors = None, self._factors
        if self.pool is not None and self.n_items > self.pool:
            norms = np.einsum("ij,ij->i", self._factors, self._factors)
            # ties broken by item code, so the pool is the same wherever it is computed
            order = np.lexsort((np.arange(self.n_items), -norms))
            # longest first: `_UserOpinion.top` stops where no later item can reach its best
            self._pool = order[: self.pool].astype(np.int64)
            self._pool_factors = np.ascontiguousarray(self._factors[self._pool])
            self._pool_norms = np.sqrt(norms[self._pool].astype(np.float64))

    def update(self, event: Event) -> None:
        """No-op: a shopper's new events are folded in at scoring; new items need a refit."""

    def _fold_in(self, items: IntArray) -> FloatArray:
        """implicit's recalculate_user (confidence alpha*count), with Y'Y cached.

        implicit recomputes Y'Y on every call, which dominates scoring on large catalogues.
        """
        ordered = np.sort(items)  # np.unique(return_counts) costs more than this on a context
        first = run_starts(ordered)
        uniq = ordered[first]
        conf = self.alpha * np.diff(np.r_[np.flatnonzero(first), len(ordered)])
        y = self._factors[uniq].astype(np.float64)
        a = self._yty_reg + (y.T * (conf - 1.0)) @ y
        b = y.T @ conf
        if self.alpha >= 1.0:  # every confidence >= 1: `a` is positive definite (Cholesky,
            _, x, info = lapack.dposv(a, b)  # through LAPACK directly: numpy's solve wraps an
            if info == 0:  # LU in ~15 us of Python per call)
                return np.asarray(x, np.float64)
        return np.asarray(np.linalg.solve(a, b), np.float64)

    def opinion(self, ctx: Context) -> Opinion:
        items = ctx.items[ctx.items < len(self._factors)]
        if not len(items) or not self._yty.any():
            return Sparse(EMPTY_INTS, EMPTY_FLOATS)
        # float32 on both sides: mixing dtypes would copy the whole factor matrix per call
        return _UserOpinion(self._factors, self._fold_in(items).astype(np.float32),
                            self._pool, self._pool_factors, self._pool_norms)

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        opinion = self.opinion(ctx)
        if candidates is None:
            return opinion.dense(self.n_items)
        return opinion.at(np.asarray(candidates, np.int64))


class _UserOpinion:
    """A folded-in user: dot products with the item factors, all of them only for `top` (or
    those of the pool, when the model has one)."""

    def __init__(self, factors: F32, user: F32, pool: IntArray | None = None,
                 pool_factors: F32 | None = None, pool_norms: FloatArray = EMPTY_FLOATS
                 ) -> None:
        self.factors, self.user = factors, user
        self.pool, self.pool_factors, self.pool_norms = pool, pool_factors, pool_norms
        self._all: FloatArray | None = None

    def _scores(self) -> FloatArray:
        if self._all is None:
            self._all = (self.factors @ self.user).astype(np.float64)
        return self._all

    def top(self, n: int) -> IntArray:
        if self.pool is not None and self.pool_factors is not None:
            return self._pool_top(self.pool, self.pool_factors, n)
        scores = self._scores()
        return best(np.arange(len(scores)), scores, n)

    def _pool_top(self, pool: IntArray, factors: F32, n: int) -> IntArray:
        """The best n of the pool, exactly, reading only as much of it as can matter.

        A score is at most |item| * |user|, and the pool is longest first: once the pool's
        first POOL_HEAD items hold n scores of at least `bar`, an item shorter than
        bar / |user| cannot be among the best. Reading the pool's factors from memory was
        most of a list's ALS time; on the bench's shop about half of it is read now.
        """
        scores = (factors[:POOL_HEAD] @ self.user).astype(np.float64)
        end = len(pool)
        if end > POOL_HEAD and len(scores) >= n:
            bar = float(np.partition(scores, len(scores) - n)[len(scores) - n])
            reach = math.sqrt(float(self.user @ self.user)) * (1 + ROUNDING)
            if bar > 0 and reach > 0:
                end = max(POOL_HEAD, int(np.searchsorted(-self.pool_norms, -bar / reach,
                                                         side="right")))
        if end > POOL_HEAD:
            scores = np.r_[scores, (factors[POOL_HEAD:end] @ self.user).astype(np.float64)]
        return best(pool[: len(scores)], scores, n)

    def at(self, items: IntArray) -> FloatArray:
        inside = items < len(self.factors)
        safe = np.where(inside, items, 0)
        # after `top` (as the hybrid asks) the scores are there, and the same to the last bit
        out = self._all[safe] if self._all is not None else \
            (self.factors[safe] @ self.user).astype(np.float64)
        return np.where(inside, out, 0.0)

    def dense(self, n_items: int) -> FloatArray:
        out = np.zeros(n_items)
        m = min(n_items, len(self.factors))
        out[:m] = self._scores()[:m]
        return out
