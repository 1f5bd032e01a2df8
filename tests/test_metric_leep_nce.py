"""LEEP and NCE: closed forms checked against their definitions on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

from emms.errors import InputError
from emms.metrics.leep import leep
from emms.metrics.nce import nce


def _labels(n=60, classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, classes, size=n)


def test_leep_is_log_class_frequency_for_an_uninformative_head():
    y = _labels()
    uniform = np.full((y.size, 4), 0.25)
    frequency = np.bincount(y) / y.size
    assert leep(None, y, source_probs=uniform) == pytest.approx(np.mean(np.log(frequency[y])), rel=1e-12)


def test_leep_is_zero_for_a_head_that_names_the_class():
    y = _labels()
    assert leep(None, y, source_probs=np.eye(5)[y + 1]) == pytest.approx(0.0, abs=1e-12)


def test_leep_ignores_source_classes_with_no_mass():
    y = _labels(seed=1)
    p = np.random.default_rng(2).dirichlet(np.ones(4), size=y.size)
    padded = np.hstack([p[:, :2], np.zeros((y.size, 3)), p[:, 2:]])
    value = leep(None, y, source_probs=padded)
    assert np.isfinite(value)
    assert value == pytest.approx(leep(None, y, source_probs=p), rel=1e-12)


def test_nce_equals_minus_conditional_entropy_from_scipy():
    y = _labels(n=200, classes=4, seed=3)
    z = (y + np.random.default_rng(4).integers(0, 2, size=y.size)) % 5
    probs = np.eye(7)[z] * 0.9 + 0.1 / 7
    expected = 0.0
    for source in np.unique(z):
        share = np.mean(z == source)
        expected -= share * scipy.stats.entropy(np.bincount(y[z == source], minlength=4))
    assert nce(None, y, source_probs=probs) == pytest.approx(expected, rel=1e-12)


def test_nce_is_zero_when_source_determines_target_and_minus_entropy_when_constant():
    y = _labels(n=90, classes=3, seed=5)
    assert nce(None, y, source_probs=np.eye(3)[(y + 1) % 3]) == pytest.approx(0.0, abs=1e-15)
    constant = np.tile([0.7, 0.2, 0.1], (y.size, 1))
    assert nce(None, y, source_probs=constant) == pytest.approx(-scipy.stats.entropy(np.bincount(y)), rel=1e-12)


def test_float32_softmax_over_many_classes_is_accepted():
    # a float32 softmax over 1000 source classes misses 1 by ~1e-5 per row: real heads produce this
    rng = np.random.default_rng(3)
    logits = rng.normal(scale=4.0, size=(300, 1000)).astype(np.float32)
    probs32 = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs32 /= probs32.sum(axis=1, keepdims=True)
    probs64 = probs32.astype(np.float64) / probs32.astype(np.float64).sum(axis=1, keepdims=True)
    y = rng.integers(0, 5, size=300)
    assert leep(None, y, source_probs=probs32) == pytest.approx(leep(None, y, source_probs=probs64), rel=1e-9)
    with pytest.raises(InputError, match="source_probs"):
        leep(None, y, source_probs=probs32 * 1.01)
