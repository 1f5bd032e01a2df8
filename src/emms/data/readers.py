"""Readers: image folders, CSV/JSONL/Parquet manifests and saved Hugging Face datasets -> TaskData."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from emms.data.taskdata import TaskData, infer_task, missing_label_columns
from emms.errors import InputError, ResourceError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".parquet", ".pq")
#: Tasks whose label columns hold image-size-dependent boxes (width/height filled by the reader).
_BOX_TASKS = ("referring", "detection")


def read_image_folder(root: Path, task: str | None = None) -> TaskData:
    """Class sub-folders of images -> classification; class names are the sorted folder names.

    Files directly in ``root`` and hidden entries are ignored; only the suffixes in
    :data:`IMAGE_SUFFIXES` count as images. Inputs are the absolute image paths.
    """
    if task not in (None, "classification"):
        raise InputError(f"task: an image folder (class sub-folders) gives 'classification', got {task!r}")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, names = [], []
    for class_dir in class_dirs:
        files = sorted(f for f in class_dir.iterdir()
                       if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES)
        paths += [str(f.resolve()) for f in files]
        names += [class_dir.name] * len(files)
    class_names = sorted(set(names))
    if len(class_names) < 2:
        raise InputError(f"data: {root} is an image folder with {len(class_names)} class sub-folder(s) holding images "
                         f"({', '.join(IMAGE_SUFFIXES)}); expected at least 2")
    return TaskData(name=root.name, modality="image", inputs=paths, task="classification",
                    labels=pd.DataFrame({"label": names}), class_names=class_names,
                    description=f"image folder {root}")


def read_manifest(path: Path, task: str | None = None, image_root: Path | None = None,
                  columns: dict[str, str] | None = None) -> TaskData:
    """A CSV, JSONL or Parquet table -> TaskData (see :func:`read_table`).

    Image paths are resolved relative to the manifest's folder and must stay under ``image_root``
    (default: that folder) after normalising ``..``.
    """
    base = path.parent.resolve()
    return read_table(_read_table(path), task, name=path.stem, description=f"manifest {path}", base=base,
                      image_root=(image_root or base).resolve(), columns=columns, where=str(path))


def read_table(frame: pd.DataFrame, task: str | None = None, *, name: str = "table", description: str = "",
               base: Path | None = None, image_root: Path | None = None, columns: dict[str, str] | None = None,
               where: str = "the table") -> TaskData:
    """A table (pandas DataFrame) -> TaskData.

    Inputs come from an ``image`` column (paths, relative to ``base``, default the working folder;
    under ``image_root`` when given) or a ``text`` column; for text QA without a ``text`` column
    the input is the question followed by the context. The remaining columns are the labels; the
    task is ``task`` or inferred from them. ``columns`` renames columns first (``{"sentence":
    "text"}``). Referring/detection tables get ``width``/``height`` from the image files when absent.
    """
    if len(frame) == 0:
        raise InputError(f"data: {where} has no rows")
    frame = rename_columns(frame.copy(), columns, where)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    modality, task = _modality_and_task(columns, task, where)
    if modality == "image":
        base = (base or Path.cwd()).resolve()
        inputs = _resolve_image_paths(frame["image"].tolist(), base, image_root)
        frame["image"] = inputs
        if task in _BOX_TASKS and not {"width", "height"} <= set(columns):
            frame["width"], frame["height"] = zip(*(_image_size(p) for p in inputs))
    elif "text" in columns:
        inputs = [_text_cell(v, row) for row, v in enumerate(frame["text"].tolist())]
        frame = frame.drop(columns=["text"])
    elif task == "text_qa":
        contexts = frame["context"].tolist() if "context" in columns else [""] * len(frame)
        inputs = [" ".join(f"{_text_cell(q, row, 'question')} {'' if pd.isna(c) else c}".split())
                  for row, (q, c) in enumerate(zip(frame["question"].tolist(), contexts))]
    else:
        raise InputError(f"data: {where} needs an 'image' column (image paths) or a 'text' column; it has {columns} "
                         "(--text-column / columns= renames one)")
    class_names = None
    if task == "classification" and not pd.api.types.is_numeric_dtype(frame["label"]):
        class_names = sorted({str(v) for v in frame["label"] if not pd.isna(v)})
    return TaskData(name=name, modality=modality, inputs=inputs, task=task, labels=frame,
                    class_names=class_names, description=description or f"table of {len(frame)} rows")


def rename_columns(frame, columns: dict[str, str] | None, where: str):
    """``frame`` (a DataFrame or a ``datasets.Dataset``) with ``columns`` {old: new} renamed; a
    missing old name is an InputError naming the columns there are."""
    if not columns:
        return frame
    present = [str(c) for c in (frame.column_names if hasattr(frame, "column_names") else frame.columns)]
    for old, new in columns.items():
        if old not in present:
            raise InputError(f"columns: {where} has no column {old!r} to use as {new!r}; it has {present}")
        if new in present and new != old:
            raise InputError(f"columns: {where} already has a column {new!r}; cannot rename {old!r} to it")
    renames = {old: new for old, new in columns.items() if old != new}
    return frame.rename_columns(renames) if hasattr(frame, "rename_columns") else frame.rename(columns=renames)


def _modality_and_task(columns: list[str], task: str | None, path: Path | str) -> tuple[str, str]:
    """The input modality (``image`` column, else text) and the task (``task`` or inferred from
    ``columns``), once the table at ``path`` is known to hold one input column and that task's labels."""
    if "image" in columns and "text" in columns:
        raise InputError(f"data: {path} has both an 'image' and a 'text' column; expected exactly one input column")
    modality = "image" if "image" in columns else "text"
    task = task or infer_task(columns, modality)
    missing = missing_label_columns(task, columns)
    if missing:
        raise InputError(f"data: task {task!r} needs label column(s) {missing} that {path} lacks (it has {columns})")
    return modality, task


def read_hf_dataset(path: Path, task: str | None = None, split: str | None = None,
                    columns: dict[str, str] | None = None) -> TaskData:
    """A dataset saved with ``datasets.Dataset.save_to_disk`` -> TaskData (needs the ``datasets`` package).

    A DatasetDict needs ``split`` (default ``train`` if present). See :func:`read_hf_in_memory`.
    """
    try:
        import datasets
    except ImportError:
        raise ResourceError(f"data: {path} is a saved Hugging Face dataset; reading it needs the 'datasets' "
                            "package (pip install datasets)") from None
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = split or ("train" if "train" in loaded else None)
        if split not in loaded:
            raise InputError(f"data: {path} holds splits {list(loaded)}; name one (e.g. {path}:{list(loaded)[0]})")
        loaded = loaded[split]
    return read_hf_in_memory(loaded, task, name=path.name, description=f"Hugging Face dataset {path}",
                             columns=columns, where=str(path))


def read_hf_in_memory(loaded, task: str | None = None, *, name: str = "dataset", description: str = "",
                      columns: dict[str, str] | None = None, where: str = "the dataset") -> TaskData:
    """A ``datasets.Dataset`` -> TaskData.

    An ``image`` column of images is stacked into a uint8 array (all images must share one size); a
    ``label`` column with a ``ClassLabel`` feature gives the class names. ``columns`` renames
    columns first, as in :func:`read_table`.
    """
    import datasets

    loaded = rename_columns(loaded, columns, where)
    columns = list(loaded.column_names)
    if "image" not in columns and "text" not in columns:
        raise InputError(f"data: {where} needs an 'image' or a 'text' column; it has {columns} "
                         "(--text-column / columns= renames one)")
    modality, task = _modality_and_task(columns, task, where)
    frame = loaded.remove_columns([modality]).to_pandas()
    if modality == "image":
        images = [np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img) for img in loaded["image"]]
        if len({img.shape for img in images}) != 1:
            raise InputError(f"data: {where} holds images of different sizes; expected one size (resize them first)")
        inputs = np.stack(images).astype(np.uint8)
        if task in _BOX_TASKS and not {"width", "height"} <= set(columns):
            frame["width"], frame["height"] = inputs.shape[2], inputs.shape[1]
    else:
        inputs = [_text_cell(v, row) for row, v in enumerate(loaded["text"])]
    class_names = None
    label_feature = loaded.features.get("label")
    if task == "classification" and isinstance(label_feature, datasets.ClassLabel):
        class_names = list(label_feature.names)
        frame["label"] = [class_names[i] for i in frame["label"]]
    return TaskData(name=name, modality=modality, inputs=inputs, task=task, labels=frame,
                    class_names=class_names, description=description or f"in-memory dataset of {len(frame)} rows")


def is_hf_dataset_dir(path: Path) -> bool:
    """True for a folder written by ``save_to_disk`` (a Dataset or a DatasetDict)."""
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and any(path.glob("*.arrow")))


def _read_table(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".jsonl", ".ndjson"):
            return pd.read_json(path, lines=True, dtype=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except ImportError as exc:
        raise ResourceError(f"data: reading {path.name} needs an optional package ({exc}); "
                            "pip install pyarrow") from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise InputError(f"data: cannot read {path} as a {suffix[1:]} table ({' '.join(str(exc).split())})") from None
    raise InputError(f"data: {path} is not a manifest; expected a file ending in {', '.join(MANIFEST_SUFFIXES)}")


def _resolve_image_paths(values: list, base: Path, root: Path | None) -> list[str]:
    """Absolute, existing image paths (under ``root`` when given, checked lexically: ``..`` and absolute paths)."""
    out, missing = [], []
    for row, value in enumerate(values):
        if pd.isna(value) or not str(value).strip():
            raise InputError(f"data: column 'image', row {row} is empty; expected an image path")
        resolved = Path(os.path.normpath(base / str(value).strip()))
        if root is not None and not resolved.is_relative_to(root):
            raise InputError(f"data: column 'image', row {row}: {value!r} points outside the allowed image root {root} "
                             "(pass image_root=... to allow it)")
        if not resolved.is_file():
            missing.append(str(resolved))
        out.append(str(resolved))
    if missing:
        raise InputError(f"data: {len(missing)} image file(s) listed in column 'image' do not exist, e.g. {missing[0]}")
    return out


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:  # reads the header only
            return image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"data: cannot read image {path} ({exc})") from None


def _text_cell(value: object, row: int, column: str = "text") -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip():
        raise InputError(f"data: column {column!r}, row {row} is empty; expected a text")
    return str(value)
