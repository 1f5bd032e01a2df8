"""H-score and regularised H-score: definition cross-checks and the N <= D saturation."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from _part2_helpers import random_features, separable
from emms.errors import EmmsWarning
from emms.metrics.hscore import hscore, hscore_reg


def _between_class_covariance(x, y):
    """np.cov of the features with every row replaced by its class mean (the definition)."""
    g = np.empty_like(x)
    for c in np.unique(y):
        g[y == c] = x[y == c].mean(axis=0)
    return np.cov(g, rowvar=False)


def test_hscore_equals_its_definition_with_unequal_classes():
    x, y = separable(n_per_class=20, n_classes=5, dim=7, noise=2.0, seed=1)
    x, y = x[: 80], y[: 80]
    expected = np.trace(np.linalg.pinv(np.cov(x, rowvar=False)) @ _between_class_covariance(x, y))
    assert hscore(x, y) == pytest.approx(expected, rel=1e-10)


def test_hscore_reg_equals_its_definition():
    x, y = separable(n_per_class=15, n_classes=3, dim=9, noise=2.0, seed=2)
    lw = LedoitWolf().fit(x - x.mean(axis=0))
    expected = np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * _between_class_covariance(x, y)))
    assert hscore_reg(x, y) == pytest.approx(expected, rel=1e-10)


def test_hscore_saturates_at_c_minus_one_when_n_le_d_and_warns():
    x, y = separable(n_per_class=5, n_classes=4, dim=40, noise=1.0)
    for features in (x, random_features(y, dim=40)):
        with pytest.warns(EmmsWarning, match="C - 1"):
            assert hscore(features, y) == pytest.approx(3.0, rel=1e-8)
    with pytest.warns(EmmsWarning, match=r"hscore_reg: n_samples \(20\) <= n_features \(40\)"):
        assert hscore_reg(x, y) > hscore_reg(random_features(y, dim=40), y)  # still separates
    x, y = separable(n_per_class=15, n_classes=4, dim=40, noise=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # N = 60 > D = 40: no warning
        hscore_reg(x, y)


def test_hscore_is_bounded_by_c_minus_one_and_positive():
    x, y = separable(n_per_class=30, n_classes=4, dim=6, noise=0.5)
    assert 0 < hscore(x, y) <= 3.0 + 1e-9
    assert 0 < hscore_reg(x, y) <= hscore(x, y) + 1e-9
