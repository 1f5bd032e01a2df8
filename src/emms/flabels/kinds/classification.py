"""Classification and multi-label classification: class names -> F-label texts, class ids -> targets.

A class name is cleaned (``apartment_building/outdoor`` -> ``apartment building outdoor``) and
optionally put into one or more prompt templates (``"a photo of a {}."``); with several templates
a class's F-label is the mean of its templates' embeddings. The paper's official code embeds the
raw names with no template (see docs/f-labels.md).

Multi-label: each positive class is embedded once and a sample's F-label is the **mean of its
positive classes' embeddings** (a sample with no positive class is rejected).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from emms.errors import EmmsWarning, InputError
from emms.flabels.kinds._common import (FLabelTexts, _is_missing, check_class_names, distinct, padded_index,
                                 parse_list_cell)

_SEPARATORS = re.compile(r"[_/\\]+")


def clean_class_name(name: str) -> str:
    """Underscores and slashes become spaces; runs of whitespace collapse; ends are stripped."""
    return " ".join(_SEPARATORS.sub(" ", str(name)).split())


def class_texts(class_names: Sequence[str], *, template: str | Sequence[str] | None = None,
                clean_names: bool = True) -> tuple[list[str], np.ndarray]:
    """The distinct texts for the classes and a (C,) or (C, T) index into them (T templates)."""
    names = [clean_class_name(n) if clean_names else str(n) for n in class_names]
    templates = _check_templates(template)
    if templates is None:
        return distinct(names)
    texts, index = distinct([t.replace("{}", n) for n in names for t in templates])
    return texts, index.reshape(len(names), len(templates))


def classification_target(frame: pd.DataFrame, class_names: list[str] | None) -> tuple[np.ndarray, list[str]]:
    """Class ids (N,) int64 into ``class_names`` (given, or the sorted distinct labels) and the names.

    With ``class_names``, a label is either one of the names or an integer id in 0..C-1.
    """
    values = frame["label"].tolist()
    for row, value in enumerate(values):
        if _is_missing(value) or (isinstance(value, str) and not value.strip()):
            raise InputError(f"labels['label']: row {row} is missing; expected a class name or id")
    if class_names is None:
        classes, ids = np.unique(np.asarray([_plain(v) for v in values]), return_inverse=True)
        names = [str(c) for c in classes]
        if classes.dtype.kind in "iuf":
            warnings.warn("labels: integer class ids without class_names; the F-label texts are the bare "
                          "numbers (pass class_names for meaningful label embeddings)", EmmsWarning, stacklevel=3)
        return ids.astype(np.int64).reshape(-1), names
    return np.array([_class_id(v, class_names, "label", row) for row, v in enumerate(values)], dtype=np.int64), class_names


def classification_texts(frame: pd.DataFrame, class_names: list[str] | None, *,
                         template: str | Sequence[str] | None = None, clean_names: bool = True) -> FLabelTexts:
    """One text (or one per template) per class; each sample points at its class's text(s)."""
    ids, names = classification_target(frame, class_names)
    texts, class_index = class_texts(names, template=template, clean_names=clean_names)
    index = class_index[ids]
    return FLabelTexts(texts=texts, index=index, combine="mean" if index.ndim == 2 else "single")


def multilabel_positives(frame: pd.DataFrame, class_names: list[str] | None) -> tuple[list[list[int]], list[str]]:
    """Each sample's positive class ids (sorted, distinct) and the class names.

    A cell is a list of names/ids, a JSON list string, or an ``"a|b"`` string.
    """
    cells = [parse_list_cell(v, "labels", row, separator="|") for row, v in enumerate(frame["labels"].tolist())]
    for row, cell in enumerate(cells):
        if not cell:
            raise InputError(f"labels['labels']: row {row} has no positive class; expected at least one")
    if class_names is None:
        class_names = sorted({str(_plain(v)) for cell in cells for v in cell})
        return [sorted({class_names.index(str(_plain(v))) for v in cell}) for cell in cells], class_names
    return [sorted({_class_id(v, class_names, "labels", row) for v in cell}) for row, cell in enumerate(cells)], class_names


def multilabel_target(frame: pd.DataFrame, class_names: list[str] | None) -> np.ndarray:
    """A 0/1 indicator matrix (N, C) int64."""
    positives, names = multilabel_positives(frame, class_names)
    out = np.zeros((len(positives), len(names)), dtype=np.int64)
    for row, ids in enumerate(positives):
        out[row, ids] = 1
    return out


def multilabel_texts(frame: pd.DataFrame, class_names: list[str] | None, *,
                     template: str | Sequence[str] | None = None, clean_names: bool = True) -> FLabelTexts:
    """Per-class texts; a sample's F-label is the mean over its positive classes (and templates)."""
    positives, names = multilabel_positives(frame, class_names)
    texts, class_index = class_texts(names, template=template, clean_names=clean_names)
    per_class = class_index.reshape(len(names), -1)
    groups = [per_class[ids].reshape(-1).tolist() for ids in positives]
    return FLabelTexts(texts=texts, index=padded_index(groups), combine="mean")


def _class_id(value: object, class_names: list[str], column: str, row: int) -> int:
    value = _plain(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if 0 <= int(value) < len(class_names):
            return int(value)
        raise InputError(f"labels[{column!r}]: row {row} has class id {value}, outside 0..{len(class_names) - 1} "
                         f"({len(class_names)} class_names)")
    name = str(value)
    try:
        return class_names.index(name)
    except ValueError:
        shown = ", ".join(repr(n) for n in class_names[:8]) + (", ..." if len(class_names) > 8 else "")
        raise InputError(f"labels[{column!r}]: row {row} has unknown class {name!r}; expected one of "
                         f"class_names ({shown}) or an id in 0..{len(class_names) - 1}") from None


def _plain(value: object) -> object:
    """Integer-valued floats (as pandas reads ids next to NaN) become ints; numpy scalars become Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _check_templates(template: str | Sequence[str] | None) -> list[str] | None:
    if template is None:
        return None
    templates = [template] if isinstance(template, str) else list(template)
    if not templates:
        raise InputError("template: expected a template string like 'a photo of a {}.' or a non-empty list of them")
    for t in templates:
        if not isinstance(t, str) or t.count("{}") != 1:
            raise InputError(f"template: expected exactly one '{{}}' placeholder for the class name, got {t!r}")
    return templates


__all__ = ["check_class_names", "class_texts", "classification_target", "classification_texts",
           "clean_class_name", "multilabel_target", "multilabel_texts"]
