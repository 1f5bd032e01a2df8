"""Determinism and numerics.

* Two runs of ``emms rank`` (one in this process, one in a fresh process with another hash seed,
  separate caches so every feature and label embedding is recomputed) give the same JSON for
  scores, ranks and encoder weights; only the ``seconds`` timings differ.
* Randomised metrics take a ``seed``: the same seed gives the same score, bit for bit.
* float32 and float64 features give the same ranking of a synthetic model pool, for every metric.
* Scores are invariant to per-column feature scaling where the method's definition says so.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from emms.cli import app
from emms.errors import EmmsWarning
from emms.metrics import available_metrics, get_metric, score, score_pool

RANK_ARGS = ["rank", "--data", "builtin:fashion-mnist", "--max-samples", "120", "--models",
             "builtin:onet_mtcnn,builtin:ocrvgg_easyocr", "--metrics", "emms,logme,nleep,parc", "--seed", "3",
             # two of the offline encoders (the third, sentence-transformers MiniLM, takes ~15 s just to import)
             "--encoders", "paraphrase-minilm-l3,e5-small"]


def _without_timings(doc: dict) -> dict:
    doc = dict(doc)
    doc.pop("timings")
    doc["results"] = [{k: v for k, v in row.items() if k != "seconds"} for row in doc["results"]]
    return doc


def test_two_rank_runs_give_identical_json(tmp_path):
    first = CliRunner().invoke(app, [*RANK_ARGS, "--cache", str(tmp_path / "cache1"), "--out", str(tmp_path / "1.json")])
    assert first.exit_code == 0, first.output
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # same thread settings as this process: determinism, not BLAS
    command = [sys.executable, "-c", "from emms.cli import main; main()", *RANK_ARGS, "--cache", str(tmp_path / "cache2"),
               "--out", str(tmp_path / "2.json")]
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    one, two = (json.loads((tmp_path / f"{i}.json").read_text()) for i in (1, 2))
    assert _without_timings(one) == _without_timings(two)
    # byte-identical once the timings are dropped, and it really is a ranking of both models by 4 metrics
    assert json.dumps(_without_timings(one)) == json.dumps(_without_timings(two))
    assert {(r["model"], r["metric"]) for r in one["results"]} == {
        (m, s) for m in ("builtin:onet_mtcnn", "builtin:ocrvgg_easyocr") for s in ("emms", "logme", "nleep", "parc")}
    assert all(isinstance(r["score"], float) for r in one["results"]) and one["meta"]["seed"] == 3
    assert all(len(r["weights"]) == 2 for r in one["results"] if r["metric"] == "emms")


RANDOMISED = [info.name for info in available_metrics() if info.randomised]


@pytest.mark.parametrize("name", RANDOMISED)
def test_randomised_metrics_take_a_seed(name):
    assert "seed" in inspect.signature(get_metric(name).function).parameters
    x, y = _pool(seed=1)["m2"], _labels()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        values = [score(x, y, name, seed=seed) for seed in (0, 0, 7, 7)]
    assert values[0] == values[1] and values[2] == values[3]
    assert all(np.isfinite(values))


# ----------------------------------------------------------------------------------- numerics
def _labels(n: int = 120, n_classes: int = 4) -> np.ndarray:
    return np.arange(n) % n_classes


def _pool(seed: int = 0, n: int = 120, d: int = 12) -> dict[str, np.ndarray]:
    """Five models whose features carry the class signal with strength 0, 0.5, 1, 2 and 4."""
    rng = np.random.default_rng(seed)
    y = _labels(n)
    centres = rng.normal(size=(4, d))
    return {f"m{i}": centres[y] * strength + rng.normal(size=(n, d))
            for i, strength in enumerate((0.0, 0.5, 1.0, 2.0, 4.0))}


def _flabels(n: int = 120) -> list[np.ndarray]:
    rng = np.random.default_rng(5)
    y = _labels(n)
    return [rng.normal(size=(4, width))[y] + 0.3 * rng.normal(size=(n, width)) for width in (6, 9)]


def _scores(name: str, pool: dict[str, np.ndarray], **options) -> dict[str, float]:
    info = get_metric(name)
    y = _labels()
    target = _flabels() if info.targets == frozenset({"flabels"}) else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)
        if info.needs_source_probs:
            rng = np.random.default_rng(2)
            probs = {m: rng.dirichlet(np.ones(5), size=y.size) for m in pool}
            return score_pool(pool, target, name, source_probs_by_model=probs, **options)
        return score_pool(pool, target, name, **options)


def _ranking(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda m: (-scores[m], m))


@pytest.mark.parametrize("name", [info.name for info in available_metrics() if not info.needs_n_params])
def test_float32_and_float64_give_the_same_ranking(name):
    pool64 = _pool()
    pool32 = {m: x.astype(np.float32) for m, x in pool64.items()}
    s64, s32 = _scores(name, pool64), _scores(name, pool32)
    assert _ranking(s64) == _ranking(s32), (s64, s32)
    assert np.allclose(list(s64.values()), list(s32.values()), rtol=1e-3, atol=1e-4)


# (metric, options, what the definition says, per-column scaling allowed)
SCALE_INVARIANT = [
    ("emms", {}, "standardises every feature and F-label column", True),
    ("hscore", {}, "tr(Σ_f⁺ Σ_g) is invariant to invertible linear maps of the features", True),
    ("knn", {"standardise": True}, "standardised columns", True),
    ("linear_probe", {}, "StandardScaler inside the cross-validated pipeline", True),
    ("parc", {"n_dims": None}, "column standardisation when no PCA is applied", True),
    ("gbc", {"gaussian": "diagonal"}, "per-dimension Bhattacharyya terms (variances above the 1e-4 floor)", True),
    ("transrate", {"variant": "official"}, "rows L2-normalised after centring: one global scale only", False),
    ("leep", {}, "reads only the source-head probabilities", True),
    ("nce", {}, "reads only the source-head probabilities", True),
]


@pytest.mark.parametrize("name, options, why, per_column", SCALE_INVARIANT, ids=[c[0] for c in SCALE_INVARIANT])
def test_scores_invariant_to_feature_scaling_where_the_method_says_so(name, options, why, per_column):
    pool = _pool(seed=3)
    rng = np.random.default_rng(4)
    scales = {m: (10.0 ** rng.uniform(-2, 2, size=x.shape[1]) if per_column else 37.0) for m, x in pool.items()}
    scaled = {m: x * scales[m] for m, x in pool.items()}
    before, after = _scores(name, pool, **options), _scores(name, scaled, **options)
    for model in pool:
        assert after[model] == pytest.approx(before[model], rel=1e-6, abs=1e-9), (model, why)


def test_logme_is_not_scale_invariant_and_says_so_by_design():
    """LogME keeps raw features (pinned to thuml/LogME): per-column scaling changes its score. This
    guards the list above: a metric that is not invariant must not be claimed to be."""
    x, y = _pool(seed=3)["m3"], _labels()
    scaled = x * np.random.default_rng(4).uniform(0.01, 100, size=x.shape[1])
    assert abs(score(x, y, "logme") - score(scaled, y, "logme")) > 1e-3
