"""TaskData (any fine-tunable kind) -> the (inputs, raw targets) a head reads, plus its class names.

* classification / text_qa: labels (``label`` / ``answer`` column) -> ids into the class names
  (``data.class_names`` when given, else the sorted distinct values);
* captioning: rows grouped by ``image`` (one row per caption) -> one input per image and an object
  array holding per image the tuple of its captions;
* vqa: a :func:`~emms.finetune.heads.vqa.row_table` of question embeddings (fixed text encoder) and
  answer ids (vocabulary ``data.class_names`` or the sorted answers);
* referring: a row table of expression embeddings and normalised boxes (``emms.flabels.native_target``).

Every targets value is an array with one row per input, so ``len`` and fancy indexing apply.
"""

from __future__ import annotations

import numpy as np

from emms.errors import InputError
from emms.finetune.heads._fusion import DEFAULT_TEXT_ENCODER, text_embeddings
from emms.finetune.heads.vqa import row_table
from emms.flabels.kinds import native_target
from emms.flabels.kinds._common import as_label_frame, text_column

#: The kinds :func:`prepare` handles (each has a head in emms.finetune.heads).
KINDS = ("classification", "captioning", "vqa", "referring", "text_qa")
#: Id of a val / test answer or label the training split never shows (cross-entropy's ignore index).
UNSEEN = -100


def prepare(data, *, text_encoder: str = DEFAULT_TEXT_ENCODER, store=None,  # noqa: ANN001 - TaskData, Store
            class_names: list[str] | None = None) -> tuple[object, object, list[str] | None]:
    """``(inputs, raw_targets, class_names)`` of ``data`` (an :class:`emms.data.TaskData`) for its head.

    ``class_names`` fixes the vocabulary: pass the training split's to encode val / test alike (their
    labels outside it get :data:`UNSEEN`).
    """
    if data.task not in KINDS:
        raise InputError(f"data: fine-tuning has no head for {data.task!r} tasks; it has {', '.join(KINDS)}")
    frame = as_label_frame(data.labels, data.task)
    names = class_names if class_names is not None else data.class_names
    if data.task in ("classification", "text_qa"):
        column = "label" if data.task == "classification" else "answer"
        values = text_column(frame, column)
        names = list(names) if names else sorted(set(values))
        return data.inputs, _ids(values, names, column, class_names is not None), names
    if data.task == "captioning":
        groups: dict[str, list[int]] = {}
        for row, key in enumerate(frame["image"].astype(str) if "image" in frame else map(str, range(len(frame)))):
            groups.setdefault(key, []).append(row)
        captions = text_column(frame, "caption")
        first = np.array([rows[0] for rows in groups.values()], dtype=np.int64)
        inputs = data.inputs[first] if isinstance(data.inputs, np.ndarray) else [data.inputs[i] for i in first]
        references = np.empty(len(groups), dtype=object)
        references[:] = [tuple(captions[r] for r in rows) for rows in groups.values()]
        return inputs, references, None
    if data.task == "vqa":
        answers = text_column(frame, "answer")
        names = list(names) if names else sorted(set(answers))
        questions = text_embeddings(text_column(frame, "question"), text_encoder, store)
        ids = _ids(answers, names, "answer", class_names is not None)
        return data.inputs, row_table("question", questions, "answer", ids), names
    expressions = text_embeddings(text_column(frame, "expression"), text_encoder, store)
    return data.inputs, row_table("expression", expressions, "box", native_target("referring", frame)), None


def _ids(values: list[str], names: list[str], column: str, fixed: bool) -> np.ndarray:
    """Ids of ``values`` in ``names``. With a ``fixed`` vocabulary (val / test encoded with the training
    split's), a value it lacks gets :data:`UNSEEN`: never predicted, so always counted wrong."""
    position = {n: i for i, n in enumerate(names)}
    missing = sorted({v for v in values if v not in position})
    if missing and not fixed:
        raise InputError(f"labels[{column!r}]: {missing[:5]} not among the {len(names)} class names")
    return np.array([position.get(v, UNSEEN) for v in values], dtype=np.int64)


def split_rows(data, *, val_fraction: float = 0.1, test_fraction: float = 0.2,  # noqa: ANN001 - TaskData
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Row indices of ``data`` in the train / val / test split :func:`finetune_data` makes (test None
    when ``test_fraction`` is 0), so callers can score exactly the rows it trains on.

    Classification: stratified (:func:`emms.finetune.data.stratified_rows`). Other kinds: at random
    (``numpy.random.default_rng(seed)``) by image, so rows that share an ``image`` id (several
    captions or questions of one picture) stay in one split.
    """
    from emms.finetune.data import check_split_fractions, stratified_rows

    if data.task not in KINDS:
        raise InputError(f"data: fine-tuning has no head for {data.task!r} tasks; it has {', '.join(KINDS)}")
    if data.task == "classification":
        from emms._validation import as_class_labels

        codes, _ = as_class_labels(data.labels["label"].to_numpy(), "labels")
        return stratified_rows(codes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    check_split_fractions(val_fraction, test_fraction)
    frame = as_label_frame(data.labels, data.task)
    keys = frame["image"].astype(str).to_numpy() if "image" in frame else np.arange(len(frame)).astype(str)
    groups, codes = np.unique(keys, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test, n_val = int(round(test_fraction * len(groups))), max(1, int(round(val_fraction * len(groups))))
    if len(groups) - n_test - n_val < 2:
        raise InputError(f"data: {len(groups)} images are too few for a train / val / test split")
    rank = np.empty(len(groups), dtype=np.int64)
    rank[order] = np.arange(len(groups))
    part = np.where(rank[codes] < n_test, 2, np.where(rank[codes] < n_test + n_val, 1, 0))
    train, val, test = (np.flatnonzero(part == k) for k in range(3))
    return train, val, test if len(test) else None


def finetune_data(data, *, val_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0,  # noqa: ANN001
                  text_encoder: str = DEFAULT_TEXT_ENCODER, store=None):  # noqa: ANN001, ANN201 - FinetuneData
    """A :class:`emms.data.TaskData` of any fine-tunable kind split into train / val / test
    (:func:`split_rows`) and prepared for its head (``test_fraction=0``: no test split).

    Classification (images, or texts for the text candidates) is :meth:`FinetuneData.from_task_data`.
    """
    from emms.finetune.data import FinetuneData

    if data.task == "classification":
        return FinetuneData.from_task_data(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    rows = split_rows(data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    splits = [None if part is None else data.take(part) for part in rows]
    return from_splits(*splits, name=data.name, text_encoder=text_encoder, store=store,
                       fingerprint=f"{data.fingerprint[:16]}-{seed}-{val_fraction}-{test_fraction}")


def from_splits(train, val, test=None, *, name: str, fingerprint: str | None = None,  # noqa: ANN001 - TaskData
                text_encoder: str = DEFAULT_TEXT_ENCODER, store=None):  # noqa: ANN001, ANN201 - FinetuneData
    """A :class:`~emms.finetune.data.FinetuneData` from given train / val / (test) TaskData of one kind:
    the training split fixes the vocabulary. ``fingerprint`` defaults to the splits' own."""
    from emms.finetune.data import FinetuneData

    if any(part is not None and part.task != train.task for part in (val, test)):
        raise InputError("val, test: expected the same task kind as train")
    train_inputs, train_targets, names = prepare(train, text_encoder=text_encoder, store=store)
    val_part, test_part = (None if part is None else
                           prepare(part, text_encoder=text_encoder, store=store, class_names=names)[:2]
                           for part in (val, test))
    if fingerprint is None:
        fingerprint = "-".join(part.fingerprint[:12] for part in (train, val, test) if part is not None)
    return FinetuneData(name=name, class_names=list(names or []), train=(train_inputs, train_targets), val=val_part,
                        test=test_part, fingerprint=fingerprint, description=getattr(train, "description", ""),
                        task=train.task)
