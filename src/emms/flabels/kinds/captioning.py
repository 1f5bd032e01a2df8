"""Captioning: each caption is one text.

Two layouts. ``"pairs"`` (the paper's): one sample per image-caption row, so an image with five
captions gives five samples (its features repeated). ``"per_image"``: one sample per image, whose
F-label is the mean of its captions' embeddings; images are identified by the ``image`` column
(or the column named by ``group``), and :attr:`FLabelTexts.rows` gives each image's first row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.flabels.kinds._common import FLabelTexts, distinct, padded_index, text_column

LAYOUTS = ("pairs", "per_image")


def captioning_texts(frame: pd.DataFrame, *, layout: str = "pairs", group: str = "image") -> FLabelTexts:
    """Caption texts; ``layout`` is ``"pairs"`` or ``"per_image"`` (grouped by column ``group``)."""
    captions = text_column(frame, "caption")
    texts, index = distinct(captions)
    if layout == "pairs":
        return FLabelTexts(texts=texts, index=index)
    if layout != "per_image":
        raise InputError(f"layout: expected one of {list(LAYOUTS)}, got {layout!r}")
    if group not in frame.columns:
        raise InputError(f"labels: layout 'per_image' groups captions by column {group!r}, which is missing; "
                         f"got columns {list(frame.columns)}")
    keys = frame[group].astype(str).tolist()
    order: dict[str, list[int]] = {}
    for row, key in enumerate(keys):
        order.setdefault(key, []).append(row)
    rows = np.array([members[0] for members in order.values()], dtype=np.int64)
    groups = [index[members].tolist() for members in order.values()]
    return FLabelTexts(texts=texts, index=padded_index(groups), combine="mean", rows=rows)
