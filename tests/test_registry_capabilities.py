"""What the pipeline asks the registry instead of naming metrics: the built-in index read from the
``@register`` lines, and ``score_result`` (a score with what the metric's estimator tells beside it)."""

from __future__ import annotations

import numpy as np
import pytest

import emms
from emms.errors import InputError
from emms.metrics import registry
from emms.metrics.emms import EMMS


def test_score_result_keeps_the_estimator_weights_and_equals_score():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    z = [x @ rng.normal(size=(5, 4)) + rng.normal(size=(60, 4)), rng.normal(size=(60, 3))]
    result = registry.score_result(x, z, "emms")
    fitted = EMMS().fit(x, z)
    assert result.score == pytest.approx(emms.score(x, z, "emms"), rel=1e-9)
    assert result.score == pytest.approx(fitted.score_, rel=1e-9)
    assert np.allclose(result.weights, fitted.weights_) and result.weights.sum() == pytest.approx(1.0)
    assert registry.get_metric("emms").estimator is EMMS


def test_score_result_of_a_metric_without_estimator_has_no_weights():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)), np.repeat([0, 1], 20)
    result = registry.score_result(x, y, "logme")
    assert result.weights is None and result.score == emms.score(x, y, "logme")
    with pytest.raises(InputError, match="source_probs"):
        registry.score_result(x, [x[:, :2]], "emms", source_probs=np.full((40, 2), 0.5))


def test_an_estimator_is_refused_where_the_pipeline_could_not_use_it():
    with pytest.raises(ValueError, match="estimator"):
        registry.register("pool_with_estimator", targets=("classes",), pool_relative=True, estimator=EMMS)


def test_the_builtin_index_is_read_from_the_register_lines():
    index = registry.builtin_modules()
    assert index["emms"] == "emms" and index["logme_flabels"] == "logme" and index["params"] == "size"
    assert len(index) == 20
