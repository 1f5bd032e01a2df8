"""emms.data: readers, bundled and generated samples, fingerprints, seeded stratified subsampling."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from emms.data import BUILTIN_DATASETS, GENERATED, TaskData, load_dataset, subsample
from emms.errors import InputError, ResourceError
from emms.flabels import NATIVE_TARGET_KINDS, f_label_texts, native_target

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


# ----------------------------------------------------------------------------- bundled samples
def test_fashion_mnist_sample():
    data = load_dataset("builtin:fashion-mnist")
    assert data.inputs.shape == (5000, 28, 28) and data.inputs.dtype == np.uint8
    assert data.task == "classification" and data.modality == "image" and data.class_names == FASHION
    assert data.labels["label"].value_counts().to_dict() == {name: 500 for name in FASHION}
    assert data.inputs.std() > 50  # real images, not blanks


def test_fashion_mnist_matches_the_source_images():
    """The bundled images are the Fashion-MNIST test images they claim to be. Needs the full images
    (optional, 30 MB: see emms.data.fashion.GET_FASHION_MNIST); the labels check runs everywhere."""
    from emms.data.fashion import fashion_mnist_dir, read_idx

    source = str(fashion_mnist_dir() / "t10k-images-idx3-ubyte.gz")
    if not os.path.exists(source):
        pytest.skip("provenance check of the bundled images needs the full Fashion-MNIST images "
                    "(set EMMS_FASHION_MNIST_DIR); the label check runs in test_shared_helpers")
    with np.load(os.path.join(os.path.dirname(__import__("emms").__file__), "resources", "fashion_mnist_sample.npz")) as npz:
        index, images = npz["source_index"], npz["images"]
    from pathlib import Path
    assert np.array_equal(read_idx(Path(source))[index], images)


def test_digits_from_sklearn():
    data = load_dataset("builtin:digits")
    assert data.inputs.shape == (1797, 8, 8) and data.inputs.dtype == np.uint8 and data.inputs.max() == 255
    assert data.class_names == [str(d) for d in range(10)]
    assert set(data.labels["label"]) == set(data.class_names)


def test_text_topics():
    data = load_dataset("builtin:text-topics")
    assert data.modality == "text" and len(data.inputs) == 1200 and all(isinstance(t, str) for t in data.inputs)
    assert all(20 <= len(t) <= 300 for t in data.inputs)
    counts = data.labels["label"].value_counts()
    assert len(counts) == 6 and set(counts) == {200} and data.class_names == sorted(counts.index)


def test_generated_samples_are_labelled_and_deterministic():
    for name in GENERATED:
        first, second = load_dataset(f"builtin:{name}"), load_dataset(f"builtin:{name}")
        assert "GENERATED" in first.name and "GENERATED" in first.description
        assert first.fingerprint == second.fingerprint and 100 <= len(first) <= 1000


def test_every_builtin_sample_feeds_the_label_layer():
    for name in BUILTIN_DATASETS:
        data = load_dataset(f"builtin:{name}")
        texts = f_label_texts(data.task, data.labels, data.class_names)
        assert texts.n_samples == len(data)
        if NATIVE_TARGET_KINDS[data.task]:
            assert len(native_target(data.task, data.labels, data.class_names)) == len(data)


def test_captions_two_per_image_grouped_by_image_id():
    data = load_dataset("builtin:fashion-captions")
    assert data.task == "captioning" and len(data) == 600
    groups = data.labels.groupby("image").indices
    assert len(groups) == 300 and {len(rows) for rows in groups.values()} == {2}
    for rows in list(groups.values())[:20]:  # rows of one image show the same image
        assert np.array_equal(data.inputs[rows[0]], data.inputs[rows[1]])


def test_vqa_answers_follow_the_image_class():
    data = load_dataset("builtin:fashion-vqa")
    kinds = data.labels[data.labels["question"] == "What kind of item is this?"]
    footwear = data.labels[data.labels["question"] == "Is this item footwear?"]
    assert len(kinds) > 50 and set(kinds["answer"]) <= {n.lower() for n in FASHION}
    assert set(footwear["answer"]) == {"yes", "no"}


def test_fortunes_qa_has_context_and_answers():
    data = load_dataset("builtin:fortunes-qa")
    assert data.task == "text_qa" and list(data.labels.columns) == ["question", "context", "answer"]
    quoted = data.labels[data.labels["question"] == "Who is quoted here?"]
    assert len(quoted) > 100
    assert not any(c.rstrip(" .,").endswith(a) for a, c in zip(quoted["answer"], quoted["context"]))
    assert sum(a.split()[-1] in {"Knuth", "Einstein", "Twain", "Wilde"} for a in quoted["answer"]) >= 3
    assert all(q in text and c in text for q, c, text in zip(data.labels["question"], data.labels["context"], data.inputs))


def _assert_tight_box(canvas, x1, y1, x2, y2):
    h, w = canvas.shape
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
    patch = canvas[y1:y2, x1:x2]
    assert patch[0].any() and patch[-1].any() and patch[:, 0].any() and patch[:, -1].any()


def test_referring_boxes_are_tight_around_the_named_item():
    data = load_dataset("builtin:fashion-referring")
    assert data.inputs.shape == (300, 96, 96)
    for canvas, row in zip(data.inputs, data.labels.itertuples()):
        assert row.width == row.height == 96 and row.expression.startswith("the ")
        _assert_tight_box(canvas, row.x1, row.y1, row.x2, row.y2)


def test_detection_objects_are_tight_boxes_with_class_names():
    data = load_dataset("builtin:fashion-detection")
    assert data.inputs.shape == (200, 128, 128) and data.class_names == FASHION
    counts = []
    for canvas, objects in zip(data.inputs, data.labels["objects"]):
        counts.append(len(objects))
        for x1, y1, x2, y2, name in objects:
            assert name in FASHION and all(type(v) is int for v in (x1, y1, x2, y2))
            _assert_tight_box(canvas, x1, y1, x2, y2)
    assert min(counts) == 2 and max(counts) == 5
    json.dumps(data.labels["objects"].tolist())  # plain Python values, serialisable


def test_builtin_errors():
    with pytest.raises(InputError, match="unknown builtin dataset 'nope'.*builtin:fashion-mnist"):
        load_dataset("builtin:nope")
    with pytest.raises(InputError, match="classification"):
        load_dataset("builtin:digits", task="regression")


# ----------------------------------------------------------------------------- readers
def _png(path, value, size=(12, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, dtype=np.uint8)).save(path)


def test_image_folder(tmp_path):
    for cls, n in (("cat", 3), ("dog", 2)):
        for i in range(n):
            _png(tmp_path / "pets" / cls / f"{i}.png", 40 * i)
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / ".hidden").mkdir()
    data = load_dataset(tmp_path / "pets")
    assert data.task == "classification" and data.modality == "image" and data.class_names == ["cat", "dog"]
    assert data.labels["label"].tolist() == ["cat"] * 3 + ["dog"] * 2
    assert all(os.path.isabs(p) and p.endswith(".png") for p in data.inputs)
    with pytest.raises(InputError, match="classification"):
        load_dataset(tmp_path / "pets", task="vqa")


def test_image_folder_needs_two_classes(tmp_path):
    _png(tmp_path / "one" / "only" / "a.png", 1)
    with pytest.raises(InputError, match="at least 2"):
        load_dataset(tmp_path / "one")


def test_csv_manifest_images_relative_to_the_manifest(tmp_path):
    _png(tmp_path / "imgs" / "a.png", 10)
    _png(tmp_path / "imgs" / "b.png", 200)
    (tmp_path / "m.csv").write_text("image,label\nimgs/a.png,shoe\nimgs/b.png,bag\nimgs/./a.png,shoe\n")
    data = load_dataset(tmp_path / "m.csv")
    assert data.task == "classification" and data.class_names == ["bag", "shoe"]
    assert data.inputs == [str(tmp_path / "imgs" / n) for n in ("a.png", "b.png", "a.png")]


def test_manifest_paths_may_not_escape_the_image_root(tmp_path):
    _png(tmp_path / "outside.png", 5)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "m.csv").write_text("image,label\n../outside.png,x\n../outside.png,y\n")
    with pytest.raises(InputError, match="outside the allowed image root"):
        load_dataset(tmp_path / "data" / "m.csv")
    (tmp_path / "data" / "abs.csv").write_text(f"image,label\n{tmp_path / 'outside.png'},x\n{tmp_path / 'outside.png'},y\n")
    with pytest.raises(InputError, match="outside the allowed image root"):
        load_dataset(tmp_path / "data" / "abs.csv")
    assert len(load_dataset(tmp_path / "data" / "m.csv", image_root=tmp_path)) == 2


def test_manifest_missing_images_and_columns(tmp_path):
    (tmp_path / "m.csv").write_text("image,label\nnope.png,x\n")
    with pytest.raises(InputError, match="do not exist.*nope.png"):
        load_dataset(tmp_path / "m.csv")
    _png(tmp_path / "a.png", 3)
    (tmp_path / "q.csv").write_text("image,question\na.png,what?\n")
    with pytest.raises(InputError, match=r"task 'vqa' needs label column\(s\) \['answer'\]"):
        load_dataset(tmp_path / "q.csv", task="vqa")
    with pytest.raises(InputError, match="cannot infer the task kind"):
        load_dataset(tmp_path / "q.csv")
    (tmp_path / "r.csv").write_text("image,expression,x1,y1\na.png,the thing,1,2\n")
    with pytest.raises(InputError, match=r"\['x2', 'y2'\]"):
        load_dataset(tmp_path / "r.csv")


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_dataset(tmp_path / "absent.csv")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(InputError, match="not a manifest"):
        load_dataset(tmp_path / "x.txt")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="cannot read"):
        load_dataset(tmp_path / "bad.jsonl")


def test_referring_manifest_gets_image_sizes(tmp_path):
    _png(tmp_path / "a.png", 9, size=(30, 20))
    (tmp_path / "r.csv").write_text("image,expression,x1,y1,x2,y2\na.png,the left one,1,2,10,12\n"
                                    "a.png,the right one,15,2,29,19\n")
    data = load_dataset(tmp_path / "r.csv")
    assert data.task == "referring"
    assert data.labels["width"].tolist() == [30, 30] and data.labels["height"].tolist() == [20, 20]
    assert native_target(data.task, data.labels).shape == (2, 4)


def test_jsonl_text_manifests_infer_each_task(tmp_path):
    cases = {
        "classification": [{"text": "a", "label": "x"}, {"text": "b", "label": "y"}],
        "multilabel": [{"text": "a", "labels": ["x", "y"]}, {"text": "b", "labels": ["y"]}],
        "regression": [{"text": "a", "target_1": 0.5, "target_2": 1.0}, {"text": "b", "target_1": 1.5, "target_2": 2}],
        "captioning": [{"text": "a", "caption": "c1"}, {"text": "b", "caption": "c2"}],
        "text_qa": [{"text": "a", "question": "q", "answer": "x"}, {"text": "b", "question": "q", "answer": "y"}],
    }
    for task, rows in cases.items():
        path = tmp_path / f"{task}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        data = load_dataset(path)
        assert data.task == task and data.modality == "text" and data.inputs == ["a", "b"]
        assert "text" not in data.labels.columns
        f_label_texts(data.task, data.labels, data.class_names)  # the label layer accepts what we read


def test_text_qa_without_text_column_uses_question_and_context(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": "Who?", "context": "Ann wrote it.", "answer": "Ann"}) + "\n"
                    + json.dumps({"question": "What?", "answer": "it"}) + "\n")
    data = load_dataset(path)
    assert data.task == "text_qa" and data.inputs == ["Who? Ann wrote it.", "What?"]


def test_parquet_manifest_with_images(tmp_path):
    for i in range(4):
        _png(tmp_path / f"{i}.png", 50 * i)
    objects = [json.dumps([[0, 0, 5, 5, "box"]]), json.dumps([[1, 1, 4, 6, "ring"], [2, 2, 3, 3, "box"]])] * 2
    pd.DataFrame({"image": [f"{i}.png" for i in range(4)], "objects": objects}).to_parquet(tmp_path / "d.parquet")
    data = load_dataset(tmp_path / "d.parquet")
    assert data.task == "detection" and data.labels["width"].tolist() == [12] * 4
    assert native_target(data.task, data.labels).shape[0] == 4


def test_hf_dataset_needs_the_datasets_package(tmp_path, monkeypatch):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "dataset_info.json").write_text("{}")
    (folder / "state.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "datasets", None)  # behave as if not installed
    with pytest.raises(ResourceError, match="pip install datasets"):
        load_dataset(folder)


# ----------------------------------------------------------------------------- fingerprints
def test_fingerprint_changes_with_inputs_and_labels():
    images = np.zeros((4, 5, 5), dtype=np.uint8)
    labels = pd.DataFrame({"label": ["a", "b", "a", "b"]})
    base = TaskData("t", "image", images, "classification", labels).fingerprint
    assert TaskData("other name", "image", images.copy(), "classification", labels.copy()).fingerprint == base
    changed = images.copy()
    changed[2, 1, 1] = 1
    assert TaskData("t", "image", changed, "classification", labels).fingerprint != base
    assert TaskData("t", "image", images, "classification", pd.DataFrame({"label": ["a", "b", "b", "b"]})).fingerprint != base


def test_fingerprint_of_paths_tracks_size_and_mtime(tmp_path):
    for cls in ("x", "y"):
        _png(tmp_path / "f" / cls / "0.png", 7)
    first = load_dataset(tmp_path / "f").fingerprint
    assert load_dataset(tmp_path / "f").fingerprint == first
    target = tmp_path / "f" / "y" / "0.png"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    assert load_dataset(tmp_path / "f").fingerprint != first


def test_taskdata_checks_its_parts():
    with pytest.raises(InputError, match="one row per input"):
        TaskData("t", "image", np.zeros((3, 2, 2), np.uint8), "classification", pd.DataFrame({"label": [1, 2]}))
    with pytest.raises(InputError, match="task"):
        TaskData("t", "image", np.zeros((2, 2, 2), np.uint8), "segmentation", pd.DataFrame({"label": [1, 2]}))
    with pytest.raises(InputError, match="uint8"):
        TaskData("t", "image", np.zeros((2, 2, 2)), "classification", pd.DataFrame({"label": [1, 2]}))


# ----------------------------------------------------------------------------- subsampling
def test_stratified_subsample_is_seeded_and_keeps_every_class():
    first = load_dataset("builtin:fashion-mnist", max_samples=200, seed=3)
    again = load_dataset("builtin:fashion-mnist", max_samples=200, seed=3)
    other = load_dataset("builtin:fashion-mnist", max_samples=200, seed=4)
    assert len(first) == 200 and first.labels["label"].value_counts().to_dict() == {n: 20 for n in FASHION}
    assert np.array_equal(first.inputs, again.inputs) and first.fingerprint == again.fingerprint
    assert not np.array_equal(first.inputs, other.inputs) and first.fingerprint != other.fingerprint
    assert first.class_names == FASHION


def test_subsample_limits():
    data = load_dataset("builtin:digits")
    assert subsample(data, 5000) is data and subsample(data, None) is data
    assert set(subsample(data, 10).labels["label"]) == set(data.class_names)
    with pytest.raises(InputError, match="at least 10"):
        subsample(data, 9)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InputError, match="max_samples"):
            subsample(data, bad)
    with pytest.raises(InputError, match="seed"):
        subsample(data, 10, seed=-1)


def test_subsample_keeps_the_rows_of_one_image_together():
    data = load_dataset("builtin:fashion-captions", max_samples=25, seed=1)
    groups = data.labels.groupby("image").size()
    assert len(groups) == 25 and set(groups) == {2} and len(data) == 50


@settings(max_examples=40, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=2, max_size=8), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 99))
def test_stratified_allocation_properties(counts, fraction, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    n = len(labels)
    max_samples = len(counts) + int(fraction * (n - len(counts)))
    data = TaskData("t", "text", [str(i) for i in range(n)], "classification", pd.DataFrame({"label": labels}))
    out = subsample(data, max_samples, seed)
    kept = np.array([int(t) for t in out.inputs])
    assert len(kept) == max_samples and np.all(np.diff(kept) > 0)  # original order, no repeats
    per_class = np.bincount(labels[kept], minlength=len(counts))
    assert np.all(per_class >= 1) and np.all(per_class <= counts)
    # one row per class, the rest shared in proportion to what each class has left (largest remainders)
    left = np.array(counts) - 1
    expected = 1 + left / max(left.sum(), 1) * (max_samples - len(counts))
    assert np.all(np.abs(per_class - expected) < 1)


def test_hf_dataset_folders(tmp_path):
    """Runs only where the optional `datasets` package is installed (it is not in the dev venv)."""
    datasets = pytest.importorskip("datasets")
    images = [Image.fromarray(np.full((6, 5, 3), 30 * i, np.uint8)) for i in range(4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    datasets.Dataset.from_dict({"image": images, "label": [0, 1, 0, 1]}, features=features).save_to_disk(tmp_path / "img")
    data = load_dataset(tmp_path / "img")
    assert data.inputs.shape == (4, 6, 5, 3) and data.class_names == ["cat", "dog"]
    assert data.labels["label"].tolist() == ["cat", "dog", "cat", "dog"]
    splits = {"train": datasets.Dataset.from_dict({"text": ["a", "b"], "label": ["x", "y"]}),
              "test": datasets.Dataset.from_dict({"text": ["c", "d"], "label": ["y", "x"]})}
    datasets.DatasetDict(splits).save_to_disk(tmp_path / "txt")
    assert load_dataset(tmp_path / "txt").inputs == ["a", "b"]
    assert load_dataset(f"{tmp_path / 'txt'}:test").inputs == ["c", "d"]
