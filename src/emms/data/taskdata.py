"""TaskData (inputs + task labels), its fingerprint, task inference and seeded subsampling."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from emms._validation import check_positive_int, check_seed
from emms.errors import InputError

TASKS = ("classification", "multilabel", "regression", "captioning", "vqa", "text_qa", "referring", "detection")
MODALITIES = ("image", "text")
#: Label columns the reader fills itself (image sizes), so a manifest need not hold them.
READER_FILLED_COLUMNS = ("width", "height")


@dataclass
class TaskData:
    """A dataset as arrays: model inputs plus one labels row per input.

    ``inputs``: uint8 images (N, H, W) or (N, H, W, 3), a list of N image paths, or a list of N
    texts. ``labels``: a DataFrame of N rows with the task's columns (``emms.flabels.TASK_COLUMNS``);
    for captioning and VQA several rows may show the same image (one row per caption or question).
    ``fingerprint``: sha256 over the inputs and labels, see :func:`fingerprint`.
    ``inputs_fingerprint``: sha256 over the modality and inputs only (features are keyed on it, so
    the same images under another label set reuse their cached features), see :func:`inputs_fingerprint`.
    """

    name: str
    modality: str
    inputs: np.ndarray | list
    task: str
    labels: pd.DataFrame
    class_names: list[str] | None = None
    fingerprint: str = field(default="")
    description: str = ""
    inputs_fingerprint: str = field(default="")

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise InputError(f"modality: expected one of {list(MODALITIES)}, got {self.modality!r}")
        if self.task not in TASKS:
            raise InputError(f"task: expected one of {list(TASKS)}, got {self.task!r}")
        if len(self.inputs) != len(self.labels):
            raise InputError(f"labels: expected one row per input ({len(self.inputs)}), got {len(self.labels)} rows")
        if isinstance(self.inputs, np.ndarray) and (self.inputs.dtype != np.uint8 or self.inputs.ndim not in (3, 4)):
            raise InputError(f"inputs: expected uint8 images (N, H, W[, 3]), got {self.inputs.dtype} {self.inputs.shape}")
        self.labels = self.labels.reset_index(drop=True)
        if not self.fingerprint or not self.inputs_fingerprint:  # one pass over the inputs feeds both digests
            full, inputs_only = _fingerprints(self.modality, self.task, self.inputs, self.labels, self.class_names)
            self.fingerprint = self.fingerprint or full
            self.inputs_fingerprint = self.inputs_fingerprint or inputs_only

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, rows: np.ndarray, name: str | None = None) -> TaskData:
        """A new TaskData holding ``rows`` (in the given order), with its own fingerprint."""
        rows = np.asarray(rows, dtype=np.int64)
        inputs = self.inputs[rows] if isinstance(self.inputs, np.ndarray) else [self.inputs[i] for i in rows]
        return replace(self, name=name or self.name, inputs=inputs, labels=self.labels.iloc[rows], fingerprint="",
                       inputs_fingerprint="")


def fingerprint(modality: str, task: str, inputs: np.ndarray | list, labels: pd.DataFrame,
                class_names: list[str] | None) -> str:
    """sha256 (hex) over the modality, task, inputs, labels and class names.

    Image arrays contribute dtype, shape and raw bytes; texts their UTF-8 bytes; image paths
    their absolute path, size and modification time (``st_mtime_ns``) rather than their content,
    so fingerprinting a large folder is cheap — touching or replacing a file changes it. Labels
    contribute their column names and values as canonical JSON.
    """
    return _fingerprints(modality, task, inputs, labels, class_names)[0]


def inputs_fingerprint(modality: str, inputs: np.ndarray | list) -> str:
    """sha256 (hex) over the modality and the inputs only (hashed as in :func:`fingerprint`), not the labels."""
    digest = hashlib.sha256(json.dumps([modality]).encode())
    _hash_inputs(modality, inputs, (digest,))
    return digest.hexdigest()


def _fingerprints(modality: str, task: str, inputs: np.ndarray | list, labels: pd.DataFrame,
                  class_names: list[str] | None) -> tuple[str, str]:
    """(:func:`fingerprint`, :func:`inputs_fingerprint`) from one pass over the inputs."""
    full = hashlib.sha256(json.dumps([modality, task, class_names]).encode())
    inputs_only = hashlib.sha256(json.dumps([modality]).encode())
    _hash_inputs(modality, inputs, (full, inputs_only))
    table = {"columns": [str(c) for c in labels.columns], "rows": labels.to_numpy(dtype=object).tolist()}
    full.update(json.dumps(table, default=_json_value, sort_keys=True).encode())
    return full.hexdigest(), inputs_only.hexdigest()


def _hash_inputs(modality: str, inputs: np.ndarray | list, digests: tuple) -> None:
    """Feed the inputs (array bytes, texts, or image paths' path/size/mtime) to every digest."""
    if isinstance(inputs, np.ndarray):
        parts = [f"{inputs.dtype.str}{inputs.shape}".encode(), np.ascontiguousarray(inputs)]
    elif modality == "text":
        encoded = (str(text).encode("utf-8") for text in inputs)
        parts = (len(e).to_bytes(8, "little") + e for e in encoded)
    else:
        stats = ((path, os.stat(path)) for path in inputs)
        parts = (json.dumps([os.path.abspath(p), st.st_size, st.st_mtime_ns]).encode() for p, st in stats)
    for part in parts:
        for digest in digests:
            digest.update(part)


def infer_task(columns: list[str], modality: str) -> str:
    """The task kind whose label columns ``columns`` hold (most specific first)."""
    names = set(columns)
    if "objects" in names:
        return "detection"
    if "expression" in names:
        return "referring"
    if {"question", "answer"} <= names:
        return "vqa" if modality == "image" else "text_qa"
    if "caption" in names:
        return "captioning"
    if "labels" in names:
        return "multilabel"
    if "target" in names or any(str(c).startswith("target_") for c in columns):
        return "regression"
    if "label" in names:
        return "classification"
    from emms.flabels.kinds import TASK_COLUMNS

    expected = "; ".join(f"{task}: {', '.join(cols)}" for task, cols in TASK_COLUMNS.items())
    raise InputError(f"task: cannot infer the task kind from columns {columns}; expected label columns "
                     f"({expected}) or pass task=...")


def missing_label_columns(task: str, columns: list[str]) -> list[str]:
    """The label columns ``task`` needs that ``columns`` lacks (image sizes excepted: readers fill them)."""
    from emms.flabels.kinds import TASK_COLUMNS
    from emms.flabels.kinds._common import target_columns

    if task not in TASK_COLUMNS:
        raise InputError(f"task: expected one of {list(TASK_COLUMNS)}, got {task!r}")
    if task == "regression":
        return [] if target_columns(pd.DataFrame(columns=columns)) else ["target (or target_*)"]
    return [c for c in TASK_COLUMNS[task] if c not in columns and c not in READER_FILLED_COLUMNS]


def subsample(data: TaskData, max_samples: int | None, seed: int = 0) -> TaskData:
    """A seeded subsample of at most ``max_samples`` rows, keeping the original row order.

    Classification is stratified: every class keeps at least one row and the rest is shared in
    proportion to class sizes (largest remainders). Captioning/VQA rows showing the same image
    (same ``image`` column value) are kept or dropped together, so ``max_samples`` counts images
    there. Other tasks: a uniform sample without replacement.
    """
    seed = check_seed(seed)
    if max_samples is None:
        return data
    max_samples = check_positive_int(max_samples, "max_samples")
    rng = np.random.default_rng(seed)
    if data.task == "classification":
        codes, classes = pd.factorize(data.labels["label"].astype(str), sort=True)
        if len(data) <= max_samples:
            return data
        if max_samples < len(classes):
            raise InputError(f"max_samples: expected at least {len(classes)} (one per class) to keep every class, "
                             f"got {max_samples}")
        rows = _stratified_rows(codes, max_samples, rng)
    else:
        groups = (pd.factorize(data.labels["image"].astype(str))[0] if "image" in data.labels.columns
                  else np.arange(len(data)))
        n_groups = int(groups.max()) + 1
        if n_groups <= max_samples:
            return data
        keep = rng.choice(n_groups, max_samples, replace=False)
        rows = np.flatnonzero(np.isin(groups, keep))
    return data.take(np.sort(rows))


def _stratified_rows(codes: np.ndarray, n_total: int, rng: np.random.Generator) -> np.ndarray:
    counts = np.bincount(codes)
    extra = n_total - counts.size  # one row per class first, the rest in proportion to what is left
    share = (counts - 1) / max(int((counts - 1).sum()), 1) * extra
    quota = 1 + np.floor(share).astype(np.int64)
    remainder_order = np.argsort(-(share - np.floor(share)), kind="stable")
    quota[remainder_order[: n_total - int(quota.sum())]] += 1
    return np.concatenate([rng.choice(np.flatnonzero(codes == c), quota[c], replace=False)
                           for c in range(counts.size)])


def _json_value(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
