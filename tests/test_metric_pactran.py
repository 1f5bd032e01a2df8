"""PACTran Dirichlet / Gamma / Gaussian: closed-form checks, signs, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special

from _part2_helpers import cases, separable
from emms.errors import InputError
from emms.metrics.pactran import (gmm_assignments, pactran_dirichlet, pactran_dirichlet_bound, pactran_gamma,
                                  pactran_gamma_bound, pactran_gauss)


def test_dirichlet_with_one_cluster_is_the_dirichlet_multinomial_evidence():
    y = np.array([0] * 7 + [1] * 3)
    a0 = np.array([0.7, 0.3]) + 1e-10
    aw = a0 + np.array([7, 3])
    log_evidence = scipy.special.betaln(*aw) - scipy.special.betaln(*a0)
    bound = pactran_dirichlet_bound(np.ones((10, 1)), y)
    assert bound == pytest.approx(-log_evidence / 20, rel=1e-9)  # 1e-10 floor inside the logs


def test_gamma_with_one_cluster_has_its_closed_form():
    y = np.array([0] * 7 + [1] * 3)
    a0 = np.array([0.7, 0.3]) + 1e-10
    aw = a0 + np.array([7, 3])
    expected = 1 + (np.sum(scipy.special.gammaln(a0) - scipy.special.gammaln(aw)) + 10 * (np.log(aw.sum()) - 1)) / 20
    assert pactran_gamma_bound(np.ones((10, 1)), y) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("bound", [pactran_dirichlet_bound, pactran_gamma_bound])
def test_informative_assignments_give_a_lower_bound(bound):
    y = cases()["cls_small_y"]
    informative = np.eye(5)[y] * 0.9 + 0.02
    uniform = np.full((y.size, 5), 0.2)
    assert bound(informative, y) < bound(uniform, y)
    assert np.isfinite(bound(cases()["cls_small_P"], y))


def test_probabilities_are_checked():
    y = np.array([0, 1, 0, 1])
    with pytest.raises(InputError, match="probs"):
        pactran_dirichlet_bound(np.ones((4, 2)), y)
    with pytest.raises(InputError, match="probs"):
        pactran_gamma_bound(np.full((3, 2), 0.5), y)


@pytest.mark.parametrize("metric", [pactran_dirichlet, pactran_gamma, pactran_gauss])
def test_deterministic_for_a_fixed_seed(metric):
    x, y = separable(noise=1.0)
    assert metric(x, y, seed=5) == metric(x, y, seed=5)


def test_gauss_barely_depends_on_the_start():
    x, y = separable(noise=1.0)
    assert pactran_gauss(x, y, seed=0) == pytest.approx(pactran_gauss(x, y, seed=1), rel=1e-3)


def test_gmm_assignments_follow_the_pactran_component_rule():
    x, y = separable(n_per_class=50)
    probs = gmm_assignments(x, 4, seed=0)
    assert probs.shape == (200, 20)  # max(min(C, 0.2 N), 0.1 N) = 20
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    with pytest.raises(InputError, match="covariance_type"):
        gmm_assignments(x, 4, seed=0, covariance_type="bogus")
    with pytest.raises(InputError, match="pca_variance"):
        gmm_assignments(x, 4, seed=0, pca_variance=1.5)
