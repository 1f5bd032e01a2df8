"""End-to-end: emms.rank and `emms rank` on tiny real data with real packaged models and encoders."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

import emms
from emms.cli import app
from emms.errors import InputError, ResourceError

MODELS = ["builtin:onet_mtcnn", "builtin:ocrvgg_easyocr?image_size=32", "builtin:mnv2_imagenet?image_size=32"]
DATA = "builtin:fashion-mnist"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("emms-cache")


@pytest.fixture(scope="module")
def ranking(cache):
    return emms.rank(DATA, MODELS, task="classification", metrics=["emms", "logme", "hscore_reg", "leep"],
                     encoders=["minilm-l6", "paraphrase-minilm-l3"], max_samples=150, cache=cache)


def test_rank_table_has_every_model_and_metric(ranking):
    table = ranking.table
    assert set(table["metric"]) == {"emms", "logme", "hscore_reg", "leep"}
    for metric in ["emms", "logme", "hscore_reg"]:  # leep: see below
        assert sorted(table[table["metric"] == metric]["model"]) == sorted(MODELS)
    assert np.isfinite(table["score"]).all()


def test_ranks_follow_scores(ranking):
    for metric, rows in ranking.table.groupby("metric"):
        ordered = rows.sort_values("rank")
        assert list(ordered["rank"]) == list(range(1, len(rows) + 1))
        assert np.all(np.diff(ordered["score"].to_numpy()) <= 0), metric
        assert ranking.best(metric) == ordered.iloc[0]["model"]


def test_emms_rows_carry_encoder_weights_on_the_simplex(ranking):
    rows = ranking.table[ranking.table["metric"] == "emms"]
    for weights in rows["weights"]:
        assert list(weights) == ["minilm-l6", "paraphrase-minilm-l3"]
        values = np.array(list(weights.values()))
        assert np.all(values >= -1e-12) and values.sum() == pytest.approx(1.0)
    assert ranking.table[ranking.table["metric"] != "emms"]["weights"].isna().all()


def test_source_probability_metric_uses_the_models_with_a_source_head(ranking):
    # the EasyOCR recogniser has no classification head: LEEP scores the others and says so
    leep_models = set(ranking.table[ranking.table["metric"] == "leep"]["model"])
    assert leep_models == {MODELS[0], MODELS[2]}
    assert any(note.startswith("leep:") and "ocrvgg" in note for note in ranking.notes)


def test_exports(ranking, tmp_path):
    doc = json.loads(ranking.to_json(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == doc
    assert {"model", "metric", "score", "rank", "seconds"} <= set(doc["results"][0])
    assert doc["meta"]["task"] == "classification" and doc["meta"]["n_samples"] == 150
    csv_text = ranking.to_csv()
    assert csv_text.splitlines()[0].startswith("model,metric,score,rank,seconds")
    assert "weight:minilm-l6" in csv_text.splitlines()[0]
    html_text = ranking.to_html(tmp_path / "r.html")
    assert html_text.count("data:image/png;base64,") >= 3  # scores, EMMS weights, timings
    assert "EMMS foundation-encoder weights" in html_text


def test_truth_correlations_match_scipy(ranking):
    truth = {MODELS[0]: 0.85, MODELS[1]: 0.88, MODELS[2]: 0.90}
    corr = emms.pipeline.correlations_table(ranking.table, truth).set_index("metric")
    for metric, rows in ranking.table.groupby("metric"):
        s = rows["score"].to_numpy(float)
        t = np.array([truth[m] for m in rows["model"]])
        assert corr.loc[metric, "weighted_tau"] == pytest.approx(stats.weightedtau(s, t).statistic)
        assert corr.loc[metric, "weighted_tau_truth"] == pytest.approx(stats.weightedtau(t, s, rank=None).statistic)
        assert corr.loc[metric, "kendall_tau"] == pytest.approx(stats.kendalltau(s, t).statistic)
        assert corr.loc[metric, "pearson"] == pytest.approx(stats.pearsonr(s, t).statistic)
        assert corr.loc[metric, "top1_hit"] == (rows["model"].iloc[int(np.argmax(s))] == MODELS[2])


def test_unknown_metric_and_bad_truth_are_input_errors(cache):
    with pytest.raises(InputError, match="metric"):
        emms.rank(DATA, MODELS[:1], metrics=["no-such-metric"], cache=cache)
    with pytest.raises(InputError, match="truth"):
        emms.rank(DATA, MODELS[:2], metrics=["logme"], max_samples=150, cache=cache, truth={MODELS[0]: 1.0})


def test_task_that_does_not_match_the_data(cache):
    with pytest.raises(InputError, match="task"):
        emms.rank(DATA, MODELS[:1], task="captioning", metrics=["emms"], max_samples=150, cache=cache)


def test_paper_encoders_need_hub_access(cache):
    with pytest.raises(ResourceError):
        emms.rank(DATA, MODELS[:1], metrics=["emms"], encoders="paper", max_samples=150, cache=cache)


# --- the CLI -------------------------------------------------------------------------------------

runner = CliRunner()


def _rank_args(cache, *extra):
    return ["rank", "--data", DATA, "--task", "classification", "--models", ",".join(MODELS[:2]),
            "--encoders", "minilm-l6,paraphrase-minilm-l3", "--metrics", "emms,logme", "--max-samples", "150",
            "--cache", str(cache), *extra]


def test_cli_rank_json_and_files(cache, tmp_path):
    out, report = tmp_path / "res.json", tmp_path / "rep.html"
    result = runner.invoke(app, _rank_args(cache, "--json", "--out", str(out), "--report", str(report)))
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert {r["metric"] for r in records} == {"emms", "logme"}
    assert all({"model", "metric", "score", "rank", "seconds"} <= set(r) for r in records)
    assert all("weights" in r for r in records if r["metric"] == "emms")
    for metric in ("emms", "logme"):
        rows = sorted((r for r in records if r["metric"] == metric), key=lambda r: r["rank"])
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert json.loads(out.read_text())["results"] == records
    assert "data:image/png;base64," in report.read_text()


def test_cli_rank_with_truth(cache, tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text(f"model,value\n{MODELS[0]},0.8\n{MODELS[1]},0.9\n")
    result = runner.invoke(app, _rank_args(cache, "--json", "--truth", str(truth)))
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    corr = {c["metric"]: c for c in doc["correlations"]}
    for metric in ("emms", "logme"):
        rows = {r["model"]: r["score"] for r in doc["results"] if r["metric"] == metric}
        s, t = np.array([rows[MODELS[0]], rows[MODELS[1]]]), np.array([0.8, 0.9])
        assert corr[metric]["kendall_tau"] == pytest.approx(1.0 if s[1] > s[0] else -1.0)
        assert corr[metric]["weighted_tau"] == pytest.approx(stats.weightedtau(s, t).statistic)


@pytest.mark.parametrize("args, pattern", [
    (["--models", "nosuch:model"], r"spec|scheme"),
    (["--models", "builtin:no_such_backbone"], r"backbone|builtin"),
    (["--data", "/no/such/dir/manifest.csv"], r"not found|no such|does not exist"),
    (["--task", "captioning"], r"task"),
    (["--encoders", "paper"], r"hub|install|offline|download"),
    (["--metrics", "nope"], r"metric"),
])
def test_cli_rank_errors_are_one_line_and_leave_no_file(cache, tmp_path, args, pattern):
    out, report = tmp_path / "res.json", tmp_path / "rep.html"
    base = _rank_args(cache, "--out", str(out), "--report", str(report))
    for i in range(0, len(args), 2):  # override the option in the base arguments
        base[base.index(args[i]) + 1] = args[i + 1]
    result = runner.invoke(app, base)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(err_lines) == 1 and err_lines[0].startswith("error:"), result.stderr
    assert re.search(pattern, err_lines[0], re.IGNORECASE), err_lines[0]
    assert not out.exists() and not report.exists()


def test_cli_truth_file_errors(cache, tmp_path):
    bad = tmp_path / "truth.csv"
    bad.write_text("name,acc\nx,1\n")
    result = runner.invoke(app, _rank_args(cache, "--truth", str(bad)))
    assert result.exit_code == 2 and "--truth" in result.stderr


def test_emms_on_a_gpu_device_goes_through_the_torch_backend(monkeypatch):
    # No GPU here: the backend call is observed and run on CPU-torch; the scores must equal numpy's.
    from emms import backend, pipeline
    from emms.metrics import get_metric

    rng = np.random.default_rng(0)
    features = {"a": rng.normal(size=(80, 6)), "b": rng.normal(size=(80, 9))}
    f_labels = [features["a"] @ rng.normal(size=(6, 5)) + rng.normal(size=(80, 5)), rng.normal(size=(80, 5))]
    calls = []
    real = backend.emms_fit_torch

    def observed(feats, z, *, device, **options):
        calls.append(device)
        return real(feats, z, device="cpu", **options)

    monkeypatch.setattr(backend, "emms_fit_torch", observed)
    info = get_metric("emms")
    on_gpu = pipeline._score_metric(info, features, f_labels, {}, {}, ["e1", "e2"], device="cuda")
    on_numpy = pipeline._score_metric(info, features, f_labels, {}, {}, ["e1", "e2"], device="cpu")
    assert calls == ["cuda", "cuda"]
    for gpu_row, numpy_row in zip(on_gpu, on_numpy):
        assert gpu_row["score"] == pytest.approx(numpy_row["score"], rel=1e-10)
    official = pipeline._score_metric(info, features, f_labels, {}, {"solver": "official"}, ["e1", "e2"], device="cuda")
    assert len(calls) == 2 and len(official) == 2  # the official solver stays on numpy
