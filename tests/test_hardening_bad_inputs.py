"""Bad input, everywhere: each kind through the Python API and through the CLI.

API: an :class:`emms.errors.InputError` (or ResourceError) whose message names the argument.
CLI: exit status 2, exactly one ``error:`` line on stderr naming the argument, no traceback, nothing
on stdout and no (partial) output file. Inputs that are accepted on purpose (labels not 0..C-1,
N <= D, encoder widths that differ) are tested to give the documented result instead.
The table of kinds is ``docs/robustness.md``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import emms
from emms.cli import app
from emms.errors import EmmsWarning, InputError, ResourceError
from emms.compute.store import Store

RUNNER = CliRunner()
N, D = 30, 5


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D))
    y = np.arange(N) % 3
    x[np.arange(N), y] += 2.0
    z = rng.normal(size=(N, 4)) + y[:, None]
    probs = rng.dirichlet(np.ones(4), size=N)
    return {"x": x, "y": y, "z": z, "probs": probs, "rng": rng}


@pytest.fixture()
def files(tmp_path, arrays):
    """Write named arrays as .npy files in tmp_path; returns the path of each as a str."""
    def save(**named):
        out = {}
        for name, value in named.items():
            path = tmp_path / f"{name}.npy"
            np.save(path, value, allow_pickle=value.dtype == object)
            out[name] = str(path)
        return out
    return save


def cli_error(args: list[str], *words: str, progress_on_stdout: bool = False) -> str:
    """Run the CLI; assert exit 2, one ``error:`` line on stderr containing ``words``, nothing else.

    ``progress_on_stdout``: ``emms extract`` draws its progress bars on stdout, so a failure after
    some work leaves a bar there (but never a result).
    """
    result = RUNNER.invoke(app, args)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert re.match(r"error: [\w\-'\[\]]+", errors[0]), errors[0]  # starts with the argument's name
    for word in words:
        assert word in errors[0], (word, errors[0])
    stdout = result.stdout.strip()
    assert stdout == "" or (progress_on_stdout and "━" in stdout and "{" not in stdout), result.stdout
    return errors[0]


def cli_ok(args: list[str]):
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "error:" not in result.stderr and "Traceback" not in result.output
    return result


# --------------------------------------------------------------------------------------------- arrays
def _with(a, index, value):
    a = a.astype(float, copy=True)
    a[index] = value
    return a


ARRAY_CASES = {
    # kind: (features, target, metric, argument named, words)
    "NaN in features": (lambda a: _with(a["x"], (3, 1), np.nan), lambda a: a["y"], "logme", "features", "NaN"),
    "Inf in F-labels": (lambda a: a["x"], lambda a: [_with(a["z"], (0, 0), np.inf)], "emms", "f_labels[0]", "Inf"),
    "N mismatch": (lambda a: a["x"], lambda a: a["y"][:-3], "hscore", "target", "expected 30 labels"),
    "one class": (lambda a: a["x"], lambda a: np.ones(N, dtype=int), "gbc", "target", "at least 2 distinct classes"),
    "one sample": (lambda a: a["x"][:1], lambda a: a["y"][:1], "transrate", "features", "at least 2 samples"),
    "every column constant": (lambda a: np.full((N, D), 4.0), lambda a: [a["z"]], "emms", "features",
                              "every column is constant"),
    "empty array": (lambda a: np.zeros((0, D)), lambda a: a["y"][:0], "logme", "features", "non-empty"),
    "1-D features": (lambda a: a["x"][:, 0], lambda a: a["y"], "sfda", "features", "2-D"),
    "NaN in class labels": (lambda a: a["x"], lambda a: _with(a["y"], 4, np.nan), "hscore", "target", "NaN"),
    "NaN in a real target": (lambda a: a["x"], lambda a: _with(a["rng"].normal(size=N), 0, np.nan), "logme",
                             "target", "NaN"),
    "target kind the metric does not accept": (lambda a: a["x"], lambda a: a["rng"].normal(size=N), "hscore",
                                               "target", "accepts ['classes'] targets, got 'real'"),
    "F-label rows differ from features": (lambda a: a["x"], lambda a: [a["z"][:-1]], "emms", "f_labels", "rows"),
}


@pytest.mark.parametrize("kind", list(ARRAY_CASES))
def test_bad_arrays_api(kind, arrays):
    features, target, metric, argument, words = ARRAY_CASES[kind]
    with pytest.raises(InputError, match=re.escape(argument)) as info:
        emms.score(features(arrays), target(arrays), metric)
    assert words in str(info.value)


@pytest.mark.parametrize("kind", list(ARRAY_CASES))
def test_bad_arrays_cli(kind, arrays, files):
    features, target, metric, argument, words = ARRAY_CASES[kind]
    t = target(arrays)
    paths = files(features=features(arrays), target=t[0] if isinstance(t, list) else t)
    option = "--f-labels" if isinstance(t, list) else "--labels"
    line = cli_error(["score", "--features", paths["features"], option, paths["target"], "--metric", metric], words)
    assert argument.split("[")[0] in line


def test_object_dtype(arrays, files, tmp_path):
    as_objects = np.array(arrays["x"].tolist(), dtype=object)
    with pytest.raises(InputError, match="features: expected a numeric array, got dtype object"):
        emms.score(as_objects, arrays["y"], "logme")
    paths = files(features=as_objects, target=arrays["y"])
    # the CLI never unpickles: an object array (which needs pickle) is refused, not loaded
    cli_error(["score", "--features", paths["features"], "--labels", paths["target"], "--metric", "logme"],
              "--features", "numeric numpy array")


def test_logits_instead_of_probabilities(arrays, files):
    logits = arrays["rng"].normal(size=(N, 4))
    with pytest.raises(InputError, match=r"source_probs: .*softmax\(logits\)"):
        emms.score(arrays["x"], arrays["y"], "leep", source_probs=logits)
    paths = files(features=arrays["x"], target=arrays["y"], probs=logits)
    cli_error(["score", "--features", paths["features"], "--labels", paths["target"], "--metric", "leep",
               "--source-probs", paths["probs"]], "source_probs", "softmax(logits)")


def test_unknown_metric(arrays, files):
    with pytest.raises(InputError, match="metric: unknown metric 'logmee'; known metrics: .*logme"):
        emms.score(arrays["x"], arrays["y"], "logmee")
    paths = files(features=arrays["x"], target=arrays["y"])
    cli_error(["score", "--features", paths["features"], "--labels", paths["target"], "--metric", "logmee"],
              "metric", "known metrics")


def test_missing_and_ambiguous_files(arrays, tmp_path):
    with pytest.raises(InputError, match="data: .* does not exist"):
        emms.rank(str(tmp_path / "absent.csv"), ["builtin:onet_mtcnn"], cache=tmp_path / "c")
    cli_error(["score", "--features", str(tmp_path / "absent.npy"), "--labels", str(tmp_path / "y.npy"),
               "--metric", "logme"], "--features", "file not found")
    np.savez(tmp_path / "two.npz", a=arrays["x"], b=arrays["x"])
    np.save(tmp_path / "y.npy", arrays["y"])
    cli_error(["score", "--features", str(tmp_path / "two.npz"), "--labels", str(tmp_path / "y.npy"), "--metric", "logme"],
              "--features", "holds 2 arrays")
    (tmp_path / "garbage.npy").write_bytes(b"not a numpy file at all")
    cli_error(["score", "--features", str(tmp_path / "garbage.npy"), "--labels", str(tmp_path / "y.npy"), "--metric", "logme"],
              "--features", "cannot read")


# --------------------------------------------------------------------- accepted on purpose
def test_labels_not_0_to_c_minus_1_are_remapped(arrays, files):
    x, y = arrays["x"], arrays["y"]
    expected = emms.score(x, y, "logme")
    for relabelled in (y * 5 + 3, y - 10, np.array(["cat", "dog", "eel"])[y]):
        assert emms.score(x, relabelled, "logme") == pytest.approx(expected, rel=1e-12)
    paths = files(features=x, target=y * 5 + 3)
    out = cli_ok(["score", "--features", paths["features"], "--labels", paths["target"], "--metric", "logme", "--json"])
    assert json.loads(out.stdout)["score"] == pytest.approx(expected, rel=1e-12)


def test_n_at_most_d_warns_but_scores(arrays, files):
    rng = arrays["rng"]
    x, y = rng.normal(size=(12, 40)), np.arange(12) % 3
    with pytest.warns(EmmsWarning, match="n_samples \\(12\\) <= n_features \\(40\\)"):
        value = emms.score(x, y, "hscore")
    assert value == pytest.approx(2.0)  # documented: H-score saturates at C - 1 when N <= D
    assert np.isfinite(emms.score(x, y, "hscore_reg"))
    paths = files(features=x, target=y)
    out = cli_ok(["score", "--features", paths["features"], "--labels", paths["target"], "--metric", "hscore"])
    assert "warning:" in out.stderr and "hscore_reg" in out.stderr


def test_encoder_widths_that_differ_equal_zero_padding(arrays, tmp_path):
    """Encoders of different widths are brought to a common width; zero-padding is exact (DESIGN.md)."""
    rng = arrays["rng"]
    narrow, wide = rng.normal(size=(N, 3)) + arrays["y"][:, None], rng.normal(size=(N, 7))
    padded = np.hstack([narrow, np.zeros((N, 4))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EmmsWarning)  # the padded columns are constant and reported as such
        assert emms.score(arrays["x"], [narrow, wide], "emms") == pytest.approx(
            emms.score(arrays["x"], [padded, wide], "emms"), rel=1e-9)
    np.save(tmp_path / "x.npy", arrays["x"])
    np.save(tmp_path / "narrow.npy", narrow)
    np.save(tmp_path / "wide.npy", wide)
    cli_ok(["score", "--features", str(tmp_path / "x.npy"), "--f-labels", f"{tmp_path / 'narrow.npy'},{tmp_path / 'wide.npy'}"])


# ---------------------------------------------------------------- datasets, models, tasks, labels
def test_task_kind_not_matching_the_data(tmp_path):
    from emms.data import load_dataset

    with pytest.raises(InputError, match="task: builtin:digits is a 'classification' dataset, got task='regression'"):
        load_dataset("builtin:digits", task="regression", max_samples=20)
    cli_error(["extract", "--data", "builtin:digits", "--task", "regression", "--models", "builtin:onet_mtcnn",
               "--cache", str(tmp_path / "c")], "task", "'classification' dataset")
    assert not (tmp_path / "c").exists()


def test_unknown_model_spec(tmp_path):
    from emms.models import load_extractor

    with pytest.raises(InputError, match="spec: unknown scheme 'foo'.*known schemes: builtin:"):
        load_extractor("foo:bar")
    with pytest.raises(InputError, match="backbone: unknown builtin backbone 'nope'; known: mnv2_imagenet"):
        load_extractor("builtin:nope")
    cli_error(["extract", "--data", "builtin:digits", "--max-samples", "12", "--models", "foo:bar",
               "--cache", str(tmp_path / "c")], "spec", "known schemes")


BAD_LABEL_FRAMES = {
    "box with x2 < x1": ("referring", pd.DataFrame({"expression": ["the left bag", "the boot"], "x1": [10, 0],
                                                    "y1": [0, 0], "x2": [5, 4], "y2": [4, 4], "width": [20, 20],
                                                    "height": [20, 20]}), "needs x2 > x1"),
    "detection box with x2 < x1": ("detection", pd.DataFrame({"objects": ['[[5, 0, 1, 4, "cat"]]'], "width": [20],
                                                              "height": [20]}), "needs x2 > x1"),
    "non-numeric regression target": ("regression", pd.DataFrame({"target": ["1.5", "tall"]}), "expected a finite number"),
    "missing label column": ("classification", pd.DataFrame({"name": ["cat", "dog"]}), "needs column(s) ['label']"),
}


@pytest.mark.parametrize("kind", list(BAD_LABEL_FRAMES))
def test_bad_label_tables(kind, tmp_path):
    from emms.flabels import f_label_texts

    task, frame, words = BAD_LABEL_FRAMES[kind]
    with pytest.raises(InputError, match="labels") as info:
        f_label_texts(task, frame)
    assert words in str(info.value)
    frame.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "flabels.npz"
    cli_error(["embed", "--task", task, "--labels", str(tmp_path / "labels.csv"), "--out", str(out), "--no-cache"],
              "labels", words)
    assert not out.exists()


def test_unknown_task_kind(tmp_path):
    from emms.flabels import check_task

    with pytest.raises(InputError, match="task: expected one of .*'classification'"):
        check_task("segmentation")
    pd.DataFrame({"label": ["a", "b"]}).to_csv(tmp_path / "labels.csv", index=False)
    cli_error(["embed", "--task", "segmentation", "--labels", str(tmp_path / "labels.csv"),
               "--out", str(tmp_path / "o.npz")], "task", "expected one of")
    assert not (tmp_path / "o.npz").exists()


def test_negative_seed(arrays):
    with pytest.raises(InputError, match="seed: expected a non-negative integer, got -1"):
        emms.score(arrays["x"], arrays["y"], "nleep", seed=-1)


# ------------------------------------------------------------------------ rank: no partial output
def test_rank_failures_leave_no_output_files(tmp_path):
    out, report = tmp_path / "result.json", tmp_path / "report.html"
    common = ["rank", "--data", "builtin:digits", "--max-samples", "20", "--metrics", "logme",
              "--cache", str(tmp_path / "c"), "--out", str(out), "--report", str(report)]
    with pytest.raises(InputError, match="models: 'builtin:onet_mtcnn' is listed twice"):
        emms.rank("builtin:digits", ["builtin:onet_mtcnn", "builtin:onet_mtcnn"], max_samples=20, metrics=["logme"],
                  cache=tmp_path / "c")
    cli_error([*common, "--models", "builtin:onet_mtcnn,builtin:onet_mtcnn"], "models", "listed twice")
    # a failure after features were extracted and scored (the ground truth lacks a model)
    (tmp_path / "truth.csv").write_text("model,value\nbuiltin:onet_mtcnn,0.9\n")
    cli_error([*common, "--models", "builtin:onet_mtcnn,file:" + _feature_file(tmp_path), "--truth",
               str(tmp_path / "truth.csv")], "truth", "no fine-tuned value")
    assert not out.exists() and not report.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]


def _feature_file(tmp_path) -> str:
    """Precomputed features, one row per image of builtin:digits with --max-samples 20."""
    path = tmp_path / "feats.npy"
    np.save(path, np.random.default_rng(1).normal(size=(20, 6)).astype(np.float32))
    return str(path)


# ------------------------------------------------------------------------------ the cache location
def test_cache_location_that_cannot_be_written(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    args = ["extract", "--data", "builtin:digits", "--max-samples", "12", "--models", "builtin:onet_mtcnn"]
    cli_error([*args, "--cache", str(blocker)], "cache directory", "--cache", progress_on_stdout=True)

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "save", full_disk)  # the store writes every array with np.save
    with pytest.raises(ResourceError, match="is full"):
        Store(tmp_path / "c").put("k", np.zeros(2), {})
    cli_error([*args, "--cache", str(tmp_path / "c2")], "cache directory", "is full", progress_on_stdout=True)


# ------------------------------------------------------------------------------------- safety
def test_manifest_paths_that_escape_the_folder_are_refused(tmp_path):
    """A manifest may not point outside its folder: ``..`` and absolute paths are normalised, then checked.

    (The check is lexical on purpose: a symlink placed inside the data folder is followed.)
    """
    from PIL import Image

    from emms.data import load_dataset

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "outside.png")
    data = tmp_path / "data"
    data.mkdir()
    for name, image in (("dotdot", "../outside.png"), ("absolute", str(tmp_path / "outside.png")),
                        ("dotdot-inside", "sub/../../outside.png")):
        manifest = data / f"{name}.csv"
        manifest.write_text(f"image,label\n{image},a\n{image},b\n")
        with pytest.raises(InputError, match="outside the allowed image root"):
            load_dataset(manifest)
        cli_error(["extract", "--data", str(manifest), "--models", "builtin:onet_mtcnn", "--cache", str(tmp_path / "c")],
                  "outside the allowed image root")


OPTION_CASES = {
    # CLI option: (extra CLI arguments, API call, words)
    "negative --max-samples": (["--max-samples", "-5"], lambda: _load("builtin:digits", max_samples=-5),
                               "max_samples: expected a positive integer"),
    "--max-samples below one per class": (["--max-samples", "3"], lambda: _load("builtin:digits", max_samples=3),
                                          "max_samples: expected at least 10"),
    "negative --seed": (["--max-samples", "20", "--seed", "-1"], lambda: _load("builtin:digits", max_samples=20, seed=-1),
                        "seed: expected a non-negative integer"),
    "--image-size 0": (["--max-samples", "20", "--image-size", "0"],
                       lambda: _extractor("builtin:onet_mtcnn", image_size=0), "image_size: expected an integer >= 8"),
    "unknown --device": (["--max-samples", "20", "--device", "tpu"], lambda: _extractor("builtin:onet_mtcnn", device="tpu"),
                         "device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'"),
}


def _load(source, **options):
    from emms.data import load_dataset

    return load_dataset(source, **options)


def _extractor(spec, **options):
    from emms.models import load_extractor

    return load_extractor(spec, **options)


@pytest.mark.parametrize("kind", list(OPTION_CASES))
def test_bad_numeric_and_device_options(kind, tmp_path):
    extra, api_call, words = OPTION_CASES[kind]
    with pytest.raises(InputError) as info:
        api_call()
    assert words in str(info.value)
    out = tmp_path / "out.json"
    cli_error(["rank", "--data", "builtin:digits", "--models", "builtin:onet_mtcnn", "--metrics", "logme",
               "--cache", str(tmp_path / "c"), "--out", str(out), *extra], words)
    assert not out.exists()
