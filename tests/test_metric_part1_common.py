"""Properties shared by the part-1 baselines: LogME, H-score, regularised H-score, TransRate, GBC,
NLEEP (features only) and LEEP, NCE (source-head probabilities)."""

from __future__ import annotations

import numpy as np
import pytest

from _part2_helpers import random_features, separable
from emms.errors import InputError
from emms.metrics import get_metric, score

FEATURE_ONLY = ["logme", "hscore", "hscore_reg", "transrate", "gbc", "nleep"]
SOURCE_PROB = ["leep", "nce"]
VARIANT_OPTIONS = [("transrate", {"variant": "official"}), ("gbc", {"gaussian": "diagonal"}),
                   ("logme", {"solver": "icml"})]
ALL_CASES = [(name, {}) for name in FEATURE_ONLY] + VARIANT_OPTIONS


def _source_probs(labels: np.ndarray, informative: bool, seed: int = 0) -> np.ndarray:
    """Softmax source-head probabilities (N, 6): driven by the labels or by noise."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(labels.size, 6))
    if informative:
        logits[np.arange(labels.size), labels % 6] += 4.0
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name, options", ALL_CASES)
def test_perfect_features_beat_random(name, options):
    x, y = separable()
    assert score(x, y, name, **options) > score(random_features(y), y, name, **options)


@pytest.mark.parametrize("name", SOURCE_PROB)
def test_informative_source_head_beats_noise(name):
    _, y = separable()
    good = score(None, y, name, source_probs=_source_probs(y, True))
    assert good > score(None, y, name, source_probs=_source_probs(y, False))
    assert good <= 0.0


@pytest.mark.parametrize("name, options", ALL_CASES)
def test_inputs_not_modified_float32_accepted_labels_remapped(name, options):
    x, y = separable(seed=3)
    x32, y_copy = x.astype(np.float32), y.copy()
    x32_copy = x32.copy()
    value = score(x32.astype(np.float64), y, name, **options)
    assert score(x32, y, name, **options) == pytest.approx(value, rel=1e-12, abs=1e-12)
    np.testing.assert_array_equal(x32, x32_copy)
    np.testing.assert_array_equal(y, y_copy)
    names = np.array(["cat", "dog", "eel", "fox"])[y]
    assert score(x32, y + 7, name, **options) == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert score(x32, names, name, **options) == pytest.approx(value, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name, options", [c for c in ALL_CASES if c[0] != "nleep"])
def test_row_order_does_not_matter(name, options):
    x, y = separable(seed=5, noise=1.0)
    order = np.random.default_rng(1).permutation(y.size)
    assert score(x[order], y[order], name, **options) == pytest.approx(score(x, y, name, **options), rel=1e-9)


@pytest.mark.parametrize("name", SOURCE_PROB)
def test_source_prob_metrics_row_order_remap_and_input_untouched(name):
    _, y = separable(seed=6)
    p = _source_probs(y, True, seed=2).astype(np.float32)
    p_copy = p.copy()
    value = score(None, y, name, source_probs=p)
    order = np.random.default_rng(3).permutation(y.size)
    assert score(None, y[order], name, source_probs=p[order]) == pytest.approx(value, rel=1e-12)
    assert score(None, y + 3, name, source_probs=p) == pytest.approx(value, rel=1e-12)
    np.testing.assert_array_equal(p, p_copy)


@pytest.mark.parametrize("name", SOURCE_PROB)
def test_source_probs_must_be_probabilities_with_matching_rows(name):
    x, y = separable()
    logits = np.random.default_rng(0).normal(size=(y.size, 5))
    with pytest.raises(InputError, match="softmax"):
        score(x, y, name, source_probs=logits)
    with pytest.raises(InputError, match="source_probs"):
        score(x, y, name, source_probs=_source_probs(y, True)[:-1])
    with pytest.raises(InputError, match="target"):
        score(x[:-1], y, name, source_probs=_source_probs(y, True))


@pytest.mark.parametrize("name", FEATURE_ONLY + SOURCE_PROB)
def test_capabilities_declared(name):
    info = get_metric(name)
    assert "classes" in info.targets
    assert info.needs_source_probs == (name in SOURCE_PROB)
    assert info.randomised == (name == "nleep")
    assert not info.pool_relative


@pytest.mark.parametrize("name", FEATURE_ONLY)
def test_bad_features_and_labels_raise_input_error(name):
    x, y = separable()
    with pytest.raises(InputError, match="target"):
        score(x, y[:-1], name)
    with pytest.raises(InputError, match="features"):
        score(x[:, :, None], y, name)
    with pytest.raises(InputError, match="target"):
        score(x, np.zeros_like(y), name)  # a single class
