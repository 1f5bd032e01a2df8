"""Pieces shared by the task kinds: the label columns, :class:`FLabelTexts`, column checks."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from emms.errors import InputError

#: Label columns per task kind (one row per sample; ``target_*`` means any number of such columns).
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "classification": ("label",),
    "multilabel": ("labels",),
    "regression": ("target",),
    "captioning": ("caption",),
    "vqa": ("question", "answer"),
    "text_qa": ("question", "answer"),
    "referring": ("expression", "x1", "y1", "x2", "y2", "width", "height"),
    "detection": ("objects", "width", "height"),
}
#: Optional columns a task kind reads when present.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {"text_qa": ("context",), "captioning": ("image",)}
#: The native (non-text) target each task kind gives the baselines, as a registry target kind
#: (``emms.metrics.registry.TARGET_KINDS``); None where the labels are free text only.
NATIVE_TARGET_KINDS: dict[str, str | None] = {
    "classification": "classes",
    "multilabel": "multilabel",
    "regression": "real",
    "captioning": None,
    "vqa": "classes",
    "text_qa": None,
    "referring": "real",
    "detection": "multilabel",
}


@dataclass
class FLabelTexts:
    """The texts a task's labels are written as, and how samples map onto them.

    ``texts``: the distinct texts (each is embedded once). ``index``: (N,) row of ``texts`` per
    sample, or (N, m) rows padded with -1 whose embeddings are averaged (``combine == "mean"``).
    ``rows``: (N,) the labels row whose input each sample uses (differs from 0..N-1 only when
    several label rows are merged into one sample, e.g. captions averaged per image).
    """

    texts: list[str]
    index: np.ndarray
    combine: str = "single"
    rows: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64)
        if self.rows is None:
            self.rows = np.arange(self.index.shape[0], dtype=np.int64)

    @property
    def n_samples(self) -> int:
        return int(self.index.shape[0])

    def expand(self, text_embeddings: np.ndarray) -> np.ndarray:
        """Per-sample embeddings (N, L) from the embeddings of ``texts`` (n_texts, L).

        ``single``: row lookup. ``mean``: the mean over each sample's non-negative index entries,
        computed as a sparse (N, n_texts) averaging matrix times the text embeddings.
        """
        emb = np.asarray(text_embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(self.texts):
            raise InputError(f"text_embeddings: expected shape ({len(self.texts)}, L), got {emb.shape}")
        if self.index.ndim == 1:
            return emb[self.index]
        valid = self.index >= 0
        counts = valid.sum(axis=1)
        sample, slot = np.nonzero(valid)
        weights = sp.csr_matrix((1.0 / counts[sample], (sample, self.index[sample, slot])),
                                shape=(self.index.shape[0], len(self.texts)))
        return np.asarray(weights @ emb.astype(np.float64)).astype(emb.dtype, copy=False)


def as_label_frame(labels: object, task: str) -> pd.DataFrame:
    """Return ``labels`` as a DataFrame holding the task's required columns (InputError otherwise).

    Accepts a DataFrame, a mapping of column -> values, or (classification only) a 1-D array of
    class names or ids, read as the ``label`` column.
    """
    if isinstance(labels, pd.DataFrame):
        frame = labels
    elif isinstance(labels, Mapping):
        try:
            frame = pd.DataFrame(dict(labels))
        except ValueError as exc:
            raise InputError(f"labels: could not be read as columns ({exc})") from None
    elif task == "classification" and isinstance(labels, (np.ndarray, pd.Series, list, tuple)):
        arr = np.asarray(labels)
        if arr.ndim != 1:
            raise InputError(f"labels: expected a 1-D array of class names or ids, got shape {arr.shape}")
        frame = pd.DataFrame({"label": arr})
    else:
        raise InputError(f"labels: expected a pandas DataFrame with columns {list(TASK_COLUMNS[task])}, "
                         f"got {type(labels).__name__}")
    required = list(TASK_COLUMNS[task])
    if task == "regression":
        required = [] if target_columns(frame) else ["target"]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputError(f"labels: task {task!r} needs column(s) {missing} (expected {list(TASK_COLUMNS[task])}); "
                         f"got columns {list(frame.columns)}")
    if len(frame) == 0:
        raise InputError("labels: expected at least one row, got an empty table")
    return frame.reset_index(drop=True)


def target_columns(frame: pd.DataFrame) -> list[str]:
    """The regression target columns: ``target`` and/or ``target_*``, in table order."""
    return [c for c in frame.columns if isinstance(c, str) and (c == "target" or c.startswith("target_"))]


def text_column(frame: pd.DataFrame, column: str) -> list[str]:
    """The column as stripped strings; a missing (NaN/None) or blank entry is an InputError."""
    out = []
    for row, value in enumerate(frame[column].tolist()):
        if _is_missing(value) or not str(value).strip():
            raise InputError(f"labels[{column!r}]: row {row} is missing or blank; expected a non-empty text")
        out.append(" ".join(str(value).split()))
    return out


def numeric_column(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The column as finite float64; a missing or non-numeric entry is an InputError naming the row."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        row = int(bad[0])
        raise InputError(f"labels[{column!r}]: row {row} is {frame[column].iloc[row]!r}; expected a finite number")
    return values


def parse_list_cell(value: object, column: str, row: int, *, separator: str | None = None) -> list:
    """A list-valued cell: a list/tuple/array, a JSON list string, or (``separator``) ``"a|b"``."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise InputError(f"labels[{column!r}]: row {row} is not valid JSON ({exc})") from None
            if isinstance(parsed, list):
                return parsed
        elif separator is not None:
            return [part.strip() for part in text.split(separator) if part.strip()]
    if _is_missing(value):
        return []
    hint = f", a JSON list or an {separator.join('ab')!r} string" if separator else " or a JSON list string"
    raise InputError(f"labels[{column!r}]: row {row} is {value!r}; expected a list{hint}")


def check_class_names(class_names: object) -> list[str] | None:
    """Class names as a list of distinct non-blank strings (or None)."""
    if class_names is None:
        return None
    if isinstance(class_names, str) or not isinstance(class_names, (Sequence, np.ndarray, pd.Index)):
        raise InputError(f"class_names: expected a list of strings, got {type(class_names).__name__}")
    names = [str(n) for n in class_names]
    if not names or any(not n.strip() for n in names):
        raise InputError("class_names: expected a non-empty list of non-blank names")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InputError(f"class_names: {name!r} appears twice; expected distinct names")
        seen.add(name)
    return names


def distinct(texts: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in order of first appearance and the (len(texts),) index into them."""
    position: dict[str, int] = {}
    index = np.fromiter((position.setdefault(t, len(position)) for t in texts), dtype=np.int64, count=len(texts))
    return list(position), index


def padded_index(groups: Sequence[Sequence[int]]) -> np.ndarray:
    """(len(groups), max group size) int64 array of the groups' entries, padded with -1."""
    width = max((len(g) for g in groups), default=0)
    out = np.full((len(groups), max(width, 1)), -1, dtype=np.int64)
    for i, group in enumerate(groups):
        out[i, : len(group)] = group
    return out


def format_box(box: Sequence[float], decimals: int) -> str:
    """``[x1, y1, x2, y2]`` with ``decimals`` digits after the point."""
    return "[" + ", ".join(f"{v:.{decimals}f}" for v in box) + "]"


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return False
