"""PARC against the reference's exact-tie diagnostics and records; subsampling and invariances."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import cases, records, separable
from emms.errors import InputError
from emms.metrics._common import stratified_subsample
from emms.metrics.parc import parc

VARIANTS = [(32, "PARC_Score"), (None, "PARC_nodimred")]


@pytest.mark.parametrize("case", ["cls_small", "cls_medium", "cls_hard"])
@pytest.mark.parametrize("n_dims, key", VARIANTS)
def test_matches_exact_tie_diagnostics_and_reference(case, n_dims, key):
    value = parc(cases()[f"{case}_X"], cases()[f"{case}_y"], n_dims=n_dims)
    assert value == pytest.approx(records()[f"diagnostic.{key}.{case}.exact_label_ties"]["value"], rel=1e-9)
    # the reference's np.corrcoef label RDM splits ties in the last bit: README tolerance 1e-2 (1e-1 on cls_hard)
    assert value == pytest.approx(records()[f"sfda.{key}.{case}"]["value"], rel=1e-1 if case == "cls_hard" else 1e-2)


def test_row_permutation_invariance():
    x, y = cases()["cls_hard_X"], cases()["cls_hard_y"]
    order = np.random.default_rng(777).permutation(y.size)
    assert parc(x[order], y[order], n_dims=None) == pytest.approx(parc(x, y, n_dims=None), rel=1e-12)


def test_stratified_subsample_keeps_every_class_and_proportions():
    codes = np.repeat(np.arange(4), [500, 300, 199, 1])
    rows = stratified_subsample(codes, 100, seed=0)
    assert np.all(np.diff(rows) > 0)
    counts = np.bincount(codes[rows], minlength=4)
    assert counts.tolist() == [50, 30, 20, 1]
    np.testing.assert_array_equal(rows, stratified_subsample(codes, 100, seed=0))
    assert not np.array_equal(rows, stratified_subsample(codes, 100, seed=1))
    np.testing.assert_array_equal(stratified_subsample(codes, 5000, seed=0), np.arange(codes.size))


def test_subsampling_is_seeded_and_close_to_the_full_value():
    x, y = separable(n_per_class=60, noise=2.0, dim=16)
    full = parc(x, y, n_dims=None)
    sub = parc(x, y, n_dims=None, max_samples=120, seed=3)
    assert sub == parc(x, y, n_dims=None, max_samples=120, seed=3)
    assert sub != parc(x, y, n_dims=None, max_samples=120, seed=4)
    assert sub == pytest.approx(full, abs=10.0)


def test_bad_options():
    x, y = separable()
    with pytest.raises(InputError, match="n_dims"):
        parc(x, y, n_dims=0)
    with pytest.raises(InputError, match="max_samples"):
        parc(x, y, max_samples=3)
