"""Bundled samples (real data shipped in the package) and GENERATED samples built from them.

Real: ``fashion-mnist`` (5,000 Fashion-MNIST test images, 500 per class), ``digits`` (sklearn's
1,797 8x8 digits, loaded from scikit-learn), ``text-topics`` (1,200 Debian fortunes, 200 in each of
six categories). See ``benchmarks/build_samples.py`` and docs/data.md for sources and licences.

GENERATED (deterministic, seed 0, built at load time from the Fashion-MNIST and fortunes samples;
templated labels, not human annotations — good for exercising every task kind, not for claims
about real captioning or QA data): ``fashion-captions``, ``fashion-vqa``, ``fortunes-qa``,
``fashion-referring``, ``fashion-detection``.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from functools import lru_cache
from importlib import resources

import numpy as np
import pandas as pd

from emms.data.fashion import per_class_rows
from emms.data.taskdata import TaskData
from emms.errors import InputError

_FOOTWEAR = ("Sandal", "Sneaker", "Ankle boot")
_ATTRIBUTION = re.compile(r"^(?P<quote>.{15,}?)\s+--\s*(?P<author>[A-Z][\w.' -]{1,40}?)[,.]?$")


@lru_cache(maxsize=1)
def _fashion_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    with resources.files("emms").joinpath("resources/fashion_mnist_sample.npz").open("rb") as handle:
        with np.load(handle, allow_pickle=False) as npz:
            images, labels, index = npz["images"], npz["labels"].astype(np.int64), npz["source_index"]
            names = tuple(str(n) for n in npz["class_names"])
    for array in (images, labels, index):
        array.setflags(write=False)
    return images, labels, index, names


@lru_cache(maxsize=1)
def _topic_rows() -> tuple[dict, ...]:
    raw = resources.files("emms").joinpath("resources/text_topics.jsonl.gz").read_bytes()
    return tuple(json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines())


def fashion_mnist() -> TaskData:
    """5,000 Fashion-MNIST test images (28x28 uint8 gray), 500 per class, labelled by class name."""
    images, labels, _, names = _fashion_arrays()
    return TaskData(name="fashion-mnist", modality="image", inputs=images.copy(), task="classification",
                    labels=pd.DataFrame({"label": [names[c] for c in labels]}), class_names=list(names),
                    description="Fashion-MNIST test-split sample, 500 per class (zalandoresearch, MIT)")


def digits() -> TaskData:
    """sklearn's digits: 1,797 images of 8x8, rescaled from 0..16 to uint8 0..255; classes "0".."9"."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    names = [str(c) for c in bunch.target_names]
    return TaskData(name="digits", modality="image", inputs=images, task="classification",
                    labels=pd.DataFrame({"label": [names[c] for c in bunch.target]}), class_names=names,
                    description="scikit-learn load_digits (UCI optical recognition of handwritten digits)")


def text_topics() -> TaskData:
    """1,200 short texts (Debian fortunes), 200 in each of six topic categories."""
    rows = _topic_rows()
    return TaskData(name="text-topics", modality="text", inputs=[r["text"] for r in rows], task="classification",
                    labels=pd.DataFrame({"label": [r["label"] for r in rows]}),
                    class_names=sorted({r["label"] for r in rows}),
                    description="Debian fortunes, 200 texts in each of 6 categories (BSD-style licence)")


def _per_class_pick(per_class: int, seed: int) -> np.ndarray:
    """Rows of the Fashion-MNIST sample: ``per_class`` of each class, seeded, in sample order."""
    _, labels, _, names = _fashion_arrays()
    return per_class_rows(labels, per_class, seed, len(names))


def _brightness(images: np.ndarray) -> np.ndarray:
    """Mean brightness of each image's item pixels (the non-zero ones): (N, H, W) uint8 -> (N,) float."""
    items = images > 0
    return (images * items).sum(axis=(1, 2)) / np.maximum(items.sum(axis=(1, 2)), 1)


def _tones(brightness: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """dark / mid-toned / light: ``brightness`` split at the terciles of ``reference`` brightness."""
    low, high = np.quantile(reference, [1 / 3, 2 / 3])
    return np.where(brightness <= low, "dark", np.where(brightness <= high, "mid-toned", "light"))


def _appearance(images: np.ndarray) -> tuple[list[str], list[str]]:
    """Per image: tone (dark/mid-toned/light, by tercile of mean item brightness) and width (narrow/wide)."""
    items = images > 0
    brightness = _brightness(images)
    tone = _tones(brightness, brightness)
    widths = items.any(axis=1).sum(axis=1)
    shape = np.where(widths <= np.median(widths), "narrow", "wide")
    return tone.tolist(), shape.tolist()


def fashion_captions() -> TaskData:
    """GENERATED captioning: 300 images (30 per class), 2 templated captions each (600 rows).

    Captions name the class and two measured properties (tone, width); rows of one image share the
    ``image`` id, which is how per-image caption averaging groups them.
    """
    images, labels, index, names = _fashion_arrays()
    rows = _per_class_pick(30, seed=0)
    tone, shape = _appearance(images[rows])
    records = []
    for r, t, s in zip(rows, tone, shape):
        name = names[labels[r]].lower()
        image_id = f"fashion-mnist-test-{index[r]}"
        records.append((r, image_id, f"a {t} {name} on a black background"))
        records.append((r, image_id, f"a {s} {name}, photographed from the front"))
    return TaskData(name="fashion-captions (GENERATED)", modality="image",
                    inputs=images[[rec[0] for rec in records]], task="captioning",
                    labels=pd.DataFrame({"image": [rec[1] for rec in records], "caption": [rec[2] for rec in records]}),
                    description="GENERATED templated captions of Fashion-MNIST images (2 per image)")


def fashion_vqa() -> TaskData:
    """GENERATED VQA: 300 images (30 per class), 2 of 3 templated questions each (600 rows)."""
    images, labels, index, names = _fashion_arrays()
    rows = _per_class_pick(30, seed=1)
    tone, _ = _appearance(images[rows])
    rng = np.random.default_rng(1)
    records = []
    for r, t in zip(rows, tone):
        name = names[labels[r]]
        answers = [("What kind of item is this?", name.lower()),
                   ("Is this item footwear?", "yes" if name in _FOOTWEAR else "no"),
                   ("Is the item dark, mid-toned or light?", t)]
        for q in sorted(rng.choice(3, 2, replace=False)):
            records.append((r, f"fashion-mnist-test-{index[r]}", *answers[q]))
    return TaskData(name="fashion-vqa (GENERATED)", modality="image", inputs=images[[rec[0] for rec in records]],
                    task="vqa", labels=pd.DataFrame(records, columns=["row", "image", "question", "answer"]).drop(columns="row"),
                    description="GENERATED templated question/answer pairs about Fashion-MNIST images")


def fortunes_qa() -> TaskData:
    """GENERATED text QA from the fortunes sample (question + context + answer).

    Attributed quotes ("... -- Author", 400 of them) give "Who is quoted here?" with the author as
    answer and the quote (attribution removed) as context; every fifth text also gives "Which
    topic is this text filed under?" answered by its fortunes category (240 rows).
    """
    records = []
    for i, row in enumerate(_topic_rows()):
        match = _ATTRIBUTION.match(row["text"])
        if match:
            records.append(("Who is quoted here?", match["quote"], match["author"].strip()))
        if i % 5 == 0:
            records.append(("Which topic is this text filed under?", row["text"], row["label"]))
    frame = pd.DataFrame(records, columns=["question", "context", "answer"])
    inputs = [f"question: {q} context: {c}" for q, c in zip(frame["question"], frame["context"])]
    return TaskData(name="fortunes-qa (GENERATED)", modality="text", inputs=inputs, task="text_qa", labels=frame,
                    description="GENERATED question/context/answer triples from Debian fortunes")


def _canvases(n_canvases: int, size: int, n_items: tuple[int, int], distinct_classes: bool,
              seed: int, pool: np.ndarray | None = None) -> tuple[np.ndarray, list[list[tuple[int, int, int, int, int]]]]:
    """Black ``size`` x ``size`` canvases with Fashion-MNIST items pasted in non-overlapping grid cells.

    Items are drawn from the rows ``pool`` of the sample (default: all of it). Returns the
    canvases (n, size, size) uint8 and per canvas the items' tight boxes (x1, y1, x2, y2 in pixel
    edges, x2/y2 exclusive) and class ids.
    """
    images, labels, _, _ = _fashion_arrays()
    if pool is not None:
        images, labels = images[pool], labels[pool]
    rng = np.random.default_rng(seed)
    cells = size // 32
    canvases = np.zeros((n_canvases, size, size), dtype=np.uint8)
    boxes: list[list[tuple[int, int, int, int, int]]] = []
    for k in range(n_canvases):
        count = int(rng.integers(n_items[0], n_items[1] + 1))
        if distinct_classes:
            classes = rng.choice(10, count, replace=False)
            picks = [int(rng.choice(np.flatnonzero(labels == c))) for c in classes]
        else:
            picks = rng.choice(len(labels), count, replace=False).tolist()
        placed = []
        for cell, pick in zip(rng.choice(cells * cells, count, replace=False), picks):
            top = int(cell // cells) * 32 + int(rng.integers(0, 5))
            left = int(cell % cells) * 32 + int(rng.integers(0, 5))
            item = images[pick]
            canvases[k, top:top + 28, left:left + 28] = item
            ys, xs = np.nonzero(item)
            placed.append((left + int(xs.min()), top + int(ys.min()), left + int(xs.max()) + 1,
                           top + int(ys.max()) + 1, int(labels[pick])))
        boxes.append(placed)
    return canvases, boxes


def fashion_referring() -> TaskData:
    """GENERATED referring expressions: 300 canvases of 96x96 with 2-3 items of distinct classes;
    the expression names one of them ("the sneaker") and its box is the target."""
    _, _, _, names = _fashion_arrays()
    canvases, boxes = _canvases(300, 96, (2, 3), distinct_classes=True, seed=2)
    rng = np.random.default_rng(3)
    records = []
    for items in boxes:
        x1, y1, x2, y2, c = items[int(rng.integers(len(items)))]
        records.append((f"the {names[c].lower()}", x1, y1, x2, y2, 96, 96))
    return TaskData(name="fashion-referring (GENERATED)", modality="image", inputs=canvases, task="referring",
                    labels=pd.DataFrame(records, columns=["expression", "x1", "y1", "x2", "y2", "width", "height"]),
                    description="GENERATED canvases of 2-3 Fashion-MNIST items; expression names one, box in pixels")


def fashion_detection() -> TaskData:
    """GENERATED detection: 200 canvases of 128x128 with 2-5 items; objects = [x1, y1, x2, y2, class]."""
    _, _, _, names = _fashion_arrays()
    canvases, boxes = _canvases(200, 128, (2, 5), distinct_classes=False, seed=4)
    objects = [[[x1, y1, x2, y2, names[c]] for x1, y1, x2, y2, c in items] for items in boxes]
    return TaskData(name="fashion-detection (GENERATED)", modality="image", inputs=canvases, task="detection",
                    labels=pd.DataFrame({"objects": objects, "width": 128, "height": 128}),
                    class_names=list(names),
                    description="GENERATED canvases of 2-5 Fashion-MNIST items with their boxes and classes")


#: builtin name -> loader. Names of generated samples are flagged in their TaskData name/description.
BUILTIN_DATASETS: dict[str, Callable[[], TaskData]] = {
    "fashion-mnist": fashion_mnist,
    "digits": digits,
    "text-topics": text_topics,
    "fashion-captions": fashion_captions,
    "fashion-vqa": fashion_vqa,
    "fortunes-qa": fortunes_qa,
    "fashion-referring": fashion_referring,
    "fashion-detection": fashion_detection,
}
GENERATED = ("fashion-captions", "fashion-vqa", "fortunes-qa", "fashion-referring", "fashion-detection")


def load_builtin(name: str) -> TaskData:
    """The bundled or generated sample called ``name`` (see :data:`BUILTIN_DATASETS`)."""
    if name not in BUILTIN_DATASETS:
        raise InputError(f"data: unknown builtin dataset {name!r}; expected one of "
                         f"{', '.join('builtin:' + n for n in BUILTIN_DATASETS)}")
    return BUILTIN_DATASETS[name]()
