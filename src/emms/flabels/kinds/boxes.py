"""Referring expressions and detection: boxes written as normalised coordinates.

A box (x1, y1, x2, y2) in pixels of a ``width`` x ``height`` image is normalised to [0, 1]
(x / width, y / height) and written with ``decimals`` digits, e.g. ``[0.12, 0.30, 0.55, 0.90]``.
Normalising makes the text independent of the image size; two decimals is a 1% grid.

Referring: ``"<expression> at [x1, y1, x2, y2]"``; the native target is the normalised box (N, 4).

Detection (a set of boxes per image) is reduced to one F-label per image: each object is written
``"<class> at [x1, y1, x2, y2]"`` (or just ``"<class>"`` with ``with_boxes=False``) and the image's
F-label is the **mean of its objects' embeddings**; an image without objects gets the text
``"no objects"``. The native target is class presence, a 0/1 matrix (N, C).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.flabels.kinds._common import (FLabelTexts, distinct, format_box, numeric_column, padded_index,
                                 parse_list_cell, text_column)
from emms.flabels.kinds.classification import clean_class_name

EMPTY_IMAGE_TEXT = "no objects"


def referring_target(frame: pd.DataFrame) -> np.ndarray:
    """Normalised boxes (N, 4) float64: x1/width, y1/height, x2/width, y2/height."""
    width, height = _image_sizes(frame)
    boxes = np.column_stack([numeric_column(frame, c) for c in ("x1", "y1", "x2", "y2")])
    for row in range(len(frame)):
        _check_box(boxes[row], width[row], height[row], f"labels row {row}")
    return boxes / np.column_stack([width, height, width, height])


def referring_texts(frame: pd.DataFrame, *, decimals: int = 2) -> FLabelTexts:
    """``"<expression> at [x1, y1, x2, y2]"`` with the box normalised to [0, 1]."""
    decimals = _check_decimals(decimals)
    boxes = referring_target(frame)
    expressions = text_column(frame, "expression")
    texts, index = distinct([f"{e} at {format_box(b, decimals)}" for e, b in zip(expressions, boxes)])
    return FLabelTexts(texts=texts, index=index)


def detection_objects(frame: pd.DataFrame, class_names: list[str] | None) -> tuple[list[list[tuple[str, np.ndarray]]], list[str]]:
    """Per image, its objects as (class name, normalised box); and the class names.

    An ``objects`` cell is a list (or JSON list string) of ``[x1, y1, x2, y2, class]`` in pixels;
    ``class`` is a name, or an id into ``class_names``.
    """
    width, height = _image_sizes(frame)
    images = []
    for row, cell in enumerate(frame["objects"].tolist()):
        objects = []
        for j, obj in enumerate(parse_list_cell(cell, "objects", row)):
            where = f"labels['objects'] row {row} object {j}"
            if not isinstance(obj, (list, tuple)) or len(obj) != 5:
                raise InputError(f"{where}: expected [x1, y1, x2, y2, class], got {obj!r}")
            try:
                box = np.array(obj[:4], dtype=np.float64)
            except (TypeError, ValueError):
                raise InputError(f"{where}: box {obj[:4]!r} is not four numbers") from None
            _check_box(box, width[row], height[row], where)
            objects.append((_object_class(obj[4], class_names, where), box / np.array([width[row], height[row]] * 2)))
        images.append(objects)
    names = class_names or sorted({name for objects in images for name, _ in objects})
    return images, names


def detection_target(frame: pd.DataFrame, class_names: list[str] | None) -> np.ndarray:
    """Class presence per image: a 0/1 matrix (N, C) int64."""
    images, names = detection_objects(frame, class_names)
    position = {n: i for i, n in enumerate(names)}
    out = np.zeros((len(images), len(names)), dtype=np.int64)
    for row, objects in enumerate(images):
        out[row, [position[name] for name, _ in objects]] = 1
    return out


def detection_texts(frame: pd.DataFrame, class_names: list[str] | None, *, with_boxes: bool = True,
                    decimals: int = 2) -> FLabelTexts:
    """One text per object; an image's F-label is the mean over its objects (``"no objects"`` if none)."""
    decimals = _check_decimals(decimals)
    images, _ = detection_objects(frame, class_names)
    per_image = [[f"{clean_class_name(name)} at {format_box(box, decimals)}" if with_boxes else clean_class_name(name)
                  for name, box in objects] or [EMPTY_IMAGE_TEXT] for objects in images]
    texts, flat = distinct([t for group in per_image for t in group])
    bounds = np.cumsum([0] + [len(group) for group in per_image])
    groups = [flat[a:b].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
    return FLabelTexts(texts=texts, index=padded_index(groups), combine="mean")


def _image_sizes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    width, height = numeric_column(frame, "width"), numeric_column(frame, "height")
    for name, values in (("width", width), ("height", height)):
        bad = np.flatnonzero(values <= 0)
        if bad.size:
            raise InputError(f"labels[{name!r}]: row {int(bad[0])} is {values[bad[0]]:g}; "
                             "expected a positive image size in pixels")
    return width, height


def _check_box(box: np.ndarray, width: float, height: float, where: str) -> None:
    x1, y1, x2, y2 = box
    if not np.all(np.isfinite(box)):
        raise InputError(f"{where}: box {box.tolist()} has a missing or non-finite coordinate")
    if not (x2 > x1 and y2 > y1):
        raise InputError(f"{where}: box [x1, y1, x2, y2] = {box.tolist()} needs x2 > x1 and y2 > y1")
    if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
        raise InputError(f"{where}: box {box.tolist()} lies outside the {width:g} x {height:g} image "
                         "(expected 0 <= x1 < x2 <= width, 0 <= y1 < y2 <= height, in pixels)")


def _object_class(value: object, class_names: list[str] | None, where: str) -> str:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if class_names is not None and 0 <= int(value) < len(class_names):
            return class_names[int(value)]
        raise InputError(f"{where}: class id {value} needs class_names with more than {value} entries")
    name = str(value).strip()
    if not name:
        raise InputError(f"{where}: class is blank; expected a class name")
    if class_names is not None and name not in class_names:
        raise InputError(f"{where}: unknown class {name!r}; expected one of class_names")
    return name


def _check_decimals(decimals: object) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, (int, np.integer)) or not 0 <= decimals <= 6:
        raise InputError(f"decimals: expected an integer in 0..6, got {decimals!r}")
    return int(decimals)
