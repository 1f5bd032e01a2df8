"""Task kinds: labels -> F-label texts (for the foundation text encoders) and native targets.

The EMMS paper (arXiv 2308.06262, Fig. 2a) writes the labels of every task kind as text and
embeds them with several foundation text encoders. :func:`f_label_texts` gives the distinct texts
and, per sample, which text(s) make its F-label; :func:`native_target` gives the numeric target
the baselines use (class ids, 0/1 matrices, real values, boxes). The texts are embedded by
:mod:`emms.flabels.embed`. A new task kind: ``<kind>.py`` here, its columns in
:data:`TASK_COLUMNS` (``_common.py``), its entries in ``_OPTIONS``/``_TEXTS``/``_TARGETS`` below.
"""

from __future__ import annotations

import numpy as np

from emms.errors import InputError
from emms.flabels.kinds._common import (NATIVE_TARGET_KINDS, OPTIONAL_COLUMNS, TASK_COLUMNS, FLabelTexts,
                                 as_label_frame, check_class_names)
from emms.flabels.kinds.boxes import detection_target, detection_texts, referring_target, referring_texts
from emms.flabels.kinds.captioning import captioning_texts
from emms.flabels.kinds.classification import (classification_target, classification_texts, clean_class_name,
                                        multilabel_target, multilabel_texts)
from emms.flabels.kinds.qa import text_qa_texts, vqa_target, vqa_texts
from emms.flabels.kinds.regression import regression_target, regression_texts

TASK_KINDS: tuple[str, ...] = tuple(TASK_COLUMNS)

# Options each kind accepts in f_label_texts (anything else is an InputError naming these).
_OPTIONS: dict[str, tuple[str, ...]] = {
    "classification": ("template", "clean_names"),
    "multilabel": ("template", "clean_names"),
    "regression": ("digits",),
    "captioning": ("layout", "group"),
    "vqa": ("mode",),
    "text_qa": ("with_context",),
    "referring": ("decimals",),
    "detection": ("with_boxes", "decimals"),
}


_TEXTS = {
    "classification": lambda frame, names, options: classification_texts(frame, names, **options),
    "multilabel": lambda frame, names, options: multilabel_texts(frame, names, **options),
    "regression": lambda frame, names, options: regression_texts(frame, **options),
    "captioning": lambda frame, names, options: captioning_texts(frame, **options),
    "vqa": lambda frame, names, options: vqa_texts(frame, names, **options),
    "text_qa": lambda frame, names, options: text_qa_texts(frame, **options),
    "referring": lambda frame, names, options: referring_texts(frame, **options),
    "detection": lambda frame, names, options: detection_texts(frame, names, **options),
}
_TARGETS = {
    "classification": lambda frame, names: classification_target(frame, names)[0],
    "multilabel": multilabel_target,
    "regression": lambda frame, names: regression_target(frame),
    "vqa": lambda frame, names: vqa_target(frame, names)[0],
    "referring": lambda frame, names: referring_target(frame),
    "detection": detection_target,
}


def f_label_texts(task: str, labels: object, class_names: list[str] | None = None, **options) -> FLabelTexts:
    """Write ``labels`` (DataFrame with the :data:`TASK_COLUMNS` of ``task``) as F-label texts.

    Options per kind: classification/multilabel ``template`` (str or list, ``"{}"`` = class name),
    ``clean_names``; regression ``digits``; captioning ``layout`` ("pairs" | "per_image"),
    ``group``; vqa ``mode`` ("qa" | "answer"); text_qa ``with_context``; referring ``decimals``;
    detection ``with_boxes``, ``decimals``. Raises InputError on bad labels or options.
    """
    task = check_task(task)
    unknown = sorted(set(options) - set(_OPTIONS[task]))
    if unknown:
        raise InputError(f"options: {unknown} not accepted for task {task!r}; accepted: {list(_OPTIONS[task])}")
    frame = as_label_frame(labels, task)
    names = check_class_names(class_names)
    return _TEXTS[task](frame, names, options)


def native_target(task: str, labels: object, class_names: list[str] | None = None) -> np.ndarray:
    """The numeric target of ``task`` for the baselines (kind: :data:`NATIVE_TARGET_KINDS`).

    classification: class ids (N,); multilabel: 0/1 (N, C); regression: (N, T) float; vqa: answer
    ids (N,); referring: normalised box (N, 4); detection: class presence 0/1 (N, C).
    Captioning and text QA have none (InputError): their labels are free text, use F-labels.
    """
    task = check_task(task)
    if NATIVE_TARGET_KINDS[task] is None:
        raise InputError(f"task: {task!r} labels are free text and have no native target; use F-labels "
                         "(embed_f_labels) with EMMS or an F-label-aware metric")
    frame = as_label_frame(labels, task)
    names = check_class_names(class_names)
    return _TARGETS[task](frame, names)


def check_task(task: object) -> str:
    """``task`` if it is a known task kind, else InputError listing them."""
    if not isinstance(task, str) or task not in TASK_COLUMNS:
        raise InputError(f"task: expected one of {list(TASK_KINDS)}, got {task!r}")
    return str(task)


__all__ = ["NATIVE_TARGET_KINDS", "OPTIONAL_COLUMNS", "TASK_COLUMNS", "TASK_KINDS", "FLabelTexts", "check_task",
           "clean_class_name", "f_label_texts", "native_target"]
