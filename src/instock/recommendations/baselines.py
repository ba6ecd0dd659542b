"""The `implicit` ALS baseline, behind the same Recommender interface as instock's models.

The other baselines (popularity, item co-occurrence, sequential rules) are plain
configurations of the models in `model.py`, see `baseline_models`.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from instock.recommendations.data import Context, Event, EventLog, FloatArray, IntArray
from instock.recommendations.model import CoOccurrence, Recommender, SequentialRules, Trending
from instock.recommendations.protocol import Progress, Split, evaluate_model

ALS_ALPHAS = (1.0, 10.0, 40.0)
DEFAULT_ALS_ALPHA = 10.0


class ImplicitALS:
    """Matrix factorisation of sequence x item counts (implicit's ALS, Hu, Koren & Volinsky).

    A context is folded in as a new user (implicit's recalculate_user), so it works for new
    sessions and for known customers whose latest events are newer than the model.
    """

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.1,
        alpha: float = DEFAULT_ALS_ALPHA,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.n_items = 0
        self._factors: npt.NDArray[np.float32] = np.zeros((0, factors), np.float32)
        self._yty: FloatArray = np.zeros((factors, factors))

    def fit(self, log: EventLog) -> None:
        from implicit.cpu.als import AlternatingLeastSquares  # heavy import, only when used

        self.n_items = log.n_items
        rows = np.unique(log.seq, return_inverse=True)[1]
        n_rows = int(rows.max()) + 1 if len(rows) else 0
        counts = sp.csr_matrix(
            (np.ones(len(log), np.float32), (rows, log.item)), shape=(n_rows, log.n_items)
        )
        counts.sum_duplicates()
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
    def item_factors(self) -> npt.NDArray[np.float32]:
        return self._factors

    def load_factors(self, item_factors: npt.ArrayLike) -> None:
        """Take item factors fitted elsewhere (an artefact, Spark's ALS); rows are item codes."""
        self._factors = np.asarray(item_factors, np.float32)
        self.n_items = len(self._factors)
        self._yty = self._factors.T.astype(np.float64) @ self._factors

    def update(self, event: Event) -> None:
        """No-op: a shopper's new events are folded in at scoring; new items need a refit."""

    def _fold_in(self, items: IntArray) -> FloatArray:
        """implicit's recalculate_user (confidence alpha*count), with Y'Y cached.

        implicit recomputes Y'Y on every call, which dominates scoring on large catalogues.
        """
        uniq, counts = np.unique(items, return_counts=True)
        conf = self.alpha * counts
        y = self._factors[uniq].astype(np.float64)
        a = self._yty + (y.T * (conf - 1.0)) @ y
        a[np.diag_indices_from(a)] += self.regularization
        return np.asarray(np.linalg.solve(a, y.T @ conf), np.float64)

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        items = ctx.items[ctx.items < self.n_items]
        if not len(items):
            return np.zeros(self.n_items if candidates is None else len(candidates))
        # float32 on both sides: mixing dtypes would copy the whole factor matrix per call
        user = self._fold_in(items).astype(np.float32)
        scores = (self._factors @ user).astype(np.float64)
        return scores if candidates is None else scores[candidates]


def tune_als(
    split: Split,
    positions: IntArray,
    k: int,
    alphas: tuple[float, ...] = ALS_ALPHAS,
    progress: Progress | None = None,
) -> tuple[float, dict[str, float]]:
    """Pick ALS's confidence weight alpha on validation targets, as the hybrid's weights are.

    The baseline gets the same chance to adapt to a shop as instock's hybrid; alpha matters most
    (implicit's default of 1 is far too low for click logs, the paper's 40 can be too high).
    """
    if not len(positions):
        return DEFAULT_ALS_ALPHA, {}
    train = split.train
    scores: dict[str, float] = {}
    for alpha in alphas:
        model = ImplicitALS(alpha=alpha)
        model.fit(train)
        m = evaluate_model(model, split, positions, k, f"tuning: ALS alpha={alpha:g}", progress)
        scores[f"{alpha:g}"] = round(m["hr"] + m["mrr"], 4)
    best = max(alphas, key=lambda a: scores[f"{a:g}"])
    return best, scores


def baseline_models(als_alpha: float = DEFAULT_ALS_ALPHA) -> dict[str, Recommender]:
    """The baselines reported beside instock, configured as in the session-rec benchmark."""
    return {
        "popularity": Trending(),
        "cooccurrence": CoOccurrence(window=None, context_size=1),
        "sequential_rules": SequentialRules(steps=10, context_size=1),
        "als": ImplicitALS(alpha=als_alpha),
    }
