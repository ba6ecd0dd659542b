"""Fitted statistics as files: what `instock recs train` writes and a serving process loads.

An artefact is a directory: `manifest.json` (format version, engine, creation time, the item ids
in code order, the parameters the statistics were computed with) and `stats.npz` (the
co-occurrence and sequential-rule counts as sparse matrices, popularity with and without decay,
ALS item factors). Items are named by id, not by code, so a catalogue that codes them otherwise
(a serving process codes products as they arrive) maps them on load.

Publishing is atomic: a new version is written beside the old and a symlink is swapped onto
it, so a reader sees one whole version or the other, never a mix.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from instock.recommendations.data import FloatArray, IntArray
from instock.recommendations.model import CoOccurrence, Hybrid, SequentialRules, Trending

FORMAT = "instock-recs-artefacts"
VERSION = 1
MANIFEST = "manifest.json"
STATS = "stats.npz"
# Which served component reads which statistic: both sequential components share one matrix
# (they differ only in how much context they read, not in the rules).
PAIR_STATISTICS = {"cooccurrence": "cooccurrence", "sequential": "sequential",
                   "sequential_ctx": "sequential"}
COUNT_STATISTICS = {"popularity": "popularity", "trending": "trending"}
# Engines sum the same terms in different orders, so raw sums differ in their last bits and
# equal scores could tie-break differently; 40 significant bits (about 12 digits) are far beyond
# what ranks need.
SIGNIFICANT_BITS = 40


class ArtefactError(ValueError):
    """A directory that is not an artefact of this format version."""


def canonical(values: npt.ArrayLike) -> FloatArray:
    """Values rounded to SIGNIFICANT_BITS: the same whichever engine summed them."""
    # in binary, by the mantissa: no scale factor to overflow at extreme magnitudes
    mantissa, exponent = np.frexp(np.asarray(values, np.float64))
    rounded = np.round(mantissa * 2.0**SIGNIFICANT_BITS) / 2.0**SIGNIFICANT_BITS
    return np.asarray(np.ldexp(rounded, exponent), np.float64)


def canonical_matrix(matrix: sp.spmatrix | sp.sparray, n: int) -> sp.csr_matrix:
    """An n x n CSR with sorted indices, no explicit zeros and canonical values."""
    csr = sp.csr_matrix(matrix, shape=(n, n), dtype=np.float64)
    csr.sum_duplicates()
    csr.data = canonical(csr.data)
    csr.eliminate_zeros()
    csr.sort_indices()
    return csr


@dataclass
class Artefacts:
    """One engine's statistics of one log; arrays are indexed by position in `item_ids`."""

    item_ids: list[str]
    cooccurrence: sp.csr_matrix
    sequential: sp.csr_matrix
    popularity: FloatArray
    trending: FloatArray
    params: dict[str, Any]  # steps, half_life, anchor, ALS settings...
    engine: str
    events: int
    als_factors: npt.NDArray[np.float32] | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def code_of(self) -> dict[str, int]:
        return {item: code for code, item in enumerate(self.item_ids)}

    def manifest(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "engine": self.engine,
                "created_at": self.created_at, "events": self.events,
                "items": self.n_items, "item_ids": self.item_ids, "params": self.params,
                "als": self.als_factors is not None}


def statistics(item_ids: Sequence[str], cooccurrence: sp.spmatrix | sp.sparray,
               sequential: sp.spmatrix | sp.sparray, popularity: npt.ArrayLike,
               trending: npt.ArrayLike, params: Mapping[str, Any], engine: str, events: int,
               als_factors: npt.NDArray[np.float32] | None = None) -> Artefacts:
    """Artefacts in canonical form (every engine builds them here)."""
    n = len(item_ids)
    return Artefacts(list(item_ids), canonical_matrix(cooccurrence, n),
                     canonical_matrix(sequential, n), canonical(popularity),
                     canonical(trending), dict(params), engine, events,
                     None if als_factors is None else np.asarray(als_factors, np.float32))


# ---------------------------------------------------------------------------------------------
# Files


def _save_matrix(arrays: dict[str, Any], name: str, m: sp.csr_matrix) -> None:
    arrays[f"{name}_data"], arrays[f"{name}_indices"] = m.data, m.indices
    arrays[f"{name}_indptr"] = m.indptr


def _load_matrix(arrays: Mapping[str, Any], name: str, n: int) -> sp.csr_matrix:
    return sp.csr_matrix((arrays[f"{name}_data"], arrays[f"{name}_indices"],
                          arrays[f"{name}_indptr"]), shape=(n, n))


def write(artefacts: Artefacts, folder: Path) -> None:
    """Write into an empty or new folder (see `publish` for replacing a live one)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"popularity": artefacts.popularity,
                              "trending": artefacts.trending}
    _save_matrix(arrays, "cooccurrence", artefacts.cooccurrence)
    _save_matrix(arrays, "sequential", artefacts.sequential)
    if artefacts.als_factors is not None:
        arrays["als_factors"] = artefacts.als_factors
    np.savez_compressed(folder / STATS, **arrays)
    (folder / MANIFEST).write_text(json.dumps(artefacts.manifest(), indent=1) + "\n")


def publish(artefacts: Artefacts, path: Path) -> Path:
    """Make `path` (a symlink) point at a new version, atomically; returns the version's folder.

    Readers opening `path` meanwhile get the previous version whole. The version before the
    previous is removed: a reader still loading the previous one keeps its files.
    """
    path = path.absolute()
    if path.exists() and not path.is_symlink():
        raise ArtefactError(f"{path} exists and is not a published artefact (a symlink)")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    version = path.with_name(f"{path.name}.{stamp}")
    write(artefacts, version)
    link = path.with_name(f".{path.name}.{stamp}.link")
    link.symlink_to(version.name)
    previous = path.resolve() if path.is_symlink() else None
    os.replace(link, path)  # the atomic step
    for old in path.parent.glob(f"{path.name}.[0-9]*T[0-9]*"):  # versions only
        if old.is_dir() and old not in (version, previous):
            shutil.rmtree(old, ignore_errors=True)
    return version


def load(path: Path) -> Artefacts:
    """Read a published artefact (or a folder `write` filled)."""
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise ArtefactError(f"{path} holds no {MANIFEST}: not a recommendations artefact")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArtefactError(f"{path}: format {manifest.get('format')!r} version "
                            f"{manifest.get('version')!r}; this code reads {FORMAT} {VERSION}")
    n = int(manifest["items"])
    with np.load(path / STATS) as arrays:
        return Artefacts(
            list(manifest["item_ids"]), _load_matrix(arrays, "cooccurrence", n),
            _load_matrix(arrays, "sequential", n), arrays["popularity"], arrays["trending"],
            manifest["params"], manifest["engine"], int(manifest["events"]),
            arrays.get("als_factors"),
            manifest["created_at"])


# ---------------------------------------------------------------------------------------------
# Serving


def _codes(artefacts: Artefacts, code_of: Mapping[str, int]) -> tuple[IntArray, int]:
    """Per artefact item, its code in the serving catalogue (-1: unknown there), and n."""
    codes = np.fromiter((code_of.get(i, -1) for i in artefacts.item_ids), np.int64,
                        artefacts.n_items)
    return codes, max(len(code_of), int(codes.max(initial=-1)) + 1)


def _remap_matrix(m: sp.csr_matrix, codes: IntArray, n: int) -> sp.coo_matrix:
    coo = m.tocoo()
    rows, cols = codes[coo.row], codes[coo.col]
    keep = (rows >= 0) & (cols >= 0)
    return sp.coo_matrix((coo.data[keep], (rows[keep], cols[keep])), shape=(n, n))


def _remap_counts(counts: FloatArray, codes: IntArray, n: int) -> FloatArray:
    out = np.zeros(n)
    known = codes >= 0
    out[codes[known]] = counts[known]
    return out


def install(artefacts: Artefacts, hybrid: Hybrid, code_of: Mapping[str, int]) -> None:
    """Replace the hybrid's count statistics by the artefact's (the other components keep
    what they were fitted with); items the catalogue does not know are left out."""
    codes, n = _codes(artefacts, code_of)
    for name, statistic in PAIR_STATISTICS.items():
        model = hybrid.components.get(name)
        if model is None:
            continue
        assert isinstance(model, CoOccurrence | SequentialRules)
        coo = _remap_matrix(getattr(artefacts, statistic), codes, n)
        model.load_pairs(coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data, n)
        model.n_items = max(model.n_items, n)
    for name, statistic in COUNT_STATISTICS.items():
        model = hybrid.components.get(name)
        if model is None:
            continue
        assert isinstance(model, Trending)
        half_life = math.inf if name == "popularity" else float(artefacts.params["half_life"])
        model.load(_remap_counts(getattr(artefacts, statistic), codes, n),
                   anchor=float(artefacts.params["anchor"]), half_life=half_life)
