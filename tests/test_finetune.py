"""Fine-tuning core: real (tiny) runs of the packaged MTCNN O-Net on the bundled Fashion-MNIST sample,
per-epoch curves, checkpoint continuation, resumability, SIGKILL recovery, lr selection, record
compatibility and the split helpers. Nothing outside the repository is read (the benchmark-target
test is opt-in: it needs full Fashion-MNIST in $EMMS_FASHION_MNIST_DIR)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _sigkill import sigkill_when
from emms.data import load_dataset
from emms.errors import InputError
from emms.finetune import (FinetuneData, FinetuneProtocol, RunKey, aggregate_truth, finetune_run, load_record, plan_grid,
                           run_grid, upgrade_record)

pytest.importorskip("torch")
TINY = FinetuneProtocol(epochs=1, image_size=48)
MODEL = "onet_mtcnn"  # 0.39M parameters, fixed 48x48 input: the cheapest packaged backbone
TARGET = "fashion-mnist"
COMMITTED_RUNS = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "finetune_runs"


@pytest.fixture(scope="module")
def tiny_data() -> FinetuneData:
    return FinetuneData.from_task_data(load_dataset("builtin:fashion-mnist", max_samples=200, seed=0),
                                       val_fraction=0.1, test_fraction=0.2, seed=0)


def _mtimes(out_dir) -> dict[str, int]:
    return {str(p.relative_to(out_dir)): p.stat().st_mtime_ns for p in (out_dir / "runs").rglob("*.json")}


@pytest.fixture(scope="module")
def tiny_grid(tiny_data, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("grid")
    return out_dir, run_grid([tiny_data], [MODEL], lrs=[1e-3], seeds=[0, 1], out_dir=out_dir, protocol=TINY)


def test_grid_writes_one_record_per_run_and_never_redoes_them(tiny_data, tiny_grid):
    out_dir, first = tiny_grid
    assert (first.n_trained, first.n_reused, first.failures) == (2, 0, [])
    records = sorted((out_dir / "runs" / TARGET).glob("*.json"))
    assert [p.name for p in records] == ["onet_mtcnn__lr0.001__seed0.json", "onet_mtcnn__lr0.001__seed1.json"]
    sizes = tuple(len(part[1]) for part in (tiny_data.train, tiny_data.val, tiny_data.test))
    assert sizes == (140, 20, 40)
    for path in records:
        record = json.loads(path.read_text())
        assert record["version"] == 2 and record["complete"] and record["primary"] == "accuracy"
        assert 0.0 <= record["test_score"] <= 1.0 and record["val_score"] == record["val_accuracy"]
        assert (record["n_train"], record["n_val"], record["n_test"], record["steps"]) == (*sizes, 3)  # 64 + 64 + 12
        assert record["image_size_used"] == 48 and np.isfinite(record["final_train_loss"])
        assert record["n_params"] > 300_000
        [point] = record["curve"]
        assert point["epoch"] == 1 and point["steps"] == 3 and point["val"] == record["val_score"]
        assert 0 < point["seconds"] <= record["seconds"]
    assert len(first.truth) == 1
    row = first.truth.iloc[0]
    assert row.n_seeds == 2 and row.value == pytest.approx(first.results.test_score.mean())
    before = _mtimes(out_dir)

    todo, n_done = plan_grid([tiny_data], [MODEL], lrs=[1e-3], seeds=[0, 1], out_dir=out_dir, protocol=TINY)
    assert (todo, n_done) == ([], 2)
    second = run_grid([tiny_data], [MODEL], lrs=[1e-3], seeds=[0, 1], out_dir=out_dir, protocol=TINY)
    assert (second.n_trained, second.n_reused) == (0, 2)
    assert _mtimes(out_dir) == before  # nothing rewritten
    pd.testing.assert_frame_equal(second.results, first.results)

    with pytest.raises(InputError, match="different protocol"):
        run_grid([tiny_data], [MODEL], lrs=[1e-3], seeds=[0], out_dir=out_dir,
                 protocol=FinetuneProtocol(epochs=2, image_size=48))


def test_same_seed_gives_the_same_run_and_another_seed_differs(tiny_data, tiny_grid):
    _, grid = tiny_grid
    again = finetune_run(tiny_data, MODEL, 1e-3, 0, TINY)
    seed0, seed1 = (grid.results[grid.results.seed == s].iloc[0] for s in (0, 1))
    assert again["final_train_loss"] == seed0.final_train_loss and again["test_score"] == seed0.test_score
    assert seed0.final_train_loss != seed1.final_train_loss


def test_a_run_stopped_at_an_epoch_and_continued_is_the_uninterrupted_run(tiny_data, tmp_path):
    protocol = FinetuneProtocol(epochs=3, image_size=48)
    whole = finetune_run(tiny_data, MODEL, 3e-3, 0, protocol)
    checkpoint = tmp_path / "run.ckpt"
    first = finetune_run(tiny_data, MODEL, 3e-3, 0, protocol, until_epoch=1, checkpoint=checkpoint)
    assert checkpoint.is_file() and not first["complete"] and first["epochs_done"] == 1
    assert first["test_score"] is None and len(first["curve"]) == 1
    second = finetune_run(tiny_data, MODEL, 3e-3, 0, protocol, until_epoch=2, checkpoint=checkpoint)
    assert second["epochs_done"] == 2 and second["curve"][0] == first["curve"][0]
    assert second["seconds"] > first["seconds"]  # cost accumulates over the pieces
    last = finetune_run(tiny_data, MODEL, 3e-3, 0, protocol, checkpoint=checkpoint)
    assert last["complete"] and not checkpoint.exists()
    assert [p["val"] for p in last["curve"]] == [p["val"] for p in whole["curve"]]
    assert [p["train_loss"] for p in last["curve"]] == [p["train_loss"] for p in whole["curve"]]
    assert last["test_score"] == whole["test_score"] and last["steps"] == whole["steps"] == 9
    finetune_run(tiny_data, MODEL, 3e-3, 1, protocol, until_epoch=1, checkpoint=tmp_path / "seed1.ckpt")
    with pytest.raises(InputError, match="another run"):
        finetune_run(tiny_data, MODEL, 3e-3, 0, protocol, until_epoch=2, checkpoint=tmp_path / "seed1.ckpt")
    with pytest.raises(InputError, match="until_epoch"):
        finetune_run(tiny_data, MODEL, 3e-3, 0, protocol, until_epoch=4)


def test_version_1_records_of_the_committed_truth_read_as_complete_runs():
    path = COMMITTED_RUNS / "fm10" / "mnv2_imagenet__lr0.001__seed0.json"
    raw = json.loads(path.read_text())
    assert raw["version"] == 1
    record = upgrade_record(raw)
    assert record["complete"] and record["curve"] == [] and record["primary"] == "accuracy"
    assert (record["val_score"], record["test_score"]) == (raw["val_accuracy"], raw["test_accuracy"])
    assert record["epochs_done"] == raw["protocol"]["epochs"]
    key = RunKey("fm10", "mnv2_imagenet", 1e-3, 0)
    protocol = FinetuneProtocol(**raw["protocol"])
    assert load_record(key, COMMITTED_RUNS.parent / "_", raw["data_fingerprint"], protocol) is None  # absent: None


def test_sigkill_loses_only_the_run_in_progress(tmp_path):
    out, out_dir = tmp_path / "truth.csv", tmp_path / "runs_dir"
    args = ["finetune", "--data", "builtin:fashion-mnist", "--max-samples", "300", "--models", MODEL, "--lrs", "1e-3",
            "--seeds", "0,1", "--epochs", "1", "--out", str(out), "--out-dir", str(out_dir)]
    first_record = out_dir / "runs" / TARGET / "onet_mtcnn__lr0.001__seed0.json"
    second_record = out_dir / "runs" / TARGET / "onet_mtcnn__lr0.001__seed1.json"
    # killed once the first run is recorded: the second (model build, 4 steps, evaluation) is in progress
    sigkill_when(["-c", "from emms.cli import main; main()", *args], first_record.exists, tmp_path / "child.err")
    assert not second_record.exists() and not out.exists()
    kept = first_record.stat().st_mtime_ns

    from typer.testing import CliRunner

    from emms.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "trained 1, reused 1" in result.output
    assert first_record.stat().st_mtime_ns == kept and second_record.exists()
    truth = pd.read_csv(out)
    assert list(truth[["target", "model", "n_seeds"]].itertuples(index=False, name=None)) == [(TARGET, MODEL, 2)]
    assert len(pd.read_csv(out_dir / "results.csv")) == 2


def test_aggregate_truth_selects_lr_on_validation_and_averages_seeds():
    results = pd.DataFrame({
        "target": ["t"] * 6, "model": ["m"] * 6,
        "lr": [1e-3, 1e-3, 3e-4, 3e-4, 1e-4, 1e-4], "seed": [0, 1] * 3,
        "val_score": [0.80, 0.80, 0.90, 0.86, 0.90, 0.86],   # 3e-4 and 1e-4 tie on validation
        "test_score": [0.95, 0.95, 0.60, 0.70, 0.10, 0.10],  # the best test lr is NOT the one chosen
    })
    truth = aggregate_truth(results)
    assert len(truth) == 1
    row = truth.iloc[0]
    assert row.lr == 1e-4  # validation tie -> the smaller lr
    assert row.value == pytest.approx(0.10) and row.val_score == pytest.approx(0.88) and row.n_seeds == 2
    results.loc[results.lr == 1e-4, "val_score"] = 0.5
    row = aggregate_truth(results).iloc[0]
    assert row.lr == 3e-4 and row.value == pytest.approx(0.65) and row.value_std == pytest.approx(np.std([0.6, 0.7], ddof=1))


def test_bad_grid_arguments_are_input_errors(tiny_data, tmp_path):
    grid = dict(lrs=[1e-3], seeds=[0], out_dir=tmp_path, protocol=TINY)
    with pytest.raises(InputError, match="backbone"):
        run_grid([tiny_data], ["resnet9000"], **grid)
    with pytest.raises(InputError, match="cannot be fine-tuned"):
        run_grid([tiny_data], ["file:features.npy"], **grid)
    with pytest.raises(InputError, match="lrs"):
        run_grid([tiny_data], [MODEL], **{**grid, "lrs": [5.0]})
    with pytest.raises(InputError, match="seeds"):
        run_grid([tiny_data], [MODEL], **{**grid, "seeds": [-1]})
    with pytest.raises(InputError, match="device"):
        run_grid([tiny_data], [MODEL], device="tpu", **grid)
    with pytest.raises(InputError, match="epochs"):
        FinetuneProtocol(epochs=0)
    assert not (tmp_path / "runs").exists()


@pytest.mark.skipif(not os.environ.get("EMMS_FASHION_MNIST_DIR"),
                    reason="opt-in: needs full Fashion-MNIST in $EMMS_FASHION_MNIST_DIR")
def test_benchmark_targets_are_deterministic_disjoint_and_relabelled():
    from emms.data.fashion_targets import TARGETS, benchmark_targets, fashion_mnist_split

    targets = benchmark_targets(n_train=300, n_val=50, n_probe=200, n_test=100, seed=0)
    again = benchmark_targets(n_train=300, n_val=50, n_probe=200, n_test=100, seed=0)
    other_seed = benchmark_targets(["fm10"], n_train=300, n_val=50, n_probe=200, n_test=100, seed=1)
    assert set(targets) == {"fm10", "fm4", "fm-tops4"}
    _, train_labels = fashion_mnist_split("train")
    _, test_labels = fashion_mnist_split("test")
    for name, target in targets.items():
        assert target.fingerprint() == again[name].fingerprint()
        sizes = [len(target.train), len(target.val), len(target.probe), len(target.test)]
        assert sizes == [300, 50, 200, 100]
        train_side = np.concatenate([target.train, target.val, target.probe])
        assert len(np.unique(train_side)) == len(train_side)  # train / val / probe are disjoint
        allowed = sorted(TARGETS[name].class_map)
        assert np.isin(train_labels[train_side], allowed).all() and np.isin(test_labels[target.test], allowed).all()
        images, labels = target.arrays("probe")
        assert images.shape == (200, 28, 28) and images.dtype == np.uint8
        expected = np.array([TARGETS[name].class_map[c] for c in train_labels[target.probe]])
        np.testing.assert_array_equal(labels, expected)
        assert set(np.unique(labels)) == set(range(target.num_classes))
    assert other_seed["fm10"].fingerprint() != targets["fm10"].fingerprint()
    fm4 = TARGETS["fm4"].class_map
    assert [fm4[c] for c in range(10)] == [0, 1, 0, 1, 0, 2, 0, 2, 3, 2]
    probe = targets["fm4"].task_data("probe")
    assert len(probe) == 200 and probe.class_names == ["top", "trouser or dress", "footwear", "bag"]
    with pytest.raises(InputError, match="names"):
        benchmark_targets(["fm11"])
    with pytest.raises(InputError, match="n_train"):
        benchmark_targets(["fm-tops4"], n_train=30_000)


def test_any_image_classification_dataset_splits_stratified_and_disjoint():
    data = load_dataset("builtin:digits")
    split = FinetuneData.from_task_data(data, val_fraction=0.1, test_fraction=0.2, seed=0)
    sizes = [len(part[1]) for part in (split.train, split.val, split.test)]
    assert sum(sizes) == len(data) and sizes[2] == pytest.approx(0.2 * len(data), abs=1)
    assert split.class_names == data.class_names and split.num_classes == 10
    for images, labels in (split.train, split.val, split.test):
        assert images.dtype == np.uint8 and set(np.unique(labels)) == set(range(10))  # stratified: every class
    rows = {images.tobytes() + bytes([label]) for part in (split.train, split.val, split.test)
            for images, label in zip(*part)}
    source = {image.tobytes() + bytes([int(label)]) for image, label in zip(data.inputs, data.labels.label)}
    assert len(rows) == len(source)  # every distinct (image, label) of the source lands in exactly one split
    again = FinetuneData.from_task_data(data, val_fraction=0.1, test_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again.test[1], split.test[1])
    assert again.fingerprint == split.fingerprint
    no_test = FinetuneData.from_task_data(data, val_fraction=0.2, test_fraction=0, seed=0)
    assert no_test.test is None and len(no_test.train[1]) + len(no_test.val[1]) == len(data)
    with pytest.raises(InputError, match="val_fraction"):
        FinetuneData.from_task_data(data, val_fraction=0.5, test_fraction=0.5)
    text = FinetuneData.from_task_data(load_dataset("builtin:text-topics"), val_fraction=0.2, test_fraction=0)
    assert isinstance(text.train[0], list) and isinstance(text.train[0][0], str)  # texts, for the text candidates
    with pytest.raises(InputError, match="image or text classification"):
        FinetuneData.from_task_data(load_dataset("builtin:fortunes-qa"))
