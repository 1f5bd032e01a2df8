"""Correlation harness: hand-computed cases, an independent weighted-tau formula, scipy, selection
statistics, bootstrap intervals, the scores/truth tables and the ``emms evaluate`` command."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from typer.testing import CliRunner

from emms.cli import app
from emms.errors import InputError
from emms.evaluate.correlations import (
    bootstrap_ci,
    kendall_tau,
    pearson,
    regret_at_k,
    rel_at_k,
    spearman,
    top1_hit,
    top_k_models,
    weighted_tau,
    weighted_tau_batch,
)
from emms.evaluate.summary import evaluate_scores, read_scores, read_truth


def _weighted_tau_by_definition(x: np.ndarray, y: np.ndarray, importance: np.ndarray) -> float:
    """Vigna's additive hyperbolic tau: pair weight 1/(r_i+1) + 1/(r_j+1), r = 0 for the element
    ranked first by decreasing ``importance`` (ties broken by decreasing ``y``)."""
    order = np.lexsort((-y, -importance))
    rank = np.empty(len(x), dtype=int)
    rank[order] = np.arange(len(x))
    num = den_x = den_y = 0.0
    for i, j in combinations(range(len(x)), 2):
        w = 1 / (rank[i] + 1) + 1 / (rank[j] + 1)
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        num += w * sx * sy
        den_x += w * sx * sx
        den_y += w * sy * sy
    return num / np.sqrt(den_x * den_y)


def test_weighted_tau_hand_computed_three_models():
    # truth order: model 2 (w=1), model 1 (w=1/2), model 0 (w=1/3); pairs (0,1)+, (0,2)+, (1,2)-
    # tau = (5/6 + 4/3 - 3/2) / (5/6 + 4/3 + 3/2) = 2/11 under both weightings
    scores, truth = np.array([0.1, 0.3, 0.2]), np.array([1.0, 2.0, 3.0])
    assert weighted_tau(scores, truth, variant="truth_weighted") == pytest.approx(2 / 11, abs=1e-12)
    assert weighted_tau(scores, truth, variant="symmetric") == pytest.approx(2 / 11, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=3, max_size=9))
def test_weighted_tau_matches_the_definition_with_and_without_ties(pairs):
    scores = np.array([p[0] for p in pairs], dtype=float)
    truth = np.array([p[1] for p in pairs], dtype=float)
    if np.ptp(scores) == 0 or np.ptp(truth) == 0:
        assert np.isnan(weighted_tau(scores, truth))
        return
    by_truth = _weighted_tau_by_definition(truth, scores, truth)
    assert weighted_tau(scores, truth, variant="truth_weighted") == pytest.approx(by_truth, abs=1e-12)
    by_scores = _weighted_tau_by_definition(scores, truth, scores)
    assert weighted_tau(scores, truth, variant="symmetric") == pytest.approx((by_truth + by_scores) / 2, abs=1e-12)


@pytest.mark.parametrize("variant", ["symmetric", "truth_weighted"])
def test_batched_weighted_tau_equals_scipy_row_by_row_with_ties(variant):
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 4, size=(300, 7)).astype(float)  # many ties and repeated models
    truth = rng.integers(0, 4, size=(300, 7)).astype(float)
    batched = weighted_tau_batch(scores, truth, variant=variant)
    one_by_one = np.array([weighted_tau(s, t, variant=variant) for s, t in zip(scores, truth)])
    np.testing.assert_array_equal(np.isnan(batched), np.isnan(one_by_one))
    assert np.isnan(one_by_one).any()  # the constant rows are covered
    np.testing.assert_allclose(batched[~np.isnan(batched)], one_by_one[~np.isnan(one_by_one)], atol=1e-12, rtol=0)


def test_the_variants_differ_and_only_symmetric_is_symmetric():
    scores = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.5])
    truth = np.array([0.9, 0.8, 0.7, 0.6, 0.3, 0.1])
    sym, tw = weighted_tau(scores, truth), weighted_tau(scores, truth, variant="truth_weighted")
    assert sym != pytest.approx(tw, abs=1e-3)
    assert weighted_tau(truth, scores) == pytest.approx(sym, abs=1e-14)
    assert weighted_tau(truth, scores, variant="truth_weighted") != pytest.approx(tw, abs=1e-3)
    assert sym == pytest.approx(stats.weightedtau(scores, truth).statistic, abs=0)
    assert tw == pytest.approx(stats.weightedtau(truth, scores, rank=None).statistic, abs=0)


def test_perfect_and_reversed_rankings():
    truth = np.array([0.5, 0.7, 0.6, 0.9])
    for variant in ("symmetric", "truth_weighted"):
        assert weighted_tau(truth * 3 + 1, truth, variant=variant) == pytest.approx(1.0)
        assert weighted_tau(-truth, truth, variant=variant) == pytest.approx(-1.0)
    assert kendall_tau(truth, truth) == pytest.approx(1.0) and spearman(-truth, truth) == pytest.approx(-1.0)


def test_kendall_spearman_pearson_hand_computed_and_scipy():
    scores, truth = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])
    assert kendall_tau(scores, truth) == pytest.approx(4 / 6)          # 5 concordant, 1 discordant
    assert spearman(scores, truth) == pytest.approx(1 - 6 * 2 / (4 * 15))  # sum d^2 = 2
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=12), rng.normal(size=12)
    assert pearson(s, t) == pytest.approx(np.corrcoef(s, t)[0, 1], abs=1e-12)
    assert spearman(s, t) == pytest.approx(stats.spearmanr(s, t).statistic, abs=1e-12)
    assert kendall_tau(s, t) == pytest.approx(stats.kendalltau(s, t).statistic, abs=1e-12)
    assert np.isnan(pearson(np.ones(4), truth)) and np.isnan(spearman(np.ones(4), truth))


def test_float32_inputs_are_accepted_and_never_modified():
    scores = np.array([0.3, 0.1, 0.2, 0.5], dtype=np.float32)
    truth = np.array([70.0, 60.0, 65.0, 80.0], dtype=np.float32)
    kept = scores.copy(), truth.copy()
    assert weighted_tau(scores, truth) == pytest.approx(weighted_tau(scores.astype(float), truth.astype(float)))
    rel_at_k(scores, truth, 2)
    np.testing.assert_array_equal(scores, kept[0])
    np.testing.assert_array_equal(truth, kept[1])


def test_rel_regret_and_top1_definitions():
    scores, truth = np.array([0.9, 0.8, 0.1]), np.array([80.0, 90.0, 70.0])
    assert rel_at_k(scores, truth, 1) == pytest.approx(80 / 90)
    assert regret_at_k(scores, truth, 1) == pytest.approx(10.0)
    assert rel_at_k(scores, truth, 2) == 1.0 and regret_at_k(scores, truth, 2) == 0.0
    assert not top1_hit(scores, truth) and top1_hit(scores[[1, 0, 2]], truth)
    # score ties are broken pessimistically: a score that cannot separate models earns no credit
    tied = np.array([1.0, 1.0, 0.0])
    assert list(top_k_models(tied, np.array([90.0, 80.0, 70.0]), 2)) == [1, 0]
    assert rel_at_k(tied, np.array([90.0, 80.0, 70.0]), 1) == pytest.approx(80 / 90)
    assert not top1_hit(tied, np.array([90.0, 80.0, 70.0]))
    # signed ground truth (negated losses): regret works, rel@k refuses
    assert regret_at_k(np.array([2.0, 1.0]), np.array([-390.0, -382.0]), 1) == pytest.approx(8.0)
    with pytest.raises(InputError, match="truth"):
        rel_at_k(np.array([2.0, 1.0]), np.array([-390.0, -382.0]), 1)
    with pytest.raises(InputError, match="k"):
        rel_at_k(scores, truth, 4)


def test_bootstrap_is_seeded_brackets_the_point_and_averages_groups():
    rng = np.random.default_rng(1)
    truth = rng.uniform(60, 90, size=12)
    scores = truth + rng.normal(0, 6, size=12)
    statistic = weighted_tau
    point, low, high = bootstrap_ci(statistic, [(scores, truth)], n_resamples=300, seed=7)
    assert point == pytest.approx(weighted_tau(scores, truth))
    assert low < point < high and -1 <= low and high <= 1
    assert bootstrap_ci(statistic, [(scores, truth)], n_resamples=300, seed=7) == (point, low, high)
    assert bootstrap_ci(statistic, [(scores, truth)], n_resamples=300, seed=8) != (point, low, high)
    fast = bootstrap_ci(statistic, [(scores, truth)], n_resamples=300, seed=7, batched=weighted_tau_batch)
    assert fast == pytest.approx((point, low, high), abs=1e-12)
    narrow = bootstrap_ci(statistic, [(scores, truth)], n_resamples=300, seed=7, confidence=0.5)
    assert low < narrow[1] <= narrow[2] < high
    other = (-scores, truth)
    mean_point, mean_low, mean_high = bootstrap_ci(statistic, [(scores, truth), other], n_resamples=300, seed=7)
    assert mean_point == pytest.approx((weighted_tau(scores, truth) + weighted_tau(-scores, truth)) / 2)
    assert mean_low < mean_point < mean_high
    with pytest.raises(InputError, match="n_resamples"):
        bootstrap_ci(statistic, [(scores, truth)], n_resamples=3)
    with pytest.raises(InputError, match="seed"):
        bootstrap_ci(statistic, [(scores, truth)], seed=-1)


def test_bad_inputs_name_the_argument():
    with pytest.raises(InputError, match="truth"):
        weighted_tau([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(InputError, match="scores"):
        kendall_tau([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="variant"):
        weighted_tau([1.0, 2.0], [1.0, 2.0], variant="rank_false")


@pytest.fixture()
def tables(tmp_path):
    rng = np.random.default_rng(3)
    models = [f"m{i}" for i in range(6)]
    rows, truth_rows = [], []
    for target in ("a", "b"):
        truth = rng.uniform(0.6, 0.9, size=6)
        truth_rows += [{"target": target, "model": m, "value": v} for m, v in zip(models, truth)]
        rows += [{"target": target, "model": m, "metric": "good", "score": v + rng.normal(0, 0.02)}
                 for m, v in zip(models, truth)]
        rows += [{"target": target, "model": m, "metric": "noise", "score": rng.normal()} for m in models]
    long, truth = pd.DataFrame(rows), pd.DataFrame(truth_rows)
    long.to_csv(tmp_path / "scores.csv", index=False)
    wide = long.pivot(index=["target", "model"], columns="metric", values="score").reset_index()
    wide.to_csv(tmp_path / "wide.csv", index=False)
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return tmp_path


def test_evaluate_scores_per_target_and_mean(tables):
    result = evaluate_scores(read_scores(tables / "scores.csv"), read_truth(tables / "truth.csv"), n_resamples=100)
    wide = evaluate_scores(read_scores(tables / "wide.csv"), read_truth(tables / "truth.csv"), n_resamples=100)
    pd.testing.assert_frame_equal(result, wide)
    assert set(result.target) == {"a", "b", "mean"} and set(result.metric) == {"good", "noise"}
    value = result.set_index(["metric", "target", "statistic"]).value
    scores, truth = read_scores(tables / "scores.csv"), read_truth(tables / "truth.csv")
    a = scores[(scores.metric == "good") & (scores.target == "a")].merge(truth[truth.target == "a"], on="model")
    assert value["good", "a", "weighted_tau_truth_weighted"] == pytest.approx(
        weighted_tau(a.score, a.value, variant="truth_weighted"))
    assert value["good", "a", "rel@3"] == pytest.approx(rel_at_k(a.score, a.value, 3))
    for statistic in ("weighted_tau_symmetric", "pearson", "regret@1", "top1_hit"):
        assert value["good", "mean", statistic] == pytest.approx(
            (value["good", "a", statistic] + value["good", "b", statistic]) / 2)
    assert value["good", "mean", "weighted_tau_symmetric"] > value["noise", "mean", "weighted_tau_symmetric"]
    ci = result[result.statistic == "weighted_tau_symmetric"]
    assert (ci.ci_low <= ci.value + 1e-12).all() and (ci.value <= ci.ci_high + 1e-12).all()
    b = scores[(scores.metric == "good") & (scores.target == "b")].merge(truth[truth.target == "b"], on="model")
    groups = [(a.score, a.value), (b.score, b.value)]
    mean_row = ci[(ci.metric == "good") & (ci.target == "mean")].iloc[0]
    assert (mean_row.value, mean_row.ci_low, mean_row.ci_high) == pytest.approx(
        bootstrap_ci(weighted_tau, groups, n_resamples=100, seed=0), abs=1e-12)
    assert result[result.statistic == "spearman"].ci_low.isna().all()


def test_evaluate_command_tables_and_json(tables):
    runner = CliRunner()
    args = ["evaluate", "--scores", str(tables / "scores.csv"), "--truth", str(tables / "truth.csv"), "--resamples", "50"]
    shown = runner.invoke(app, args)
    assert shown.exit_code == 0, shown.output
    assert "good" in shown.output and "noise" in shown.output and "weighted_tau_truth_weighted" in shown.output
    as_json = runner.invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)["results"]
    assert {r["statistic"] for r in rows} >= {"weighted_tau_symmetric", "weighted_tau_truth_weighted", "kendall_tau",
                                              "spearman", "pearson", "rel@1", "regret@1", "top1_hit"}
    direct = evaluate_scores(read_scores(tables / "scores.csv"), read_truth(tables / "truth.csv"), n_resamples=50)
    assert [r["value"] for r in rows] == pytest.approx(direct.value.tolist())


def test_evaluate_command_reports_mismatched_tables(tables):
    truth = pd.read_csv(tables / "truth.csv")
    truth[truth.model != "m5"].to_csv(tables / "partial.csv", index=False)
    result = CliRunner().invoke(app, ["evaluate", "--scores", str(tables / "scores.csv"), "--truth", str(tables / "partial.csv")])
    assert result.exit_code == 2
    assert "truth" in result.output and "m5" in result.output and "Traceback" not in result.output
    missing = CliRunner().invoke(app, ["evaluate", "--scores", str(tables / "nope.csv"), "--truth", str(tables / "truth.csv")])
    assert missing.exit_code == 2 and "scores" in missing.output


def test_a_small_target_costs_only_its_own_interval():
    """A 4-model target gets no bootstrap interval (too few models) and neither does the mean over
    targets, but a 7-model target beside it keeps its own (it used to lose it to the smallest target)."""
    rng = np.random.default_rng(3)
    rows, truth = [], []
    for target, n_models in (("big", 7), ("small", 4)):
        values = rng.normal(size=n_models)
        for m, v in enumerate(values):
            truth.append({"target": target, "model": f"m{m}", "value": v})
            rows.append({"target": target, "model": f"m{m}", "metric": "good", "score": v + rng.normal(scale=0.3)})
    notes: list[str] = []
    result = evaluate_scores(pd.DataFrame(rows), pd.DataFrame(truth), n_resamples=100, notes=notes)
    ci = result[result.statistic == "weighted_tau_symmetric"].set_index("target")
    assert np.isfinite([ci.loc["big", "ci_low"], ci.loc["big", "ci_high"]]).all()
    assert ci.loc["big", "ci_low"] <= ci.loc["big", "value"] <= ci.loc["big", "ci_high"]
    assert ci.loc[["small", "mean"], ["ci_low", "ci_high"]].isna().all().all()
    assert any("4 models are too few for a bootstrap interval" in n for n in notes)
