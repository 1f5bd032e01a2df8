"""`emms evaluate` on what `emms rank` writes: JSON and CSV, skipped models, truth CSV shapes, too few models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from emms.cli import app
from emms.pipeline import Ranking
from emms.pipeline.result import with_ranks

RUNNER = CliRunner()
MODELS = [f"builtin:m{i}" for i in range(6)]
TRUTH = dict(zip(MODELS, (0.91, 0.88, 0.90, 0.80, 0.85, 0.70)))


def _rank_output(tmp_path, suffix: str, models=MODELS) -> str:
    """A rank result over ``models`` written as rank writes it; LEEP skipped the last two models."""
    rng = np.random.default_rng(0)
    rows = [{"model": m, "metric": "emms", "score": TRUTH[m] + rng.normal(0, 0.01), "seconds": 0.1, "weights": None}
            for m in models]
    rows += [{"model": m, "metric": "leep", "score": -TRUTH[m], "seconds": 0.1, "weights": None} for m in models[:-2]]
    ranking = Ranking(table=with_ranks(pd.DataFrame(rows)), timings=pd.DataFrame(columns=["stage", "model", "seconds"]),
                      meta={"data": "toy", "task": "classification", "n_samples": 10, "models": list(models)})
    path = tmp_path / f"result{suffix}"
    ranking.write(path)
    return str(path)


def _truth(tmp_path, text: str) -> str:
    path = tmp_path / "truth.csv"
    path.write_text(text)
    return str(path)


def test_evaluate_reads_rank_json_and_csv_and_tolerates_skipped_models(tmp_path):
    # the committed truth's shape: bare names, a target column, several targets, extra columns
    truth = _truth(tmp_path, "target,model,value,lr\n" + "".join(
        f"{t},{m.removeprefix('builtin:')},{v if t == 'fm10' else 1 - v},0.001\n" for t in ("fm10", "fm4")
        for m, v in TRUTH.items()) + "fm10,m_unscored,0.5,0.001\n")
    docs = []
    for suffix in (".json", ".csv"):
        result = RUNNER.invoke(app, ["evaluate", "--scores", _rank_output(tmp_path, suffix), "--truth", truth,
                                     "--target", "fm10", "--json", "--resamples", "50"])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(result.stdout))
    assert docs[0] == docs[1]
    doc = docs[0]
    value = {(r["metric"], r["statistic"]): r for r in doc["results"]}
    leep = value["leep", "kendall_tau"]
    assert leep["n_models"] == 4
    s = -np.array([TRUTH[m] for m in MODELS[:4]])
    assert leep["value"] == pytest.approx(stats.kendalltau(s, [TRUTH[m] for m in MODELS[:4]]).statistic)
    assert value["leep", "weighted_tau_symmetric"]["ci_low"] is None  # 4 models: no interval
    assert value["emms", "weighted_tau_symmetric"]["ci_low"] is not None  # 6 models: an interval
    assert "leep: no score for builtin:m4, builtin:m5; evaluated on the other 4 models" in doc["notes"]
    assert any("m_unscored" in n and "ignored" in n for n in doc["notes"])
    assert any("leep: 4 models are too few for a bootstrap interval" in n for n in doc["notes"])


def test_evaluate_needs_a_target_when_the_truth_has_several(tmp_path):
    truth = _truth(tmp_path, "target,model,value\n" + "".join(f"{t},{m},0.5\n" for t in ("a", "b") for m in MODELS))
    result = RUNNER.invoke(app, ["evaluate", "--scores", _rank_output(tmp_path, ".json"), "--truth", truth])
    assert result.exit_code == 2 and "--target" in result.stderr


def test_evaluate_value_column_option_and_out_file(tmp_path):
    truth = _truth(tmp_path, "model,accuracy\n" + "".join(f"{m},{v}\n" for m, v in TRUTH.items()))
    scores = _rank_output(tmp_path, ".json")
    refused = RUNNER.invoke(app, ["evaluate", "--scores", scores, "--truth", truth])
    assert refused.exit_code == 2 and "--truth-column" in refused.stderr
    out = tmp_path / "evaluation.csv"
    shown = RUNNER.invoke(app, ["evaluate", "--scores", scores, "--truth", truth, "--truth-column", "accuracy",
                                "--out", str(out), "--resamples", "50"])
    assert shown.exit_code == 0, shown.output
    table = pd.read_csv(out)
    assert set(table.metric) == {"emms", "leep"} and "| statistic |" in shown.stdout


def test_evaluate_with_too_few_models_says_so(tmp_path):
    truth = _truth(tmp_path, "model,value\n" + "".join(f"{m},{v}\n" for m, v in TRUTH.items()))
    three = RUNNER.invoke(app, ["evaluate", "--scores", _rank_output(tmp_path, ".json", MODELS[:3]), "--truth", truth,
                                "--json", "--resamples", "50"])
    assert three.exit_code == 0, three.output
    doc = json.loads(three.stdout)
    emms_rows = {r["statistic"]: r for r in doc["results"] if r["metric"] == "emms"}
    assert emms_rows["weighted_tau_symmetric"]["value"] is not None
    assert emms_rows["weighted_tau_symmetric"]["ci_low"] is None  # not [-1.00, -1.00]
    leep_rows = [r for r in doc["results"] if r["metric"] == "leep"]
    assert leep_rows == [] and any(n.startswith("leep: scored 1 of the 3 models") for n in doc["notes"])
    two = RUNNER.invoke(app, ["evaluate", "--scores", _rank_output(tmp_path, ".json", MODELS[:4]), "--truth", truth,
                              "--json", "--resamples", "50"])
    rows = {(r["metric"], r["statistic"]): r for r in json.loads(two.stdout)["results"]}
    # LEEP scored 2 models there: no correlation (it would be -1 by construction), top-1 hit still defined
    assert rows["leep", "pearson"]["n_models"] == 2 and rows["leep", "pearson"]["value"] is None
    assert rows["leep", "top1_hit"]["value"] == 0.0


def test_evaluate_reads_what_select_writes(tmp_path):
    # the shape of emms.selection.Selection.to_dict(): frozen scores and the race's predictions per model
    doc = {"recommended": MODELS[0], "results": [
        {"model": m, "rank": i + 1, "predicted": v, "low": v - 0.01, "high": v + 0.01, "status": "finished",
         "frozen:emms": v * 2, "frozen:params": float(i)} for i, (m, v) in enumerate(TRUTH.items())]}
    (tmp_path / "selection.json").write_text(json.dumps(doc))
    truth = _truth(tmp_path, "model,value\n" + "".join(f"{m},{v}\n" for m, v in TRUTH.items()))
    result = RUNNER.invoke(app, ["evaluate", "--scores", str(tmp_path / "selection.json"), "--truth", truth,
                                 "--json", "--resamples", "50"])
    assert result.exit_code == 0, result.output
    rows = {(r["metric"], r["statistic"]): r["value"] for r in json.loads(result.stdout)["results"]}
    assert rows["race_predicted", "kendall_tau"] == pytest.approx(1.0) and rows["emms", "kendall_tau"] == pytest.approx(1.0)
    assert rows["params", "kendall_tau"] == pytest.approx(stats.kendalltau(range(6), list(TRUTH.values())).statistic)


def test_a_closed_pipe_stops_quietly(tmp_path):
    import subprocess
    import sys

    truth = _truth(tmp_path, "model,value\n" + "".join(f"{m},{v}\n" for m, v in TRUTH.items()))
    command = [sys.executable, "-c", "from emms.cli import main; main()", "evaluate", "--scores",
               _rank_output(tmp_path, ".json"), "--truth", truth, "--resamples", "50"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # the reader is gone before the first line, as `| head -0` would be
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and stderr == "", stderr
