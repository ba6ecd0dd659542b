"""A neural sequential component: GRU4Rec (Hidasi et al.) trained with PyTorch on the CPU.

PyTorch is optional (`make neural`, the `neural` extra of pyproject.toml) and imported only in
`fit`: without it `available()` is False and the tuner does not offer the component (it says so
in `chosen`). Scoring runs in NumPy from the fitted weights, a GRU over the context's last
`window` items and one product with the item embeddings, so a fitted model needs no torch and
pays no per-call framework overhead.

Where it differs from the paper's GRU4Rec, for training in seconds on one core: sequences are
cut into windows of `window` + 1 events trained as padded mini-batches (not session-parallel);
the loss is cross-entropy over every item when the catalogue has at most `negatives` items,
else over `negatives` items per batch sampled by popularity**0.75 with the logQ correction
(sampled softmax); input and output item embeddings are tied (one matrix, plus an output bias
per item), which is what lets sparse logs train at all.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import numpy.typing as npt

from instock.recommendations.data import Context, Event, EventLog, FloatArray, IntArray
from instock.recommendations.scores import EMPTY_FLOATS, EMPTY_INTS, Dense, Opinion, Sparse

NAME = "gru4rec"
NEGATIVES = 4096
SAMPLE_ALPHA = 0.75  # popularity**alpha for sampled negatives: GRU4Rec's sample_alpha
DEFAULT_EPOCHS = 10
# With `epochs` left to the model: at least DEFAULT_EPOCHS, and at least this many updates of
# the weights (a small log has few batches an epoch, and ten of them teach it nothing).
MIN_UPDATES = 600
MAX_EPOCHS = 100  # ... but no more: a log of a few sequences would take thousands
BUCKET = 32  # batches sorted by run length together (see `_batches`)

F32 = npt.NDArray[np.float32]
EpochProgress = Callable[[int, int], None]


def available() -> bool:
    """Whether PyTorch is installed (`make neural`)."""
    return importlib.util.find_spec("torch") is not None


def windows(log: EventLog, window: int) -> IntArray:
    """Each sequence cut into runs of `window` + 1 events that overlap by one (every event
    after a sequence's first is a target exactly once), as item code + 1, right-padded with 0.
    Sequences of one event teach nothing and are left out."""
    if not len(log):
        return np.zeros((0, window + 1), np.int64)
    starts = log.starts()
    offset = np.arange(len(log)) - starts  # position within its sequence
    length = np.bincount(np.unique(log.seq, return_inverse=True)[1])
    seq_len = np.repeat(length, length)
    # a run starts at every `window`-th position that has a successor
    first = (offset % window == 0) & (offset + 1 < seq_len)
    begin = np.flatnonzero(first)
    end = np.minimum(begin + window + 1, starts[begin] + seq_len[begin])
    out = np.zeros((len(begin), window + 1), np.int64)
    for row, (lo, hi) in enumerate(zip(begin.tolist(), end.tolist(), strict=True)):
        out[row, : hi - lo] = log.item[lo:hi] + 1
    return out


class GRU4Rec:
    """Next-item scores from a GRU over the context's last `window` items.

    `epochs` None: DEFAULT_EPOCHS, or more on a small log, for MIN_UPDATES updates at least
    (up to MAX_EPOCHS).

    `max_seconds` stops training between epochs once the next epoch would not fit (and within
    one past it): the tuner gives the component a share of its budget that way, then refits
    with `epochs` set to the epochs done and no time limit, which is deterministic under `seed`.
    """

    def __init__(
        self,
        factors: int = 64,
        window: int = 20,
        epochs: int | None = None,
        batch_size: int = 128,
        learning_rate: float = 0.005,
        dropout: float = 0.2,
        negatives: int = NEGATIVES,
        max_seconds: float | None = None,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.window = window
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.dropout = dropout
        self.negatives = negatives
        self.max_seconds = max_seconds
        self.seed = seed
        self.n_items = 0
        self.epochs_done = 0
        self.fit_seconds = 0.0
        self.progress: EpochProgress | None = None
        d = factors
        self._gates_in: F32 = np.zeros((0, 3 * d), np.float32)  # per item: W_ih e + b_ih
        self._w_hh: F32 = np.zeros((d, 3 * d), np.float32)
        self._b_hh: F32 = np.zeros(3 * d, np.float32)
        self._items: F32 = np.zeros((0, d), np.float32)
        self._bias: F32 = np.zeros(0, np.float32)

    @property
    def fitted(self) -> bool:
        return len(self._items) > 0

    def fit(self, log: EventLog) -> None:
        began = time.perf_counter()
        self.n_items = log.n_items
        runs = windows(log, self.window)
        self.epochs_done = 0
        if not len(runs) or not log.n_items:
            self._items = np.zeros((0, self.factors), np.float32)  # no opinion until a refit
            self._gates_in = np.zeros((0, 3 * self.factors), np.float32)
            self.fit_seconds = round(time.perf_counter() - began, 2)
            return
        popularity = np.bincount(log.item, minlength=log.n_items).astype(np.float64)
        self._train(runs, popularity, began)
        self.fit_seconds = round(time.perf_counter() - began, 2)

    def _train(self, runs: IntArray, popularity: FloatArray, began: float) -> None:
        import torch  # optional and heavy: only when a model is fitted

        n, d = self.n_items, self.factors
        rng = np.random.default_rng(self.seed)
        sampled = n > self.negatives
        q = np.power(popularity, SAMPLE_ALPHA) + 1e-12
        q /= q.sum()
        with _one_thread(torch), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            emb = torch.nn.Embedding(n + 1, d, padding_idx=0)
            torch.nn.init.normal_(emb.weight, std=0.05)
            with torch.no_grad():
                emb.weight[0].zero_()
            gru = torch.nn.GRU(d, d, batch_first=True)
            bias = torch.nn.Parameter(torch.zeros(n + 1))
            drop = torch.nn.Dropout(self.dropout)
            optimiser = torch.optim.Adam(
                [*emb.parameters(), *gru.parameters(), bias], lr=self.learning_rate)
            log_q = torch.from_numpy(np.r_[0.0, np.log(q)].astype(np.float32))
            lengths = (runs > 0).sum(axis=1)
            epochs = self.epochs or min(MAX_EPOCHS, max(
                DEFAULT_EPOCHS, -(-MIN_UPDATES * self.batch_size // len(runs))))
            for epoch in range(epochs):
                elapsed = time.perf_counter() - began
                if self.max_seconds is not None and epoch and \
                        elapsed * (epoch + 1) / epoch > self.max_seconds:
                    break  # the next epoch (as long as the mean one) would overrun
                for pick in _batches(lengths, self.batch_size, rng):
                    batch = torch.from_numpy(runs[pick, : int(lengths[pick].max())])
                    inputs, targets = batch[:, :-1], batch[:, 1:]
                    mask = targets > 0
                    hidden, _ = gru(drop(emb(inputs)))
                    h, t = drop(hidden[mask]), targets[mask]
                    if sampled:
                        neg = torch.from_numpy(rng.choice(n, self.negatives, p=q) + 1)
                        pos_logit = (h * emb(t)).sum(-1) + bias[t] - log_q[t]
                        neg_logit = h @ emb(neg).T + bias[neg] - log_q[neg]
                        neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None],
                                                          float("-inf"))
                        logits = torch.cat([pos_logit[:, None], neg_logit], dim=1)
                        loss = torch.nn.functional.cross_entropy(
                            logits, torch.zeros(len(t), dtype=torch.long))
                    else:
                        logits = h @ emb.weight[1:].T + bias[1:]
                        loss = torch.nn.functional.cross_entropy(logits, t - 1)
                    optimiser.zero_grad()
                    loss.backward()
                    optimiser.step()
                    if self.max_seconds is not None and \
                            time.perf_counter() - began > self.max_seconds:
                        break  # a first epoch longer than the whole share
                self.epochs_done = epoch + 1
                if self.progress is not None:
                    self.progress(self.epochs_done, epochs)
                if self.max_seconds is not None and time.perf_counter() - began > self.max_seconds:
                    break
            self._keep(emb, gru, bias)

    def _keep(self, emb: Any, gru: Any, bias: Any) -> None:
        """The fitted weights as NumPy arrays: scoring needs nothing else."""
        items = emb.weight.detach().numpy()[1:].astype(np.float32)
        w_ih = gru.weight_ih_l0.detach().numpy()
        b_ih = gru.bias_ih_l0.detach().numpy()
        self._items = np.ascontiguousarray(items)
        self._gates_in = np.ascontiguousarray(items @ w_ih.T + b_ih, np.float32)
        self._w_hh = np.ascontiguousarray(gru.weight_hh_l0.detach().numpy().T, np.float32)
        self._b_hh = gru.bias_hh_l0.detach().numpy().astype(np.float32)
        self._bias = bias.detach().numpy()[1:].astype(np.float32)

    def update(self, event: Event) -> None:
        """No-op: a context's new events count at scoring; new items need a refit."""

    def hidden(self, items: IntArray) -> F32:
        """The GRU's state after the items (PyTorch's gate order: reset, update, new)."""
        d = self.factors
        h = np.zeros(d, np.float32)
        for item in items.tolist():
            gi, gh = self._gates_in[item], h @ self._w_hh + self._b_hh
            r = _sigmoid(gi[:d] + gh[:d])
            z = _sigmoid(gi[d: 2 * d] + gh[d: 2 * d])
            new = np.tanh(gi[2 * d:] + r * gh[2 * d:])
            h = (1.0 - z) * new + z * h
        return h

    def opinion(self, ctx: Context) -> Opinion:
        items = ctx.items[ctx.items < len(self._items)][-self.window:]
        if not len(items):
            return Sparse(EMPTY_INTS, EMPTY_FLOATS)
        logits = self._items @ self.hidden(items) + self._bias
        # softmax up to its constant: positive (an opinion's best items score above 0) and
        # already scaled to a maximum of 1, as the blend scales every component
        return Dense(np.exp(logits - logits.max()).astype(np.float64))

    def score(self, ctx: Context, candidates: IntArray | None = None) -> FloatArray:
        opinion = self.opinion(ctx)
        if candidates is None:
            return opinion.dense(self.n_items)
        return opinion.at(np.asarray(candidates, np.int64))


def as_tried(report: Mapping[str, Any]) -> dict[str, GRU4Rec]:
    """The component alone as the tuner trained it (`Chosen.neural`), under its name, for a
    row of its own beside the baselines; nothing when it was not tried (no torch, no time)."""
    if not report.get("tried"):
        return {}
    return {NAME: GRU4Rec(**report["hyper_parameters"])}


def _batches(lengths: IntArray, size: int, rng: np.random.Generator) -> list[IntArray]:
    """Batches of runs in a random order, runs of like length together: a batch is padded to
    its longest run, and most sessions are short, so mixing lengths would cost steps of the
    GRU over padding. Sorted within groups of BUCKET batches, then the batches shuffled."""
    order = rng.permutation(len(lengths))
    group = size * BUCKET
    out: list[IntArray] = []
    for lo in range(0, len(order), group):
        chunk = order[lo: lo + group]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i: i + size] for i in range(0, len(chunk), size)]
    return [out[i] for i in rng.permutation(len(out))]


def _sigmoid(x: F32) -> F32:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), np.float32)


@contextmanager
def _one_thread(torch: Any) -> Iterator[None]:
    """One intra-op thread while training: deterministic sums, and a fair share of a small
    machine that serves and evaluates beside it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
