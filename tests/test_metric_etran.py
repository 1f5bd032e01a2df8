"""ETran: energy term against mgholamikn/ETran records; LDA term; the pool combination."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import cases, records, separable
from emms.errors import InputError
from emms.metrics.etran import ETranStatistics, energy_score, etran, etran_combine, lda_score


@pytest.mark.parametrize("case", ["cls_small", "cls_medium"])
@pytest.mark.parametrize("tail", ["bot", "top"])
def test_energy_matches_reference(case, tail):
    record = records()[f"etran.Energy_Score.{case}.{tail}"]
    value = energy_score(cases()[f"{case}_X"], percent=0.5, tail=tail)
    assert value == pytest.approx(record["value"], rel=record["recommended_tolerance"]["rtol"])


def test_energy_uses_at_least_one_row():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 0.0]])
    assert energy_score(x, percent=0.5) == pytest.approx(np.log(2.0))
    assert energy_score(x, percent=0.5, tail="top") == pytest.approx(np.log(np.exp(5.0) + 1.0))
    with pytest.raises(InputError, match="tail"):
        energy_score(x, tail="middle")


def test_reference_lda_is_the_identity_covariance_classifier_by_hand():
    # x = 0 (class 0), x = 2 (class 1): logits x mu_c - mu_c^2 / 2 + log 1/2 give p = sigmoid(2) for both
    assert lda_score(np.array([[0.0], [2.0]]), np.array([0, 1])) == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-12)


def test_eigh_of_a_non_symmetric_matrix_returns_orthonormal_vectors():
    # why the reference's coef = means V V^T collapses to the means (module docstring)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    within, between = a @ a.T + np.eye(6), b @ b.T
    _, vectors = np.linalg.eigh(np.linalg.inv(within) @ between)
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(6), atol=1e-12)


def test_shrinkage_lda_is_offered_and_differs():
    x, y = cases()["cls_small_X"] / 16.0, cases()["cls_small_y"]
    assert lda_score(x, y, lda="shrinkage") > lda_score(x, y)
    with pytest.raises(InputError, match="lda"):
        lda_score(x, y, lda="bogus")


def test_combine_weights():
    stats = {"a": ETranStatistics(energy=1.0, lda=0.5), "b": ETranStatistics(energy=3.0, lda=0.7),
             "c": ETranStatistics(energy=2.0, lda=0.9)}
    assert etran_combine(stats) == pytest.approx({"a": 0.0, "b": 0.85 * 0.5 + 0.15, "c": 0.85 + 0.15 * 0.5})


def test_pool_score_is_row_permutation_invariant():
    x, y = separable(noise=2.0)
    z = np.random.default_rng(3).normal(size=x.shape)
    order = np.random.default_rng(777).permutation(y.size)
    a = etran({"x": x, "z": z}, y)
    b = etran({"x": x[order], "z": z[order]}, y[order])
    assert a == pytest.approx(b, rel=1e-12)


def test_single_model_pool_is_an_error():
    x, y = separable()
    with pytest.raises(InputError, match="at least 2 models"):
        etran({"m": x}, y)
