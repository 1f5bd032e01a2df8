"""Regression: real-valued targets verbalised as text for F-labels, kept as numbers for baselines.

A sample with targets ``target`` = 3.14159 is written ``"value 3.14"``; several targets
``target_age``, ``target_height`` become ``"age 31, height 1.8"``. Values are rounded to
``digits`` significant digits, so nearby values share a text (and an embedding).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from emms.errors import InputError
from emms.flabels.kinds._common import FLabelTexts, distinct, numeric_column, target_columns


def regression_target(frame: pd.DataFrame) -> np.ndarray:
    """The targets as finite float64 of shape (N, T), one column per ``target``/``target_*`` column."""
    return np.column_stack([numeric_column(frame, c) for c in target_columns(frame)])


def regression_texts(frame: pd.DataFrame, *, digits: int = 3) -> FLabelTexts:
    """``"<name> <value>"`` per target, joined by ``", "``; ``name`` is ``value`` for a lone ``target``."""
    if isinstance(digits, bool) or not isinstance(digits, (int, np.integer)) or not 1 <= digits <= 17:
        raise InputError(f"digits: expected an integer in 1..17 (significant digits), got {digits!r}")
    columns = target_columns(frame)
    values = regression_target(frame)
    names = ["value" if c == "target" else c[len("target_"):].replace("_", " ") for c in columns]
    texts = [", ".join(f"{name} {value:.{digits}g}" for name, value in zip(names, row)) for row in values]
    distinct_texts, index = distinct(texts)
    return FLabelTexts(texts=distinct_texts, index=index)
