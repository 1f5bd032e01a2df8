"""LogME and LogME with F-labels: vectorised solver, streaming, N < D handling, targets, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st

from _part2_helpers import random_features, separable
from emms.errors import EmmsWarning, InputError
from emms.metrics import score
from emms.metrics.logme import logme, logme_fit, logme_flabels, logme_from_stats


def _data(n=120, d=10, t=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3, size=d) + rng.normal(size=d)
    y = x @ rng.normal(size=(d, t)) + rng.normal(size=(n, t)) * rng.uniform(0.1, 5, size=t)
    return x, y


@settings(max_examples=25, deadline=None)
@given(n=st.integers(5, 60), d=st.integers(1, 40), t=st.integers(1, 5), seed=st.integers(0, 10_000),
       solver=st.sampled_from(["fixed_point", "icml"]))
def test_all_columns_at_once_equal_one_column_at_a_time(n, d, t, seed, solver):
    # Columns converge after different numbers of iterations: masking must keep them independent.
    x, y = _data(n, d, t, seed)
    joint = logme_fit(x, y, solver=solver)
    for j in range(t):
        single = logme_fit(x, y[:, [j]], solver=solver)
        np.testing.assert_allclose(joint.evidence[j], single.evidence[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(joint.alpha[j], single.alpha[0], rtol=1e-10)


@pytest.mark.parametrize("n, d", [(200, 12), (15, 40)])
def test_streamed_statistics_equal_in_memory_fit(n, d):
    x, y = _data(n, d, 4, seed=3)
    gram, cross, target_sq = np.zeros((d, d)), np.zeros((d, 4)), np.zeros(4)
    for chunk in np.array_split(np.arange(n), 4):
        gram += x[chunk].T @ x[chunk]
        cross += x[chunk].T @ y[chunk]
        target_sq += (y[chunk] ** 2).sum(axis=0)
    streamed = logme_from_stats(gram, cross, target_sq, n)
    direct = logme_fit(x, y)
    np.testing.assert_allclose(streamed.evidence, direct.evidence, rtol=1e-7)
    assert streamed.rank == direct.rank == min(n, d)


def test_zero_feature_columns_change_nothing_by_default_but_do_with_the_reference_quirk():
    # Appending all-zero features adds D - rank eigenvalues equal to alpha; the exact log-determinant
    # cancels them, the reference fixed-point code (thuml_rank_quirk=True) does not.
    x, y = separable(n_per_class=10, n_classes=3, dim=20, noise=1.0)
    padded = np.hstack([x, np.zeros((x.shape[0], 50))])
    assert logme(padded, y) == pytest.approx(logme(x, y), rel=1e-9)
    assert logme(padded, y, thuml_rank_quirk=True) > logme(x, y, thuml_rank_quirk=True) + 0.1


def _max_log_evidence_by_optimiser(x, y):
    """Independent oracle: maximise each column's evidence over (log α, log β) with Nelder–Mead, using
    all D eigenvalues of FᵀF (zeros included, no rank threshold) and the explicit residual ‖y − Fm‖²."""
    n, d = x.shape
    eigenvalues, vectors = np.linalg.eigh(x.T @ x)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    rotated = vectors.T @ (x.T @ y)

    def negative(log_params, j):
        alpha, beta = np.exp(log_params)
        m = vectors @ (beta * rotated[:, j] / (alpha + beta * eigenvalues))
        value = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * eigenvalues))
                 - beta / 2 * np.sum((y[:, j] - x @ m) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))
        return -value / n

    return np.mean([-scipy.optimize.minimize(negative, [0.0, 0.0], args=(j,), method="Nelder-Mead",
                                              options={"xatol": 1e-9, "fatol": 1e-13, "maxiter": 4000}).fun
                    for j in range(y.shape[1])])


@pytest.mark.parametrize("n, d, rel", [(150, 20, 1e-5), (32, 100, 1e-2)])
def test_fixed_point_reaches_the_maximum_evidence_also_when_n_below_d(n, d, rel):
    # N < D: the features interpolate the targets, the optimum drifts to beta -> infinity along a flat
    # ridge and the 11-step solver stops short (0.4 % here); the reference quirk is off by far more.
    x, y = separable(n_per_class=n // 4, n_classes=4, dim=d, noise=2.0, seed=5)
    oracle = _max_log_evidence_by_optimiser(x, np.eye(4)[y])
    assert logme(x, y) == pytest.approx(oracle, rel=rel)
    assert logme(x, y, solver="icml") == pytest.approx(oracle, rel=2e-2)
    if n < d:
        assert logme(x, y, thuml_rank_quirk=True) > oracle + 0.5


def test_perfect_features_beat_random_and_classes_are_one_vs_rest():
    x, y = separable()
    assert logme(x, y) > logme(random_features(y), y)
    one_hot = np.eye(y.max() + 1)[y]
    assert logme(x, y) == pytest.approx(logme(x, one_hot, target_kind="real"), rel=1e-12)


def test_multilabel_is_mean_over_label_columns_and_empty_labels_are_dropped():
    x, y = separable(seed=2)
    labels = np.stack([y == 0, y == 1, (y == 2) | (y == 3)], axis=1).astype(int)
    expected = np.mean([logme(x, labels[:, j].astype(float), target_kind="real") for j in range(3)])
    assert logme(x, labels) == pytest.approx(expected, rel=1e-12)
    with pytest.warns(EmmsWarning, match="all-zero"):
        padded = logme(x, np.hstack([labels, np.zeros((y.size, 1), int)]))
    assert padded == pytest.approx(logme(x, labels), rel=1e-12)


def test_labels_remapped_float32_accepted_inputs_untouched_and_row_order_irrelevant():
    x, y = separable(seed=4)
    x32 = x.astype(np.float32)
    x32_copy, y_copy = x32.copy(), y.copy()
    base = logme(x32.astype(np.float64), y)
    assert logme(x32, y) == pytest.approx(base, rel=1e-12)
    assert logme(x32, y + 7) == pytest.approx(base, rel=1e-12)
    assert logme(x32, np.array(["a", "b", "c", "d"])[y]) == pytest.approx(base, rel=1e-12)
    np.testing.assert_array_equal(x32, x32_copy)
    np.testing.assert_array_equal(y, y_copy)
    order = np.random.default_rng(0).permutation(y.size)
    assert logme(x32[order], y[order]) == pytest.approx(base, rel=1e-9)


def test_target_kind_overrides_the_guess():
    x, y = _data(80, 5, 1, seed=7)
    integer_valued = np.round(y[:, 0] * 3)  # looks like class labels
    as_real = logme(x, integer_valued, target_kind="real")
    assert as_real == pytest.approx(logme(x, integer_valued[:, None]))  # 2-D float: real
    assert as_real == pytest.approx(logme(x, integer_valued))  # floats are real unless told (issue 19)
    as_classes = logme(x, integer_valued, target_kind="classes")
    assert as_classes != pytest.approx(as_real)
    assert as_classes == pytest.approx(logme(x, integer_valued.astype(int)))  # integer labels are classes


def test_registry_forwards_target_kind():
    x, y = _data(80, 5, 1, seed=7)
    integer_valued = np.round(y[:, 0] * 3)
    assert score(x, integer_valued, "logme", target_kind="real") == pytest.approx(
        logme(x, integer_valued, target_kind="real"))


def test_flabels_combines():
    rng = np.random.default_rng(0)
    x, _ = _data(150, 12, 1, seed=1)
    blocks = [x @ rng.normal(size=(12, 3)) + rng.normal(size=(150, 3)),
              x[:, :4] @ rng.normal(size=(4, 9)) + 3 * rng.normal(size=(150, 9))]
    per_encoder = np.mean([logme(x, b, target_kind="real") for b in blocks])
    concatenated = logme(x, np.hstack(blocks), target_kind="real")
    assert logme_flabels(x, blocks) == pytest.approx(per_encoder, rel=1e-12)
    assert logme_flabels(x, blocks, combine="concatenated") == pytest.approx(concatenated, rel=1e-12)
    assert per_encoder != pytest.approx(concatenated)
    assert score(x, blocks, "logme_flabels") == pytest.approx(per_encoder, rel=1e-12)


def test_flabels_zero_padding_is_dropped_with_a_warning():
    x, y = _data(100, 6, 4, seed=2)
    padded = np.hstack([y, np.zeros((100, 2))])
    with pytest.warns(EmmsWarning, match="all-zero"):
        value = logme_flabels(x, [padded])
    assert value == pytest.approx(logme_flabels(x, [y]), rel=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    ({"solver": "newton"}, "solver"),
    ({"epsilon": -1.0}, "epsilon"),
])
def test_bad_options_raise_input_error(kwargs, match):
    x, y = separable()
    with pytest.raises(InputError, match=match):
        logme(x, y, **kwargs)


def test_bad_inputs_raise_input_error():
    x, y = separable()
    with pytest.raises(InputError, match="target"):
        logme(x, y[:-1])
    with pytest.raises(InputError, match="features"):
        logme(np.where(np.arange(x.size).reshape(x.shape) == 3, np.nan, x), y)
    with pytest.raises(InputError, match="logme_flabels"):
        logme(x, [x[:, :2], x[:, 2:4]])
    with pytest.raises(InputError, match="combine"):
        logme_flabels(x, [x[:, :2]], combine="max")
    with pytest.raises(InputError, match="features"):
        logme(np.zeros_like(x), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logme(x, y)  # no spurious warning on clean input


def test_flabels_with_class_level_rows_equal_a_dense_per_column_fit():
    # Class-level F-labels take the grouped FᵀY path; the plain fit of each column must agree.
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 8)) + rng.normal(size=8)
    labels = rng.integers(0, 5, 300)
    z = rng.normal(size=(5, 24))[labels]
    columns = [logme_fit(x, z[:, [j]]).evidence[0] for j in range(24)]
    assert logme_flabels(x, [z]) == pytest.approx(np.mean(columns), rel=1e-10)
