"""``emms score`` and ``emms metrics``: dispatch to the API, JSON output, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from emms import EMMS, score as api_score
from emms.cli import app
from emms.metrics import available_metrics, registry

runner = CliRunner()


@pytest.fixture()
def arrays(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6))
    z1 = x @ rng.normal(size=(6, 4)) + rng.normal(size=(60, 4))
    z2 = rng.normal(size=(60, 3))
    labels = np.repeat(np.arange(3), 20)
    paths = {"x": tmp_path / "x.npy", "z1": tmp_path / "z1.npy", "z2": tmp_path / "z2.npy",
             "y": tmp_path / "y.npy", "npz": tmp_path / "bundle.npz"}
    np.save(paths["x"], x)
    np.save(paths["z1"], z1)
    np.save(paths["z2"], z2)
    np.save(paths["y"], labels)
    np.savez(paths["npz"], features=x, stacked=np.stack([z1[:, :3], z2], axis=2))
    return {"x": x, "z1": z1, "z2": z2, "y": labels, **{f"path_{k}": str(v) for k, v in paths.items()}}


def _run(*args):
    return runner.invoke(app, ["score", *args])


def _json(result):
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_output_matches_the_api(arrays):
    out = _json(_run("--features", arrays["path_x"], "--f-labels", arrays["path_z1"], "--f-labels",
                     arrays["path_z2"], "--json"))
    model = EMMS().fit(arrays["x"], [arrays["z1"], arrays["z2"]])
    assert out["metric"] == "emms" and out["score"] == model.score_
    assert out["weights"] == pytest.approx(model.weights_.tolist())
    assert (out["n_samples"], out["n_features"]) == (60, 6)
    assert out["seconds"] >= 0 and out["solver"] == "exact" and out["score_kind"] == "gcv"


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-3)])
def test_torch_backend_on_cpu_matches_numpy(arrays, dtype, rtol):
    numpy_run = _json(_run("--features", arrays["path_x"], "--f-labels", f"{arrays['path_z1']},{arrays['path_z2']}",
                           "--json"))
    torch_run = _json(_run("--features", arrays["path_x"], "--f-labels", f"{arrays['path_z1']},{arrays['path_z2']}",
                           "--device", "cpu", "--dtype", dtype, "--json"))
    assert torch_run["score"] == pytest.approx(numpy_run["score"], rel=rtol)
    # The weights come out of the GCV search over λ, whose stopping tolerance is ~1e-8.
    assert torch_run["weights"] == pytest.approx(numpy_run["weights"], abs=max(rtol, 1e-6))


def test_comma_separated_f_labels_npz_keys_and_options(arrays):
    repeated = _json(_run("--features", arrays["path_x"], "--f-labels", arrays["path_z1"], "--f-labels",
                          arrays["path_z2"], "--score", "in_sample", "--solver", "alternating", "--mixture", "columns",
                          "--json"))
    comma = _json(_run("--features", arrays["path_x"], "--f-labels", f"{arrays['path_z1']},{arrays['path_z2']}",
                       "--score", "in_sample", "--mixture", "columns", "--json"))
    assert comma["score"] == pytest.approx(repeated["score"], rel=1e-6)
    assert repeated["solver"] == "alternating" and repeated["n_iter"] > 1
    stacked = _json(_run("--features", f"{arrays['path_npz']}:features", "--f-labels",
                         f"{arrays['path_npz']}:stacked", "--solver", "official", "--json"))
    stack = np.stack([arrays["z1"][:, :3], arrays["z2"]], axis=2)
    assert stacked["score"] == EMMS(solver="official").fit(arrays["x"], stack).score_
    assert len(stacked["weights"]) == 2


def test_plain_text_output(arrays):
    result = _run("--features", arrays["path_x"], "--f-labels", arrays["path_z1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("emms: ") and "encoder weights t: 1.0000" in result.stdout


def _class_separation(features, labels, **options):
    """Test metric: between-class share of the variance of the first feature column."""
    x = np.asarray(features, dtype=float)[:, 0]
    means = np.array([x[labels == c].mean() for c in np.unique(labels)])
    return float(np.var(means) / np.var(x))


def _source_agreement(features, labels, *, source_probs, **options):
    """Test metric: fraction of rows whose argmax source class equals the label."""
    return float(np.mean(np.argmax(source_probs, axis=1) == labels))


def _pool_metric(features_by_model, labels, **options):
    """Test metric: a pool-relative score."""
    return {name: 0.0 for name in features_by_model}


@pytest.fixture()
def extra_metrics(monkeypatch):
    for name, fn, kw in (("test_separation", _class_separation, {}),
                         ("test_source", _source_agreement, {"needs_source_probs": True}),
                         ("test_pool", _pool_metric, {"pool_relative": True})):
        info = registry.MetricInfo(name=name, function=fn, targets=frozenset({"classes"}), **kw)
        monkeypatch.setitem(registry._REGISTRY, name, info)


def test_dispatches_other_metrics_through_the_registry(arrays, extra_metrics, tmp_path):
    out = _json(_run("--features", arrays["path_x"], "--labels", arrays["path_y"], "--metric", "test_separation", "--json"))
    assert out["score"] == pytest.approx(_class_separation(arrays["x"], arrays["y"]))
    assert out["weights"] is None
    probs = np.eye(3)[(arrays["y"] + np.arange(60) % 2) % 3]
    np.save(tmp_path / "p.npy", probs)
    out = _json(_run("--features", arrays["path_x"], "--labels", arrays["path_y"], "--metric", "test_source",
                     "--source-probs", str(tmp_path / "p.npy"), "--json"))
    assert out["score"] == pytest.approx(0.5)


def test_every_registered_per_model_metric_with_class_labels_runs(arrays):
    """Over the real registry: each per-model classes-target metric gives the API's number."""
    for info in available_metrics():
        if info.pool_relative or info.needs_source_probs or info.needs_n_params or "classes" not in info.targets:
            continue
        result = _run("--features", arrays["path_x"], "--labels", arrays["path_y"], "--metric", info.name, "--json")
        out = _json(result)
        assert out["score"] == pytest.approx(api_score(arrays["x"], arrays["y"], info.name), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("args, message", [
    (["--metric", "test_pool", "--labels", "{y}"], "--metric: 'test_pool' is pool-relative"),
    (["--metric", "nope", "--labels", "{y}"], "metric: unknown metric 'nope'"),
    (["--labels", "{y}"], "--labels: metric 'emms' needs F-label embeddings"),
    (["--metric", "test_separation", "--f-labels", "{z1}"], "--f-labels: metric 'test_separation' accepts classes"),
    (["--metric", "test_separation", "--labels", "{y}", "--solver", "exact"], "--solver/--score: only apply to metric 'emms'"),
    (["--metric", "test_source", "--labels", "{y}"], "source_probs: metric 'test_source' needs"),
    ([], "--f-labels/--labels: pass exactly one of them"),
    (["--f-labels", "{z1}", "--labels", "{y}"], "--f-labels/--labels: pass exactly one of them"),
    (["--f-labels", "missing.npy"], "--f-labels: file not found"),
    (["--f-labels", "{z1}", "--solver", "fast"], "solver: expected one of exact, alternating, official"),
    (["--f-labels", "{z1}", "--score", "loo"], "score: expected one of gcv, in_sample"),
    (["--f-labels", "{z1}", "--source-probs", "{z2}"], "--source-probs: metric 'emms' does not use"),
    (["--metric", "test_separation", "--labels", "{y}", "--device", "cpu"],
     "--device: the torch backend computes metric 'emms' only"),
    (["--f-labels", "{z1}", "--dtype", "float32"], "--dtype: applies to the torch backend only"),
    (["--f-labels", "{z1}", "--device", "cpu", "--solver", "official"], "--device: the official solver runs on numpy only"),
    (["--f-labels", "{z1}", "--device", "tpu"], "device: expected 'cpu', 'cuda', 'cuda:N' or 'mps', got 'tpu'"),
    (["--f-labels", "{z1}", "--device", "cpu", "--dtype", "half"], "dtype: expected one of"),
])
def test_bad_arguments_exit_2_with_one_line(arrays, extra_metrics, args, message):
    args = [a.format(y=arrays["path_y"], z1=arrays["path_z1"], z2=arrays["path_z2"]) for a in args]
    result = _run("--features", arrays["path_x"], *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("bad, message", [
    ("mismatched N", r"f_labels[0]: expected 60 rows"),
    ("NaN", "features: contains 1 NaN or Inf"),
    ("one sample", "features: expected at least 2 samples"),
    ("non-numeric", "--features: cannot read"),
    ("1-D features", "features: expected a 2-D array"),
    ("3-D features", "features: expected a 2-D array"),
    ("constant features", "features: every column is constant"),
    ("constant F-labels", "f_labels[0]: every column is constant"),
])
def test_bad_input_arrays_exit_2_with_one_line(arrays, tmp_path, bad, message):
    x, z = arrays["x"].copy(), arrays["z1"].copy()
    if bad == "mismatched N":
        z = z[:-1]
    elif bad == "NaN":
        x[3, 2] = np.nan
    elif bad == "one sample":
        x, z = x[:1], z[:1]
    elif bad == "non-numeric":
        x = x.astype(object)
    elif bad == "1-D features":
        x = x[:, 0]
    elif bad == "3-D features":
        x = x[:, :, None]
    elif bad == "constant features":
        x = np.ones_like(x)
    elif bad == "constant F-labels":
        z = np.ones_like(z)
    np.save(tmp_path / "bad_x.npy", x, allow_pickle=True)
    np.save(tmp_path / "bad_z.npy", z)
    result = _run("--features", str(tmp_path / "bad_x.npy"), "--f-labels", str(tmp_path / "bad_z.npy"))
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_constant_feature_column_warns_and_still_scores(arrays, tmp_path):
    np.save(tmp_path / "x.npy", np.column_stack([arrays["x"], np.full(60, 5.0)]))
    result = _run("--features", str(tmp_path / "x.npy"), "--f-labels", arrays["path_z1"], "--json")
    assert result.exit_code == 0
    assert "warning: features: dropped 1 constant column" in result.stderr
    assert json.loads(result.stdout)["score"] == pytest.approx(EMMS().fit(arrays["x"], [arrays["z1"]]).score_)


def test_metrics_lists_every_registered_metric():
    result = runner.invoke(app, ["metrics", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == [m.name for m in available_metrics()]
    emms_row = next(r for r in rows if r["name"] == "emms")
    assert emms_row["targets"] == ["flabels"] and emms_row["streamable"] and not emms_row["pool_relative"]
    table = runner.invoke(app, ["metrics"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for info in available_metrics():
        assert info.name in table.stdout
