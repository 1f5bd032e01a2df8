"""Datasets -> :class:`TaskData` (model inputs + task labels).

``load_dataset(source)`` reads ``builtin:NAME`` samples, image folders (class sub-folders), CSV /
JSONL / Parquet manifests and folders saved by Hugging Face ``datasets`` (``save_to_disk``), then
optionally takes a seeded, stratified subsample. Fashion-MNIST: ``fashion.py`` (the full dataset's
reader) and ``fashion_targets.py`` (the benchmark's relabelled targets with fixed splits, which
``emms finetune --data benchmark`` trains on). A new reader goes in ``readers.py``, a bundled sample in ``builtin.py``.
"""

from __future__ import annotations

from pathlib import Path

from emms.data.builtin import BUILTIN_DATASETS, GENERATED, load_builtin
from emms.data.readers import (MANIFEST_SUFFIXES, is_hf_dataset_dir, read_hf_dataset, read_hf_in_memory,
                               read_image_folder, read_manifest, read_table)
from emms.data.taskdata import TASKS, TaskData, fingerprint, subsample
from emms.errors import InputError

__all__ = ["BUILTIN_DATASETS", "GENERATED", "TASKS", "TaskData", "as_task_data", "column_overrides", "fingerprint",
           "load_dataset", "subsample"]

#: The label column ``label_column=`` stands for, per task (tasks with several label columns have none).
_LABEL_COLUMN = {"classification": "label", "multilabel": "labels", "regression": "target", "captioning": "caption"}


def column_overrides(task: str | None = None, text_column: str | None = None,
                     label_column: str | None = None) -> dict[str, str]:
    """``{user's column: the column EMMS reads}`` for a table whose input or label column has another
    name: ``text_column`` -> ``text``; ``label_column`` -> the task's label column (``label`` for
    classification or an unstated task, ``labels``, ``target``, ``caption``)."""
    out = {}
    if text_column is not None:
        out[text_column] = "text"
    if label_column is not None:
        if task is not None and task not in _LABEL_COLUMN:
            raise InputError(f"label_column: a {task!r} task has several label columns; rename them in the data "
                             f"(label_column= works for {', '.join(_LABEL_COLUMN)})")
        if label_column in out:
            raise InputError(f"label_column: {label_column!r} is also the text column")
        out[label_column] = _LABEL_COLUMN.get(task or "classification")
    return out


def as_task_data(data, *, task: str | None = None, max_samples: int | None = None, seed: int = 0,
                 text_column: str | None = None, label_column: str | None = None) -> TaskData:
    """``data`` as a TaskData: a TaskData itself, an in-memory pandas DataFrame or ``datasets.Dataset``
    (columns as in a manifest; image paths in a DataFrame are relative to the working folder), or
    anything :func:`load_dataset` reads; subsampled to ``max_samples`` (seeded, stratified).
    ``text_column`` / ``label_column`` name the input / label column when it is not ``text`` / ``label``."""
    import pandas as pd

    columns = column_overrides(task, text_column, label_column)
    if isinstance(data, TaskData):
        if columns:
            raise InputError("text_column: a TaskData has no columns to rename")
        loaded = data
    elif isinstance(data, pd.DataFrame):
        loaded = read_table(data, task, columns=columns)
    elif type(data).__module__.split(".")[0] == "datasets" and hasattr(data, "column_names"):
        if not hasattr(data, "features"):
            raise InputError(f"data: a {type(data).__name__} holds several splits; pass one split (e.g. data['train'])")
        loaded = read_hf_in_memory(data, task, columns=columns)
    elif isinstance(data, (str, Path)):
        return load_dataset(data, task=task, max_samples=max_samples, seed=seed, columns=columns)
    else:
        raise InputError(f"data: expected a dataset name or path, a pandas DataFrame, a datasets.Dataset or a "
                         f"TaskData, got {type(data).__name__}")
    if task is not None and task != loaded.task:
        raise InputError(f"task: the data holds a {loaded.task!r} task, not {task!r}")
    return subsample(loaded, max_samples, seed)


def load_dataset(source: str | Path, *, task: str | None = None, max_samples: int | None = None, seed: int = 0,
                 image_root: str | Path | None = None, columns: dict[str, str] | None = None) -> TaskData:
    """Load ``source`` as a TaskData, optionally subsampled to ``max_samples`` (seeded, stratified).

    ``source``: ``builtin:NAME``; a folder of class sub-folders of images; a ``.csv``, ``.jsonl``
    or ``.parquet`` manifest; a folder written by ``datasets`` ``save_to_disk`` (``PATH:SPLIT``
    picks a split of a DatasetDict). ``task``: the task kind (default: builtin's own, or inferred
    from the manifest's columns; a kind whose columns are missing is an InputError).
    ``image_root``: manifests may only reference images under this folder (default: the
    manifest's folder). ``columns``: ``{column in the data: column EMMS reads}`` renames for
    manifests and Hugging Face datasets (see :func:`column_overrides`).
    """
    if isinstance(source, str) and source.startswith("builtin:"):
        data = load_builtin(source.removeprefix("builtin:"))
        if task is not None and task != data.task:
            raise InputError(f"task: {source} is a {data.task!r} dataset, got task={task!r}")
        if columns:
            raise InputError(f"columns: {source} is a bundled dataset with fixed columns; nothing to rename")
    else:
        data = _load_path(Path(source).expanduser(), task, image_root, columns)
    return subsample(data, max_samples, seed)


def _load_path(path: Path, task: str | None, image_root: str | Path | None, columns: dict[str, str] | None) -> TaskData:
    split = None
    if not path.exists() and ":" in path.name:
        name, split = path.name.rsplit(":", 1)
        path = path.with_name(name)
    if not path.exists():
        raise InputError(f"data: {path} does not exist; expected builtin:NAME ({', '.join(BUILTIN_DATASETS)}), "
                         f"an image folder, a manifest ({', '.join(MANIFEST_SUFFIXES)}) or a saved Hugging Face dataset")
    if path.is_file():
        return read_manifest(path, task, Path(image_root).expanduser() if image_root is not None else None, columns)
    if is_hf_dataset_dir(path):
        return read_hf_dataset(path, task, split, columns)
    if columns:
        raise InputError(f"columns: {path} is an image folder (class sub-folders); it has no columns to rename")
    return read_image_folder(path, task)
