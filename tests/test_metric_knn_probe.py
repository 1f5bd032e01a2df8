"""kNN leave-one-out accuracy and the cross-validated linear probe."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from _part2_helpers import cases, separable
from emms.errors import InputError
from emms.metrics.knn import knn
from emms.metrics.probe import linear_probe


def test_1nn_equals_scikit_learn_leave_one_out():
    x, y = cases()["cls_small_X"][:120], cases()["cls_small_y"][:120]
    expected = cross_val_score(KNeighborsClassifier(n_neighbors=1), x, y, cv=LeaveOneOut()).mean()
    assert knn(x, y, k=1) == pytest.approx(expected, abs=1e-15)


def test_knn_tie_goes_to_the_nearest_class_and_self_is_excluded():
    x = np.array([[0.0], [1.0], [1.5], [10.0], [11.0], [12.0]])
    y = np.array([0, 1, 0, 1, 1, 1])
    # sample 0: neighbours 1 (class 1), 2 (class 0) -> tie, nearest is class 1 -> wrong
    # sample 1: neighbours 2 (0), 0 (0) -> class 0 -> wrong; sample 2: neighbours 1 (1), 0 (0) -> class 1 -> wrong
    # samples 3, 4, 5: two class-1 neighbours -> right
    assert knn(x, y, k=2) == pytest.approx(3 / 6)


def test_knn_perfect_features_score_one_and_singletons_count_as_errors():
    x, y = separable()
    assert knn(x, y) == 1.0
    y = y.copy()
    y[0] = 9
    assert knn(x, y) == pytest.approx(1 - 1 / y.size)


def test_knn_options_are_checked():
    x, y = separable()
    with pytest.raises(InputError, match="k"):
        knn(x, y, k=0)
    with pytest.raises(InputError, match="metric"):
        knn(x, y, metric="manhattan")
    assert 0.0 <= knn(x, y, metric="cosine", standardise=True) <= 1.0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 40), n_classes=st.integers(2, 4), k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_knn_is_an_accuracy(n, n_classes, k, seed):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, size=n - n_classes)])
    x = rng.normal(size=(n, 3))
    value = knn(x, y, k=k)
    assert 0.0 <= value <= 1.0
    assert (value * n) == pytest.approx(round(value * n))


def test_knn_row_permutation_invariance():
    x, y = cases()["cls_small_X"], cases()["cls_small_y"]
    order = np.random.default_rng(777).permutation(y.size)
    assert knn(x[order], y[order]) == knn(x, y)


def test_probe_is_deterministic_per_seed_and_an_accuracy():
    x, y = separable(noise=3.0)
    a = linear_probe(x, y, seed=1)
    assert a == linear_probe(x, y, seed=1)
    assert 0.0 <= a <= 1.0
    assert linear_probe(separable()[0], separable()[1]) == 1.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n_classes=st.integers(2, 3))
def test_probe_is_an_accuracy(seed, n_classes):
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(np.arange(n_classes), 3), rng.integers(0, n_classes, size=12)])
    value = linear_probe(rng.normal(size=(y.size, 4)), y, folds=3, seed=seed)
    assert 0.0 <= value <= 1.0


def test_probe_options_are_checked():
    x, y = separable()
    with pytest.raises(InputError, match="folds"):
        linear_probe(x, y, folds=1)
    with pytest.raises(InputError, match="c"):
        linear_probe(x, y, c=0.0)
    with pytest.raises(InputError, match="seed"):
        linear_probe(x, y, seed=-1)
