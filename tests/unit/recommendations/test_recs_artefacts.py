"""Artefact values in canonical form: engines that sum in other orders write the same numbers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from instock.recommendations.artefacts import canonical, canonical_matrix


def test_sums_in_another_order_become_the_same_value() -> None:
    terms = np.array([1 / g for g in range(1, 11)] * 7)
    forwards, backwards = float(np.sum(terms)), float(sum(reversed(terms.tolist())))
    shuffled = float(sum(np.random.default_rng(3).permutation(terms).tolist()))
    assert len({forwards, backwards, shuffled}) > 1  # raw sums differ in their last bits
    assert len(set(canonical([forwards, backwards, shuffled]).tolist())) == 1


def test_canonical_keeps_forty_bits_signs_and_zeros_and_is_idempotent() -> None:
    values = np.array([0.0, 1.0, -2.5, 1 / 3, 123456.789012345678, 1e-300, 7e200])
    once = canonical(values)
    assert np.array_equal(once, canonical(once))
    np.testing.assert_allclose(once, values, rtol=1e-11)
    assert once[0] == 0.0 and once[2] == -2.5 and once[1] == 1.0


def test_a_matrix_is_summed_sorted_and_without_explicit_zeros() -> None:
    m = sp.coo_matrix(([1.0, 2.0, 0.0, 0.5], ([1, 1, 0, 0], [0, 0, 1, 0])), shape=(2, 2))
    csr = canonical_matrix(m, 2)
    assert csr.has_sorted_indices and csr.nnz == 2
    assert csr[1, 0] == 3.0 and csr[0, 0] == 0.5
