"""Properties shared by the part-2 baselines: SFDA, PARC, PACTran x3, kNN, linear probe, NCTI, ETran."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import random_features, separable
from emms.errors import InputError
from emms.metrics import get_metric, score, score_pool

PER_MODEL = ["sfda", "parc", "pactran_dirichlet", "pactran_gamma", "pactran_gauss", "knn", "linear_probe"]
POOL = ["ncti", "etran"]


@pytest.mark.parametrize("name", PER_MODEL)
def test_perfect_features_beat_random(name):
    x, y = separable()
    assert score(x, y, name) > score(random_features(y), y, name)


@pytest.mark.parametrize("name", PER_MODEL)
def test_inputs_not_modified_and_float32_accepted(name):
    x, y = separable(seed=3)
    x32, y_copy = x.astype(np.float32), y.copy()
    x32_copy = x32.copy()
    value32 = score(x32, y, name)
    np.testing.assert_array_equal(x32, x32_copy)
    np.testing.assert_array_equal(y, y_copy)
    value64 = score(x32.astype(np.float64), y, name)
    assert value32 == pytest.approx(value64, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", PER_MODEL)
def test_labels_are_remapped(name):
    x, y = separable(seed=4)
    names = np.array(["cat", "dog", "eel", "fox"])[y]
    assert score(x, y + 7, name) == pytest.approx(score(x, y, name), rel=1e-12)
    assert score(x, names, name) == pytest.approx(score(x, y, name), rel=1e-12)


@pytest.mark.parametrize("name", PER_MODEL)
def test_bad_input_names_the_argument(name):
    x, y = separable()
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="features"):
        score(bad, y, name)
    with pytest.raises(InputError, match="target"):
        score(x, y[:-1], name)
    with pytest.raises(InputError, match="target"):
        score(x, np.zeros_like(y), name)


@pytest.mark.parametrize("name", PER_MODEL)
def test_singleton_class_gives_a_finite_value(name):
    x, y = separable(seed=5)
    y = y.copy()
    y[0] = 9  # a class with one sample
    value = score(x, y, name)
    assert np.isfinite(value)


@pytest.mark.parametrize("name", POOL)
def test_pool_metrics_need_the_pool_api_and_two_models(name):
    x, y = separable()
    assert get_metric(name).pool_relative
    with pytest.raises(InputError, match="pool"):
        score(x, y, name)
    with pytest.raises(InputError, match="at least 2 models"):
        score_pool({"only": x}, y, name)


@pytest.mark.parametrize("name", POOL)
def test_pool_scores_rank_perfect_first_and_depend_on_the_pool(name):
    x, y = separable(n_per_class=40, dim=70)
    noise = random_features(y, dim=70)
    pool = {"random": noise, "perfect": x, "half": 0.3 * x + 3.0 * random_features(y, dim=70, seed=2)}
    scores = score_pool(pool, y, name)
    assert list(scores) == ["random", "perfect", "half"]
    assert max(scores, key=scores.get) == "perfect"
    smaller = score_pool({"random": pool["random"], "half": pool["half"]}, y, name)
    assert smaller["half"] != pytest.approx(scores["half"], abs=1e-6)
