"""Datasets -> :class:`TaskData` (model inputs + task labels).

``load_dataset(source)`` reads ``builtin:NAME`` samples, image folders (class sub-folders), CSV /
JSONL / Parquet manifests and folders saved by Hugging Face ``datasets`` (``save_to_disk``), then
optionally takes a seeded, stratified subsample.
"""

from __future__ import annotations

from pathlib import Path

from emms.data.builtin import BUILTIN_DATASETS, GENERATED, load_builtin
from emms.data.readers import (MANIFEST_SUFFIXES, is_hf_dataset_dir, read_hf_dataset, read_image_folder,
                               read_manifest)
from emms.data.taskdata import TASKS, TaskData, fingerprint, subsample
from emms.errors import InputError

__all__ = ["BUILTIN_DATASETS", "GENERATED", "TASKS", "TaskData", "fingerprint", "load_dataset", "subsample"]


def load_dataset(source: str | Path, *, task: str | None = None, max_samples: int | None = None, seed: int = 0,
                 image_root: str | Path | None = None) -> TaskData:
    """Load ``source`` as a TaskData, optionally subsampled to ``max_samples`` (seeded, stratified).

    ``source``: ``builtin:NAME``; a folder of class sub-folders of images; a ``.csv``, ``.jsonl``
    or ``.parquet`` manifest; a folder written by ``datasets`` ``save_to_disk`` (``PATH:SPLIT``
    picks a split of a DatasetDict). ``task``: the task kind (default: builtin's own, or inferred
    from the manifest's columns; a kind whose columns are missing is an InputError).
    ``image_root``: manifests may only reference images under this folder (default: the
    manifest's folder).
    """
    if isinstance(source, str) and source.startswith("builtin:"):
        data = load_builtin(source.removeprefix("builtin:"))
        if task is not None and task != data.task:
            raise InputError(f"task: {source} is a {data.task!r} dataset, got task={task!r}")
    else:
        data = _load_path(Path(source).expanduser(), task, image_root)
    return subsample(data, max_samples, seed)


def _load_path(path: Path, task: str | None, image_root: str | Path | None) -> TaskData:
    split = None
    if not path.exists() and ":" in path.name:
        name, split = path.name.rsplit(":", 1)
        path = path.with_name(name)
    if not path.exists():
        raise InputError(f"data: {path} does not exist; expected builtin:NAME ({', '.join(BUILTIN_DATASETS)}), "
                         f"an image folder, a manifest ({', '.join(MANIFEST_SUFFIXES)}) or a saved Hugging Face dataset")
    if path.is_file():
        return read_manifest(path, task, Path(image_root).expanduser() if image_root is not None else None)
    if is_hf_dataset_dir(path):
        return read_hf_dataset(path, task, split)
    return read_image_folder(path, task)
