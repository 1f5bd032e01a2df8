"""NLEEP: seeded, bounded, sensible, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import random_features, separable
from emms.errors import EmmsWarning, InputError
from emms.metrics import score
from emms.metrics.nleep import nleep


def test_deterministic_for_a_fixed_seed_and_at_most_zero():
    x, y = separable(n_per_class=25, noise=1.5, dim=12)
    first = nleep(x, y, seed=7)
    assert nleep(x, y, seed=7) == first
    assert first <= 0.0
    assert score(x, y, "nleep", seed=7) == first


def test_separable_classes_score_near_zero_random_features_near_log_prior():
    x, y = separable(n_per_class=30, noise=0.05)
    assert nleep(x, y) > -0.05
    assert nleep(random_features(y, dim=8), y) < np.log(0.5)


def test_full_covariance_variant_runs_and_stays_bounded():
    x, y = separable(n_per_class=20, noise=1.0, dim=6)
    assert -np.log(4) - 1e-9 <= nleep(x, y, covariance_type="full") <= 0.0


def test_more_components_than_samples_are_capped_with_a_warning():
    x, y = separable(n_per_class=3, n_classes=4, dim=5)
    with pytest.warns(EmmsWarning, match="exceed"):
        assert nleep(x, y, components_per_class=5) <= 0.0


@pytest.mark.parametrize("options, match", [({"components_per_class": 0}, "components_per_class"),
                                            ({"pca_variance": 1.5}, "pca_variance"),
                                            ({"covariance_type": "banana"}, "covariance_type"),
                                            ({"seed": -1}, "seed")])
def test_bad_options_raise_input_error(options, match):
    x, y = separable()
    with pytest.raises(InputError, match=match):
        nleep(x, y, **options)
