"""TransRate: both variants against a direct transcription of their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import separable
from emms.errors import InputError
from emms.metrics.transrate import transrate


def _rate(z, eps):
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + z.T @ z / (n * eps))[1]


def _official_by_definition(x, y, eps=1e-4):
    z = x - x.mean(axis=0)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    rank = np.linalg.matrix_rank(z.T @ z / len(z))
    conditional = sum(np.mean(y == c) * _rate(z[y == c], eps) for c in np.unique(y))
    return (_rate(z, eps) - conditional) / rank


@pytest.mark.parametrize("n_per_class, dim", [(20, 6), (4, 30)])
def test_official_variant_matches_definition(n_per_class, dim):
    x, y = separable(n_per_class=n_per_class, n_classes=3, dim=dim, noise=1.0, seed=3)
    x, y = x[1:], y[1:]  # unequal class sizes
    assert transrate(x, y, variant="official") == pytest.approx(_official_by_definition(x, y), rel=1e-9)


def test_centred_variant_matches_definition_with_other_eps():
    x, y = separable(n_per_class=10, n_classes=4, dim=12, noise=1.0, seed=4)
    z = x - x.mean(axis=0)
    expected = _rate(z, 1e-2) - np.mean([_rate(z[y == c], 1e-2) for c in range(4)])
    assert transrate(x, y, eps=1e-2) == pytest.approx(expected, rel=1e-9)


def test_official_is_scale_free_centred_is_not():
    x, y = separable(noise=1.0)
    official = transrate(x, y, variant="official")
    assert transrate(10 * x, y, variant="official") == pytest.approx(official, rel=1e-9)
    assert transrate(1e-3 * x, y, variant="official") == pytest.approx(official, rel=1e-9)
    assert transrate(1e-3 * x, y) < 0.5 * transrate(x, y)  # centred: feature scale vs eps matters


@pytest.mark.parametrize("options, match", [({"variant": "l2"}, "variant"), ({"eps": 0.0}, "eps")])
def test_bad_options_raise_input_error(options, match):
    x, y = separable()
    with pytest.raises(InputError, match=match):
        transrate(x, y, **options)
