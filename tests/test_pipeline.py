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
        assert corr.loc[metric, "n_models"] == len(rows)
        if len(rows) < 3:  # LEEP scored 2 models: too few for a rank correlation
            assert np.isnan(corr.loc[metric, ["weighted_tau", "kendall_tau", "pearson"]].astype(float)).all()
            continue
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
    with pytest.raises(InputError, match="metric_options: knn does not take kk"):
        emms.rank(DATA, MODELS[:1], metrics=["knn"], metric_options={"knn": {"kk": 1}}, cache=cache)
    with pytest.raises(InputError, match="metric_options: 'emms' is not one of the metrics"):
        emms.rank(DATA, MODELS[:1], metrics=["logme"], metric_options={"emms": {"score": "gcv"}}, cache=cache)


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
    doc = json.loads(result.stdout)
    records = doc["results"]
    assert {r["metric"] for r in records} == {"emms", "logme"}
    assert all({"model", "metric", "score", "rank", "seconds"} <= set(r) for r in records)
    assert all("weights" in r for r in records if r["metric"] == "emms")
    for metric in ("emms", "logme"):
        rows = sorted((r for r in records if r["metric"] == metric), key=lambda r: r["rank"])
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    assert doc["answer"]["recommended"] == min((r for r in records if r["metric"] == "emms"),
                                               key=lambda r: r["rank"])["model"]
    written = json.loads(out.read_text())
    assert {k: v for k, v in written.items() if k != "timings"} == {k: v for k, v in doc.items() if k != "timings"}
    assert "data:image/png;base64," in report.read_text() and "id='recommended'" in report.read_text()


def test_cli_rank_piped_prints_the_answer_and_whole_tables(cache, tmp_path):
    # CliRunner's stdout is not a terminal: the table is Markdown with every column, however many
    csv_out = tmp_path / "res.csv"
    result = runner.invoke(app, _rank_args(cache, "--out", str(csv_out), "--resamples", "4"))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Recommended: builtin:") and "of 4 random halves" in result.stdout
    header = next(line for line in lines if line.startswith("| model"))
    assert header == "| model | best in resamples | emms | logme |"
    assert csv_out.read_text().splitlines()[0].startswith("model,metric,score,rank,seconds")
    assert "extract features: builtin:" not in result.stdout  # progress goes to stderr


def test_cli_rank_with_truth(cache, tmp_path):
    # bare names, a target column and another value column, as benchmarks/data/finetune_truth.csv has
    truth = tmp_path / "truth.csv"
    names = [m.removeprefix("builtin:") for m in MODELS]
    truth.write_text("target,model,accuracy\n" + "".join(f"{t},{m},{v}\n" for t in ("a", "b")
                                                         for m, v in zip(names + ["not_ranked"], (0.8, 0.9, 0.85, 1))))
    args = ["rank", "--data", DATA, "--task", "classification", "--models", ",".join(MODELS),
            "--encoders", "minilm-l6,paraphrase-minilm-l3", "--metrics", "emms,logme", "--max-samples", "150",
            "--cache", str(cache), "--json", "--truth", str(truth), "--truth-column", "accuracy", "--resamples", "0"]
    result = runner.invoke(app, [*args, "--target", "b"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    corr = {c["metric"]: c for c in doc["correlations"]}
    for metric in ("emms", "logme"):
        rows = {r["model"]: r["score"] for r in doc["results"] if r["metric"] == metric}
        s, t = np.array([rows[m] for m in MODELS]), np.array([0.8, 0.9, 0.85])
        assert corr[metric]["n_models"] == 3
        assert corr[metric]["kendall_tau"] == pytest.approx(stats.kendalltau(s, t).statistic)
        assert corr[metric]["weighted_tau"] == pytest.approx(stats.weightedtau(s, t).statistic)
    assert doc["answer"]["truth"]["best"] == MODELS[1]
    assert "truth rows for models not ranked are ignored: not_ranked" in doc["notes"]
    two_targets = runner.invoke(app, args)
    assert two_targets.exit_code == 2 and "--target" in two_targets.stderr


def test_cli_truth_is_checked_before_any_extraction(tmp_path, monkeypatch):
    import emms.pipeline.ranking

    def no_extraction(*args, **kwargs):
        raise AssertionError("features were extracted before the truth was checked")

    monkeypatch.setattr(emms.pipeline.ranking, "extract_all", no_extraction)
    truth = tmp_path / "truth.csv"
    truth.write_text("model,value\nonet_mtcnn,0.8\n")
    result = runner.invoke(app, _rank_args(tmp_path / "c", "--truth", str(truth)))
    assert result.exit_code == 2 and "no fine-tuned value for model(s) builtin:ocrvgg_easyocr" in result.stderr


@pytest.mark.parametrize("args, pattern", [
    (["--models", "nosuch:model"], r"spec|scheme"),
    (["--models", "builtin:no_such_backbone"], r"backbone|builtin"),
    (["--data", "/no/such/dir/manifest.csv"], r"not found|no such|does not exist"),
    (["--task", "captioning"], r"task"),
    (["--encoders", "paper"], r"hub|install|offline|download"),
    (["--metrics", "nope"], r"metric"),
    (["--metrics", "emms,knn", "--option", "knn.kk=3"], r"--option: knn does not take kk"),
    (["--option", "logme.k"], r"--option: expected METRIC.NAME=VALUE"),
    (["--out", "result.txt"], r"--out: expected a file name ending in .json or .csv"),
    (["--resamples", "-1"], r"resamples"),
])
def test_cli_rank_errors_are_one_line_and_leave_no_file(cache, tmp_path, args, pattern):
    out, report = tmp_path / "res.json", tmp_path / "rep.html"
    base = _rank_args(cache, "--out", str(out), "--report", str(report))
    for i in range(0, len(args), 2):  # override the option in the base arguments (or add it)
        if args[i] in base:
            base[base.index(args[i]) + 1] = args[i + 1]
        else:
            base += args[i:i + 2]
    result = runner.invoke(app, base)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    err_lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in err_lines if line.startswith("error:")]
    assert len(errors) == 1 and err_lines[-1] == errors[0], result.stderr  # progress lines may come before
    assert re.search(pattern, errors[0], re.IGNORECASE), errors[0]
    assert not out.exists() and not report.exists()


def test_cli_truth_file_errors(cache, tmp_path):
    bad = tmp_path / "truth.csv"
    bad.write_text("name,acc\nx,1\n")
    result = runner.invoke(app, _rank_args(cache, "--truth", str(bad)))
    assert result.exit_code == 2 and "--truth" in result.stderr and "--truth-column" in result.stderr


def test_a_metric_that_cannot_score_leaves_the_others(cache):
    # kNN with k above N - 1 cannot score; emms and logme still do, and knn is a column of "—"
    result = emms.rank(DATA, MODELS[:2], task="classification", metrics=["emms", "knn", "logme"],
                       metric_options={"knn": {"k": 500}}, encoders=["minilm-l6", "paraphrase-minilm-l3"],
                       max_samples=150, cache=cache, resamples=0)
    assert result.metrics == ["emms", "logme"]
    assert result.wide()["knn"].isna().all() and list(result.wide().columns) == ["emms", "knn", "logme"]
    assert [n for n in result.notes if n.startswith("knn:")] == [
        "knn: cannot score any model (k: expected an integer between 1 and n_samples - 1 = 149, got 500)"]
    piped = runner.invoke(app, _rank_args(cache, "--metrics", "emms,knn", "--option", "knn.k=500", "--resamples", "0"))
    assert piped.exit_code == 0, piped.output
    row = next(line for line in piped.stdout.splitlines() if line.startswith("| builtin:onet_mtcnn"))
    assert row.endswith("| — |") and "note: knn: cannot score any model" in piped.stdout


def test_resampling_is_seeded_and_counts_wins(cache):
    kwargs = dict(task="classification", metrics=["logme"], max_samples=150, cache=cache, resamples=5)
    first = emms.rank(DATA, MODELS, seed=1, **kwargs)
    again = emms.rank(DATA, MODELS, seed=1, **kwargs)
    pd_equal = first.resampled.equals(again.resampled)
    assert pd_equal and len(first.resampled) == 5 * len(MODELS)
    shares = first.answer()["p_best"]
    assert sum(shares.values()) == pytest.approx(1.0)
    wins = first.resampled.loc[first.resampled.groupby("resample")["score"].idxmax(), "model"].value_counts()
    assert all(shares[m] == pytest.approx(wins.get(m, 0) / 5) for m in MODELS)


def test_interrupt_says_how_to_resume(cache, monkeypatch):
    import emms.compute.extract
    import emms.pipeline.ranking

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(emms.pipeline.ranking, "extract_all", interrupted)
    monkeypatch.setattr(emms.compute.extract, "extract_layer_choice", interrupted)
    result = runner.invoke(app, _rank_args(cache))
    assert result.exit_code == 130
    assert result.stderr.strip().splitlines()[-1] == ("interrupted — rerun the same command to resume "
                                                      "(finished work is cached)")


def test_emms_on_a_gpu_device_goes_through_the_torch_backend(monkeypatch):
    # No GPU here: the backend call is observed and run on CPU-torch; the scores must equal numpy's.
    from emms.compute import backend
    from emms.pipeline import scoring
    from emms.metrics import get_metric

    rng = np.random.default_rng(0)
    features = {"a": rng.normal(size=(80, 6)), "b": rng.normal(size=(80, 9))}
    f_labels = [features["a"] @ rng.normal(size=(6, 5)) + rng.normal(size=(80, 5)), rng.normal(size=(80, 5))]
    calls = []
    real = backend.score_on_device

    def observed(feats, z, metric, *, device, **options):
        calls.append(device)
        return real(feats, z, metric, device="cpu", **options)

    monkeypatch.setattr(backend, "score_on_device", observed)
    info = get_metric("emms")
    on_gpu = scoring.score_metric(info, features, f_labels, {}, {}, ["e1", "e2"], device="cuda")
    on_numpy = scoring.score_metric(info, features, f_labels, {}, {}, ["e1", "e2"], device="cpu")
    assert calls == ["cuda", "cuda"]
    for gpu_row, numpy_row in zip(on_gpu, on_numpy):
        assert gpu_row["score"] == pytest.approx(numpy_row["score"], rel=1e-10)
        assert gpu_row["weights"] == pytest.approx(numpy_row["weights"], abs=1e-8)
    official = scoring.score_metric(info, features, f_labels, {}, {"solver": "official"}, ["e1", "e2"], device="cuda")
    assert len(calls) == 2 and len(official) == 2  # the official solver stays on numpy


def test_features_are_extracted_once_whatever_the_metrics(tmp_path):
    # `emms extract` prepares what rank reads; LogME (no source probabilities) and LEEP (needs them)
    # then read the same entry: nothing is extracted again
    from emms.compute.store import Store

    args = ["--data", "builtin:digits", "--models", "builtin:onet_mtcnn", "--max-samples", "40", "--cache", str(tmp_path)]
    assert runner.invoke(app, ["extract", *args]).exit_code == 0
    entries = {e["key"]: e["created"] for e in Store(tmp_path).entries()}
    assert len(entries) == 5 + 1  # O-Net's 5 layers (rank's default scores the best) and its source probabilities
    for metric in ("logme", "leep"):
        result = runner.invoke(app, ["rank", *args, "--metrics", metric, "--resamples", "0"])
        assert result.exit_code == 0, result.output
        assert {e["key"]: e["created"] for e in Store(tmp_path).entries()} == entries


def test_warnings_about_the_encoders_own_columns_are_not_shown():
    # a text encoder can give embedding columns that are constant over a task's few class names (the
    # demo saw 2 of MiniLM's 384): a property of the encoder, not of the user's data, so rank's own
    # F-labels do not warn about it; F-labels a user passes to the estimator still do
    import warnings

    from emms.errors import EmmsWarning
    from emms.metrics import get_metric
    from emms.pipeline.scoring import ScoringJob

    rng = np.random.default_rng(0)
    features = {"a": rng.normal(size=(60, 5)), "b": rng.normal(size=(60, 7))}
    z = rng.normal(size=(60, 6))
    z[:, 2] = 0.5  # a constant column
    for own, expected in ((True, 0), (False, 1)):
        job = ScoringJob(get_metric("emms"), features, [z, rng.normal(size=(60, 6))], {}, {}, ["e1", "e2"], "cpu",
                          own_flabels=own)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", EmmsWarning)
            rows = job.run([])
        assert len(rows) == 2
        shown = {str(w.message) for w in caught if str(w.message).startswith("f_labels[0]: ignored 1 constant column")}
        assert len(shown) == expected, [str(w.message) for w in caught]


def test_demo_compares_with_the_shipped_fine_tuned_truth(monkeypatch, tmp_path):
    # the package's copy equals the fm10 rows of the committed benchmark truth, and the demo passes it to rank
    import pandas as pd

    import emms.pipeline
    from emms.cli.rank import DEMO_MODELS, demo_truth

    from pathlib import Path

    committed = pd.read_csv(Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "finetune_truth.csv")
    fm10 = committed[(committed.target == "fm10") & committed.model.isin(DEMO_MODELS)]
    assert demo_truth() == pytest.approx(dict(zip(fm10.model, fm10.value))) and len(fm10) == len(DEMO_MODELS)
    seen = {}

    def capture(data, models, **kwargs):
        seen.update(kwargs, models=models)
        raise InputError("stop here")

    monkeypatch.setattr(emms.pipeline, "rank", capture)
    result = runner.invoke(app, ["demo", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "stop here" in result.stderr
    assert emms.evaluate.summary.match_truth(seen["truth"], seen["models"]) == pytest.approx(
        {f"builtin:{m}": v for m, v in zip(fm10.model, fm10.value)})


def test_a_metric_that_cannot_score_on_dask_leaves_the_others(tmp_path):
    rng = np.random.default_rng(0)
    models = []
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(20, 6)).astype(np.float32))
        models.append(f"file:{tmp_path / name}.npy")
    result = emms.rank("builtin:digits", models, metrics=["logme", "knn"], metric_options={"knn": {"k": 50}},
                       max_samples=20, cache=tmp_path / "c", scheduler="synchronous", resamples=2)
    assert result.metrics == ["logme"] and result.wide()["knn"].isna().all()
    assert result.notes == ["knn: cannot score any model (k: expected an integer between 1 and n_samples - 1 = 19, got 50)"]


def test_warnings_under_the_api_point_at_the_call_once(tmp_path):
    # a metric's warning for every model of the pool is shown once, at the user's call of emms.rank
    import warnings

    from emms.errors import EmmsWarning

    rng = np.random.default_rng(0)
    models = []
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(20, 30)).astype(np.float32))
        models.append(f"file:{tmp_path / name}.npy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        emms.rank("builtin:digits", models, metrics=["hscore"], max_samples=20, cache=tmp_path / "c", resamples=3)
    shown = [w for w in caught if issubclass(w.category, EmmsWarning)]
    assert [str(w.message)[:7] for w in shown] == ["hscore:"]
    assert shown[0].filename == __file__


def test_an_image_folder_of_mixed_modes_ranks_without_warnings(tmp_path):
    # grayscale and RGB files side by side: PIL hands out read-only arrays, which torch warned about
    import warnings

    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            pixels = (rng.random((28, 28)) * 255).astype(np.uint8)
            image = Image.fromarray(pixels) if i % 2 else Image.fromarray(np.stack([pixels] * 3, -1))
            image.save(tmp_path / "data" / label / f"{i}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = emms.rank(tmp_path / "data", ["builtin:onet_mtcnn"], metrics=["logme"], cache=tmp_path / "c",
                           resamples=0)
    assert result.meta["n_samples"] == 8
    assert not [str(w.message) for w in caught if "not writable" in str(w.message)]
