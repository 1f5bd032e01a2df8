"""The GENERATED multi-task benchmark (issue 18): captioning, VQA, referring and text QA tasks with
train / val / test splits, built deterministically from the real data shipped in the package.

No caption, VQA, referring or QA dataset can be had offline, so the tasks are GENERATED from real
images and texts; the labels are templates filled from the real content, not human annotations:

* images: the bundled Fashion-MNIST sample (5,000 test-split images, 500 per class). Its rows are
  split per class (seed ``seed``) into disjoint pools — 300 train, 50 val, 150 test per class — so
  no garment image is in two splits. Each split's canvases are drawn from its own pool.
* canvases (default 300 train, 100 val, 200 test per kind): 64 x 64 black images with 1-4 garments
  of distinct classes, each in its own cell of a 2 x 2 grid (position jittered by 0-4 px), built by
  ``emms.data.builtin._canvases``. A garment's
  tone (dark / mid-toned / light) is its mean item brightness against the terciles of the whole
  sample (``builtin._tones``).
* texts: the bundled Debian fortunes sample (1,200 texts, 200 in each of 6 categories), split per
  category into 80 train, 20 val, 60 test (40 per category are left unused).

Kinds (label columns as ``emms.flabels.TASK_COLUMNS``):

``captioning``  1-3 garments; one caption in reading order, e.g. "a dark sandal at the top left and
                a light coat at the bottom right".
``vqa``         1-4 garments; two questions per canvas from counting ("How many items are there?"),
                position ("What is at the top right?" -> class or "nothing"), presence ("Is there a
                bag?") and attribute ("Is the coat dark, mid-toned or light?"). 20 possible answers.
``referring``   1-3 garments; "the <class>" names one, its tight box is the target.
``text_qa``     per fortune one question about the real text: "Which topic is this text filed
                under?" (6 answers) or "Is this text about A or B?" (the true topic and another,
                in random order); the context is the fortune itself.

Every TaskData name ends in "(GENERATED)". :func:`multitask_tasks` is deterministic: the same code
gives the same fingerprints (pinned by tests/test_finetune_heads.py).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from emms._validation import check_positive_int, check_seed
from emms.data.builtin import _brightness, _canvases, _fashion_arrays, _tones, _topic_rows
from emms.data.fashion import FASHION_CLASSES
from emms.data.taskdata import TaskData
from emms.errors import InputError

KINDS = ("captioning", "vqa", "referring", "text_qa")
SPLITS = ("train", "val", "test")
CANVAS = 64
#: Garments per class in each split's image pool, and fortunes per category in each split.
IMAGE_POOL = {"train": 300, "val": 50, "test": 150}
TEXT_POOL = {"train": 80, "val": 20, "test": 60}
#: Default number of canvases (image kinds) per split; text QA uses every fortune of its pool.
DEFAULT_SIZES = {"train": 300, "val": 100, "test": 200}
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
COUNTS = ("one", "two", "three", "four")
ITEMS = {"captioning": (1, 3), "vqa": (1, 4), "referring": (1, 3)}
_SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}
_KIND_SEEDS = {"captioning": 10, "vqa": 20, "referring": 30, "text_qa": 40}


def multitask_tasks(kinds: tuple[str, ...] | list[str] | None = None, *, sizes: dict[str, int] | None = None,
                    seed: int = 0) -> dict[str, dict[str, TaskData]]:
    """``{kind: {split: TaskData}}`` for ``kinds`` (default all of :data:`KINDS`).

    ``sizes``: canvases per split for the image kinds (default :data:`DEFAULT_SIZES`); ``seed``
    shifts every random draw (pool split, canvases, questions).
    """
    kinds = list(KINDS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise InputError(f"kinds: unknown {unknown}; expected some of {list(KINDS)}")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    if set(sizes) != set(SPLITS):
        raise InputError(f"sizes: expected keys {list(SPLITS)}, got {sorted(sizes)}")
    for split, value in sizes.items():
        check_positive_int(value, f"sizes[{split!r}]")
    seed = check_seed(seed)
    return {kind: {split: multitask_task(kind, split, sizes[split], seed=seed) for split in SPLITS} for kind in kinds}


def multitask_task(kind: str, split: str, n: int = 0, *, seed: int = 0) -> TaskData:
    """One split of one kind; ``n`` canvases for the image kinds (ignored by ``text_qa``)."""
    if kind not in KINDS:
        raise InputError(f"kind: expected one of {list(KINDS)}, got {kind!r}")
    if split not in SPLITS:
        raise InputError(f"split: expected one of {list(SPLITS)}, got {split!r}")
    draw = 1000 * seed + 100 * _KIND_SEEDS[kind] + _SPLIT_SEEDS[split]
    if kind == "text_qa":
        return _text_qa(split, seed, draw)
    n = check_positive_int(n or DEFAULT_SIZES[split], "n")
    canvases, items = _canvas_items(kind, split, n, seed, draw)
    frame = {"captioning": _captions, "vqa": _questions, "referring": _expressions}[kind](items, draw)
    inputs = canvases[frame.pop("canvas").to_numpy()]
    return TaskData(name=f"multitask-{kind}-{split} (GENERATED)", modality="image", inputs=inputs, task=kind,
                    labels=frame, class_names=_ANSWERS if kind == "vqa" else None,
                    description=f"GENERATED {kind} on {CANVAS}x{CANVAS} canvases of real Fashion-MNIST garments "
                                f"({split} split, seed {seed}); templated labels")


def image_pool(split: str, seed: int = 0) -> np.ndarray:
    """Rows of the bundled Fashion-MNIST sample in ``split``'s pool (disjoint across splits)."""
    _, labels, _, names = _fashion_arrays()
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in range(len(names))}
    start = {"train": 0, "val": IMAGE_POOL["train"], "test": IMAGE_POOL["train"] + IMAGE_POOL["val"]}[split]
    return np.sort(np.concatenate([rows[start:start + IMAGE_POOL[split]] for rows in order.values()]))


@lru_cache(maxsize=1)
def _sample_brightness() -> np.ndarray:
    images, _, _, _ = _fashion_arrays()
    return _brightness(images)


def _canvas_items(kind: str, split: str, n: int, seed: int, draw: int) -> tuple[np.ndarray, list[list[dict]]]:
    """Canvases and per canvas its items (class name, cell, tone, box) in reading order."""
    _, _, _, names = _fashion_arrays()
    canvases, boxes = _canvases(n, CANVAS, ITEMS[kind], distinct_classes=True, seed=draw, pool=image_pool(split, seed))
    items = []
    for canvas, placed in zip(canvases, boxes):
        crops = np.zeros((len(placed), 28, 28), dtype=np.uint8)
        for j, (x1, y1, x2, y2, _) in enumerate(placed):
            crops[j, : y2 - y1, : x2 - x1] = canvas[y1:y2, x1:x2]
        tones = _tones(_brightness(crops), _sample_brightness())
        row = [{"name": names[c].lower(), "cell": (y1 // 32) * 2 + x1 // 32, "tone": str(t), "box": (x1, y1, x2, y2)}
               for (x1, y1, x2, y2, c), t in zip(placed, tones)]
        items.append(sorted(row, key=lambda item: item["cell"]))
    return canvases, items


def _captions(items: list[list[dict]], draw: int) -> pd.DataFrame:
    rows = []
    for k, canvas in enumerate(items):
        parts = [f"a {it['tone']} {it['name']} at the {POSITIONS[it['cell']]}" for it in canvas]
        text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        rows.append((k, f"canvas-{draw}-{k}", text))
    return pd.DataFrame(rows, columns=["canvas", "image", "caption"])


_CLASS_ANSWERS = tuple(name.lower() for name in FASHION_CLASSES)
_ANSWERS = sorted({*COUNTS, *_CLASS_ANSWERS, "nothing", "yes", "no", "dark", "mid-toned", "light"})


def _questions(items: list[list[dict]], draw: int) -> pd.DataFrame:
    rng = np.random.default_rng(draw + 7)
    rows = []
    for k, canvas in enumerate(items):
        present = {it["name"] for it in canvas}
        by_cell = {it["cell"]: it["name"] for it in canvas}
        for kind in sorted(rng.choice(4, 2, replace=False)):
            if kind == 0:
                question, answer = "How many items are there?", COUNTS[len(canvas) - 1]
            elif kind == 1:
                cell = int(rng.integers(4))
                question, answer = f"What is at the {POSITIONS[cell]}?", by_cell.get(cell, "nothing")
            elif kind == 2:
                pool = sorted(present) if rng.random() < 0.5 else sorted(set(_CLASS_ANSWERS) - present)
                name = pool[int(rng.integers(len(pool)))]
                question, answer = f"Is there a {name}?", "yes" if name in present else "no"
            else:
                item = canvas[int(rng.integers(len(canvas)))]
                question, answer = f"Is the {item['name']} dark, mid-toned or light?", item["tone"]
            rows.append((k, f"canvas-{draw}-{k}", question, answer))
    return pd.DataFrame(rows, columns=["canvas", "image", "question", "answer"])


def _expressions(items: list[list[dict]], draw: int) -> pd.DataFrame:
    rng = np.random.default_rng(draw + 7)
    rows = []
    for k, canvas in enumerate(items):
        item = canvas[int(rng.integers(len(canvas)))]
        rows.append((k, f"the {item['name']}", *item["box"], CANVAS, CANVAS))
    return pd.DataFrame(rows, columns=["canvas", "expression", "x1", "y1", "x2", "y2", "width", "height"])


def _text_qa(split: str, seed: int, draw: int) -> TaskData:
    topics_rows = _topic_rows()
    topics = sorted({r["label"] for r in topics_rows})
    codes = np.array([topics.index(r["label"]) for r in topics_rows])
    start = {"train": 0, "val": TEXT_POOL["train"], "test": TEXT_POOL["train"] + TEXT_POOL["val"]}[split]
    rng = np.random.default_rng(seed)
    order = [rng.permutation(np.flatnonzero(codes == c)) for c in range(len(topics))]
    rows = np.sort(np.concatenate([o[start:start + TEXT_POOL[split]] for o in order]))
    rng = np.random.default_rng(draw + 7)
    records = []
    for r in rows:
        text, topic = topics_rows[r]["text"], topics_rows[r]["label"]
        if rng.random() < 0.5:
            question = "Which topic is this text filed under?"
        else:
            other = [t for t in topics if t != topic][int(rng.integers(len(topics) - 1))]
            first, second = (topic, other) if rng.random() < 0.5 else (other, topic)
            question = f"Is this text about {first} or {second}?"
        records.append((question, text, topic))
    frame = pd.DataFrame(records, columns=["question", "context", "answer"])
    inputs = [f"question: {q} context: {c}" for q, c in zip(frame["question"], frame["context"])]
    return TaskData(name=f"multitask-text_qa-{split} (GENERATED)", modality="text", inputs=inputs, task="text_qa",
                    labels=frame, class_names=topics,
                    description=f"GENERATED questions about real Debian fortunes ({split} split, seed {seed})")
