"""TaskData (any fine-tunable kind) -> the (inputs, raw targets) a head reads, plus its class names.

* classification / text_qa: labels (``label`` / ``answer`` column) -> ids into the class names
  (``data.class_names`` when given, else the sorted distinct values);
* captioning: rows grouped by ``image`` (one row per caption) -> one input per image with the list
  of its captions;
* vqa: question embeddings by the fixed text encoder + answer ids (vocabulary ``data.class_names`` or
  the sorted answers);
* referring: expression embeddings + normalised boxes (``emms.labels.native_target``).
"""

from __future__ import annotations

import numpy as np

from emms.errors import InputError
from emms.finetune.heads._fusion import DEFAULT_TEXT_ENCODER, text_embeddings
from emms.labels import native_target
from emms.labels._common import as_label_frame, text_column


def prepare(data, *, text_encoder: str = DEFAULT_TEXT_ENCODER, store=None,  # noqa: ANN001 - TaskData, Store
            class_names: list[str] | None = None) -> tuple[object, object, list[str] | None]:
    """``(inputs, raw_targets, class_names)`` of ``data`` (an :class:`emms.data.TaskData`) for its head.

    ``class_names`` overrides the vocabulary (pass the training split's to encode val/test alike).
    """
    frame = as_label_frame(data.labels, data.task)
    names = class_names if class_names is not None else data.class_names
    if data.task in ("classification", "text_qa"):
        column = "label" if data.task == "classification" else "answer"
        values = text_column(frame, column)
        names = list(names) if names else sorted(set(values))
        return data.inputs, _ids(values, names, column), names
    if data.task == "captioning":
        groups: dict[str, list[int]] = {}
        for row, key in enumerate(frame["image"].astype(str) if "image" in frame else map(str, range(len(frame)))):
            groups.setdefault(key, []).append(row)
        captions = text_column(frame, "caption")
        first = np.array([rows[0] for rows in groups.values()], dtype=np.int64)
        inputs = data.inputs[first] if isinstance(data.inputs, np.ndarray) else [data.inputs[i] for i in first]
        return inputs, [[captions[r] for r in rows] for rows in groups.values()], None
    if data.task == "vqa":
        answers = text_column(frame, "answer")
        names = list(names) if names else sorted(set(answers))
        questions = text_embeddings(text_column(frame, "question"), text_encoder, store)
        return data.inputs, {"question": questions, "answer": _ids(answers, names, "answer")}, names
    if data.task == "referring":
        expressions = text_embeddings(text_column(frame, "expression"), text_encoder, store)
        return data.inputs, {"expression": expressions, "box": native_target("referring", frame)}, None
    raise InputError(f"data: fine-tuning has no head for {data.task!r} tasks; "
                     "it has classification, captioning, vqa, referring and text_qa")


def _ids(values: list[str], names: list[str], column: str) -> np.ndarray:
    position = {n: i for i, n in enumerate(names)}
    missing = sorted({v for v in values if v not in position})
    if missing:
        raise InputError(f"labels[{column!r}]: {missing[:5]} not among the {len(names)} training classes")
    return np.array([position[v] for v in values], dtype=np.int64)
