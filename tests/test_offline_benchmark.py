"""The offline benchmark scripts (benchmarks/offline_benchmark.py, benchmarks/text_benchmark.py)."""

from __future__ import annotations

import gzip
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import offline_benchmark as ob  # noqa: E402
import text_benchmark as tb  # noqa: E402

from _counting import CountingExtractor  # noqa: E402
from emms.data import TaskData  # noqa: E402
from emms.evaluate import evaluate_scores  # noqa: E402
from emms.models import load_extractor  # noqa: E402
from emms.compute.store import Store  # noqa: E402


def test_probe_split_matches_the_fine_tuning_runs_and_is_disjoint_from_them():
    from emms.data.fashion_targets import benchmark_targets

    targets = benchmark_targets(**ob.SPLIT_SIZES)
    for name, target in targets.items():
        records = list((BENCHMARKS / "data" / "finetune_runs" / name).glob("*.json"))
        assert records, name
        recorded = {json.loads(p.read_text())["data_fingerprint"] for p in records}
        assert recorded == {target.fingerprint(("train", "val", "test"))}
        assert target.probe.size == 2000
        assert not set(target.probe) & (set(target.train) | set(target.val))


def test_truth_covers_every_candidate_on_every_target():
    truth = pd.read_csv(BENCHMARKS / "data" / "finetune_truth.csv")
    for target in ("fm10", "fm4", "fm-tops4"):
        assert set(truth[truth.target == target].model) == set(ob.CANDIDATES)


def _probe_data(n: int, seed: int) -> TaskData:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    return TaskData("probe", "image", images, "classification", pd.DataFrame({"label": np.arange(n) % 2}))


def test_features_and_probs_come_from_one_cached_pass(tmp_path):
    data = _probe_data(6, 0)
    store = Store(tmp_path)
    inner = load_extractor("builtin:mnv2_imagenet?image_size=32&pretrained=false")
    extractor = CountingExtractor(inner)
    feats, probs = ob.probe_features(extractor, data, store, batch_size=4)
    assert feats.shape == (6, 1280) and probs.shape == (6, 1000) and extractor.calls == 1
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(feats, inner.extract(data.inputs, 4), rtol=1e-5, atol=1e-5)
    # fm4 shares fm10's probe images under other labels: the same entry serves it
    relabelled = TaskData("probe-4", "image", data.inputs, "classification", pd.DataFrame({"label": [0, 1, 2, 3, 0, 1]}))
    again, again_probs = ob.probe_features(extractor, relabelled, store, batch_size=4)
    assert extractor.calls == 1  # served by the store
    np.testing.assert_array_equal(again, feats)
    np.testing.assert_array_equal(again_probs, probs)


def test_features_without_a_source_head_have_no_probs(tmp_path):
    feats, probs = ob.probe_features(load_extractor("builtin:ocrvgg_easyocr?image_size=32"), _probe_data(3, 1),
                                     Store(tmp_path), batch_size=2)
    assert feats.shape == (3, 256) and probs is None


def _pool_tables():
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(5)]
    truth_rows, score_rows = [], []
    for target in ("a", "b"):
        values = rng.uniform(0.7, 0.9, size=5)
        truth_rows += [{"target": target, "model": m, "value": v} for m, v in zip(models, values)]
        score_rows += [{"target": target, "model": m, "metric": "good", "score": v, "seconds": 0.0}
                       for m, v in zip(models, values)]
        score_rows += [{"target": target, "model": m, "metric": "leep", "score": -v, "seconds": 0.0}
                       for m, v in zip(models[:3], values[:3])]
    return pd.DataFrame(score_rows), pd.DataFrame(truth_rows)


def test_correlations_put_source_head_metrics_on_their_sub_pool():
    scores, truth = _pool_tables()
    table = ob.correlations(scores, truth, n_resamples=50)
    full = table[table.pool == "all 5"]
    sub = table[table.pool == "3 with a source head"]
    assert set(full.metric) == {"good"} and set(sub.metric) == {"good", "leep"}
    tau = sub.set_index(["metric", "target", "statistic"]).value
    assert tau[("good", "mean", "kendall_tau")] == pytest.approx(1.0)
    assert tau[("leep", "mean", "kendall_tau")] == pytest.approx(-1.0)
    direct = evaluate_scores(scores[scores.metric == "good"].drop(columns="seconds"), truth, n_resamples=50)
    pd.testing.assert_frame_equal(full.drop(columns="pool").reset_index(drop=True), direct)


def test_markdown_report_lists_every_metric_and_the_cost_ratio():
    scores, truth = _pool_tables()
    corr = ob.correlations(scores, truth, n_resamples=50)
    cost = pd.DataFrame([{"target": "a", "model": "m0", "width": 8, "gcv_s": 0.3, "in_sample_s": 0.2}])
    text = ob.markdown_report(scores, corr, cost, {"title": "t", "n_models": 5, "n_targets": 2, "n_probe": 9,
                                                   "repeats": 3, "machine": "m"})
    assert "| good | +1.000" in text and "| leep |" in text
    assert "1.50x" in text


def test_per_model_tables_rank_models_beside_the_truth():
    scores, truth = _pool_tables()
    scores = scores.assign(metric=scores.metric.replace({"good": "emms", "leep": "logme"}))
    lines = ob.per_model_tables(scores, truth)
    target_a = truth[truth.target == "a"].sort_values("value", ascending=False)
    first_row = next(line for line in lines if line.startswith("| m") and not line.startswith("| model"))
    best = target_a.iloc[0]
    assert first_row.startswith(f"| {best.model} | {best.value:.4f} | ") and "(1)" in first_row
    assert sum(line.startswith("Scores on") for line in lines) == 2


@pytest.mark.skipif(not tb.FORTUNES_DIR.is_dir(),
                    reason="benchmark-only data: the Debian fortunes package (apt-get install fortunes) is not installed")
def test_fortune_splits_are_balanced_disjoint_and_exclude_the_bundled_sample():
    splits = tb.fortune_splits(tb.FORTUNES_DIR, seed=0)
    bundled = resources.files("emms").joinpath("resources/text_topics.jsonl.gz").read_bytes()
    bundled_texts = {json.loads(line)["text"] for line in gzip.decompress(bundled).decode().splitlines()}
    seen: set[str] = set()
    for part, data in splits.items():
        counts = data.labels["label"].value_counts()
        assert len(counts) == 6 and (counts == tb.PER_TOPIC[part]).all()
        texts = set(data.inputs)
        assert not texts & seen and not texts & bundled_texts
        seen |= texts
    assert tb.fortune_splits(tb.FORTUNES_DIR, seed=0)["probe"].inputs == splits["probe"].inputs


def test_probe_truth_is_a_nested_cross_validated_best_c_head():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    informative = rng.normal(size=(120, 5)) + 3.0 * np.eye(3, 5)[y]
    noise = rng.normal(size=(120, 5))
    good = tb.probe_truth(informative, y, seed=0)
    bad = tb.probe_truth(noise, y, seed=0)
    assert good["C_most_chosen"] in tb.C_GRID and good["n_outer_folds"] == 5 * tb.OUTER_REPEATS
    assert good["value"] > 0.9 > 0.6 > bad["value"]
    assert 0 < good["value_std"] < 0.1


def test_leave_one_out_tables_recompute_weighted_tau_without_each_candidate():
    scores, truth = _pool_tables()
    lines = ob.leave_one_out_tables(scores, truth, metrics=("good",))
    rows = [line for line in lines if line.startswith("| (none)") or line.startswith("| m")]
    assert len(rows) == 6 and all(row.endswith("| +1.000 |") for row in rows)


def test_noise_ceiling_is_one_without_seed_noise_and_drops_with_it():
    table = pd.DataFrame({"target": "a", "model": [f"m{i}" for i in range(6)], "value": np.linspace(0.8, 0.9, 6),
                          "value_std": 0.0, "n_seeds": 2})
    models = list(table.model)
    assert ob.noise_ceiling(table, models, draws=20)["a"] == pytest.approx(1.0)
    noisy = ob.noise_ceiling(table.assign(value_std=0.05), models, draws=200)["a"]
    assert 0.0 < noisy < 0.8
