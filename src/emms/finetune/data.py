"""What a fine-tuning run trains on: one target's train / val (/ test) splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emms._validation import as_class_labels, check_seed
from emms.errors import InputError


@dataclass
class FinetuneData:
    """One target: per split ``(inputs, targets)``; ``test`` may be None (e.g. in :func:`emms.select`).

    ``inputs``: what the backbone reads (uint8 images (n, H, W[, 3]) or a list of paths / texts).
    ``targets``: what the task head reads (:meth:`emms.finetune.heads.TaskHead.targets`); for
    classification, integer labels 0..C-1 and ``class_names`` their names.
    ``fingerprint`` identifies the splits: run records made on other splits are refused.
    """

    name: str
    class_names: list[str]
    train: tuple[object, np.ndarray]
    val: tuple[object, np.ndarray]
    test: tuple[object, np.ndarray] | None
    fingerprint: str
    description: str = ""
    task: str = "classification"

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @classmethod
    def from_benchmark(cls, target) -> FinetuneData:  # noqa: ANN001 - emms.data.fashion_targets.BenchmarkTarget
        """Train / val / test of a :class:`emms.data.fashion_targets.BenchmarkTarget`."""
        return cls(name=target.name, class_names=list(target.definition.class_names),
                   train=target.arrays("train"), val=target.arrays("val"), test=target.arrays("test"),
                   fingerprint=target.fingerprint(("train", "val", "test")), description=target.definition.description)

    @classmethod
    def from_task_data(cls, data, *, val_fraction: float = 0.1, test_fraction: float = 0.2,
                       seed: int = 0) -> FinetuneData:  # noqa: ANN001 - emms.data.TaskData
        """A classification :class:`emms.data.TaskData` (images, or texts for text candidates) split
        stratified into train / val / test (``test_fraction=0``: no test split)."""
        if data.task != "classification" or data.modality not in ("image", "text"):
            raise InputError(f"data: fine-tuning needs an image or text classification dataset, got {data.modality} {data.task}")
        codes, classes = as_class_labels(data.labels["label"].to_numpy(), "labels")
        train, val, test = stratified_rows(codes, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)

        def part(idx: np.ndarray) -> tuple[object, np.ndarray]:
            inputs = data.inputs[idx] if isinstance(data.inputs, np.ndarray) else [data.inputs[i] for i in idx]
            return inputs, codes[idx]

        named = bool(data.class_names) and len(data.class_names) == len(classes)
        names = list(data.class_names) if named else [str(c) for c in classes]
        return cls(name=data.name, class_names=names, train=part(train), val=part(val),
                   test=None if test is None else part(test),
                   fingerprint=f"{data.fingerprint[:16]}-{seed}-{val_fraction}-{test_fraction}",
                   description=getattr(data, "description", ""))


def stratified_rows(codes: np.ndarray, *, val_fraction: float, test_fraction: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Row indices of the stratified train / val / test split of class ``codes`` (test None when
    ``test_fraction`` is 0): the split of :meth:`FinetuneData.from_task_data`."""
    from sklearn.model_selection import train_test_split

    check_split_fractions(val_fraction, test_fraction)
    seed = check_seed(seed)
    rows = np.arange(len(codes))
    try:
        rest, test = (train_test_split(rows, test_size=test_fraction, stratify=codes, random_state=seed)
                      if test_fraction > 0 else (rows, None))
        train, val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction),
                                      stratify=codes[rest], random_state=seed)
    except ValueError as exc:
        raise InputError(f"data: too few rows per class for a stratified split ({exc})") from None
    return train, val, test


def check_split_fractions(val_fraction: float, test_fraction: float) -> None:
    """InputError unless 0 < val_fraction < 1, 0 <= test_fraction < 1 and their sum leaves rows to train on."""
    for name, value, low in (("val_fraction", val_fraction, 0.0), ("test_fraction", test_fraction, -1e-12)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < 1:
            raise InputError(f"{name}: expected a fraction {'strictly ' if low == 0 else ''}between 0 and 1, got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise InputError("val_fraction + test_fraction: expected less than 1, leaving rows to train on")
