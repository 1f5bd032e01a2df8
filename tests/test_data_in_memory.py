"""Data a user already holds: pandas DataFrames and datasets.Dataset objects passed to emms.rank, and
column overrides (--text-column / --label-column) for tables whose columns have other names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import emms
from emms.cli import app
from emms.data import as_task_data, column_overrides, load_dataset
from emms.errors import InputError

TEXTS = [f"{word} number {i}" for i, word in enumerate(["apple", "pear", "plum", "kiwi"] * 5)]
LABELS = ["fruit", "tree"] * 10


def test_dataframe_with_other_column_names():
    frame = pd.DataFrame({"sentence": TEXTS, "category": LABELS})
    data = as_task_data(frame, text_column="sentence", label_column="category", max_samples=10)
    assert data.task == "classification" and data.modality == "text" and len(data) == 10
    assert data.class_names == ["fruit", "tree"] and set(data.inputs) <= set(TEXTS)
    with pytest.raises(InputError, match="columns: .* has no column 'text_col'"):
        as_task_data(frame, text_column="text_col")
    with pytest.raises(InputError, match="the table needs an 'image' column .* or a 'text' column.*--text-column"):
        as_task_data(frame, label_column="category")
    with pytest.raises(InputError, match="label_column: a 'vqa' task has several label columns"):
        column_overrides("vqa", label_column="x")


def test_dataframe_of_image_paths_is_relative_to_the_working_folder(tmp_path, monkeypatch):
    for i in range(4):
        Image.fromarray(np.full((8, 8), 60 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    data = as_task_data(pd.DataFrame({"image": [f"{i}.png" for i in range(4)], "label": ["a", "b"] * 2}))
    assert data.modality == "image" and data.inputs[0] == str(tmp_path / "0.png")


def test_hugging_face_dataset_in_memory_and_saved(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["fruit", "tree"])})
    dataset = datasets.Dataset.from_dict({"sentence": TEXTS, "label": [0, 1] * 10}, features=features)
    in_memory = as_task_data(dataset, text_column="sentence")
    assert in_memory.class_names == ["fruit", "tree"] and list(in_memory.labels["label"][:2]) == ["fruit", "tree"]
    dataset.save_to_disk(str(tmp_path / "saved"))
    saved = load_dataset(tmp_path / "saved", columns={"sentence": "text"})
    assert saved.fingerprint == in_memory.fingerprint  # the same rows either way
    with pytest.raises(InputError, match="several splits"):
        as_task_data(datasets.DatasetDict({"train": dataset}))


def test_rank_takes_a_dataframe_and_the_cli_takes_column_overrides(tmp_path):
    frame = pd.DataFrame({"sentence": TEXTS, "category": LABELS})
    features = np.random.default_rng(0).normal(size=(len(TEXTS), 6)).astype(np.float32)
    np.save(tmp_path / "a.npy", features)
    np.save(tmp_path / "b.npy", features[:, :3])
    models = [f"file:{tmp_path / 'a.npy'}", f"file:{tmp_path / 'b.npy'}"]
    ranking = emms.rank(frame, models, metrics=["logme"], text_column="sentence", label_column="category",
                        cache=tmp_path / "c", resamples=3)
    assert ranking.meta["n_samples"] == 20 and set(ranking.table["model"]) == set(models)
    frame.to_csv(tmp_path / "table.csv", index=False)
    result = CliRunner().invoke(app, ["rank", "--data", str(tmp_path / "table.csv"), "--models", ",".join(models),
                                      "--metrics", "logme", "--text-column", "sentence", "--label-column", "category",
                                      "--cache", str(tmp_path / "c"), "--resamples", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Recommended: file:")
