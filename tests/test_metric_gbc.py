"""GBC: vectorised pair distances against a per-pair loop written from the formula."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import random_features, separable
from emms.errors import InputError
from emms.metrics import gbc as gbc_module
from emms.metrics.gbc import gbc


def _gbc_by_pairs(x, y, gaussian):
    """The stable_transfer structure: per-class stats, then a double loop over class pairs."""
    stats = {}
    for c in np.unique(y):
        rows = x[y == c]
        stats[c] = (rows.mean(axis=0), np.maximum(rows.var(axis=0), 1e-4))
    total = 0.0
    for a in stats:
        for b in stats:
            if a == b:
                continue
            (mu_a, var_a), (mu_b, var_b) = stats[a], stats[b]
            if gaussian == "spherical":
                var_a, var_b = var_a.mean(), var_b.mean()
            avg = (var_a + var_b) / 2
            distance = np.sum((mu_a - mu_b) ** 2 / avg) / 8 + 0.5 * (
                np.sum(np.log(avg)) - 0.5 * np.sum(np.log(var_a)) - 0.5 * np.sum(np.log(var_b)))
            total += np.exp(-distance)
    return -total


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_matches_pairwise_loop_including_a_single_sample_class(gaussian):
    x, y = separable(n_per_class=12, n_classes=5, dim=9, noise=3.0, seed=2)
    y = y.copy()
    y[0] = 5  # a class with one sample: zero variance, floored
    assert gbc(x, y, gaussian=gaussian) == pytest.approx(_gbc_by_pairs(x, y, gaussian), rel=1e-10)


def test_diagonal_blocks_give_the_same_result(monkeypatch):
    x, y = separable(n_per_class=6, n_classes=9, dim=5, noise=3.0, seed=3)
    whole = gbc(x, y, gaussian="diagonal")
    monkeypatch.setattr(gbc_module, "_BLOCK_ELEMENTS", 1)  # one class row per block
    assert gbc(x, y, gaussian="diagonal") == pytest.approx(whole, rel=1e-12)


@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_bounds(gaussian):
    x, y = separable(noise=0.01)
    assert gbc(x, y, gaussian=gaussian) == pytest.approx(0.0, abs=1e-6)
    value = gbc(random_features(y), y, gaussian=gaussian)
    assert -4 * 3 <= value < -1.0


def test_bad_gaussian_raises_input_error():
    x, y = separable()
    with pytest.raises(InputError, match="gaussian"):
        gbc(x, y, gaussian="full")
