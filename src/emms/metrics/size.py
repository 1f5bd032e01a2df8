"""The size prior: a candidate's parameter count as its score (Singh, Hess & Vanschoren, ICLR 2026,
arXiv 2510.06448, who find that ordering by model size rivals or beats published transferability
metrics on the standard pools). Free to compute; shown beside every ranking as the baseline a metric
must beat.

The count is not in the features, so the caller passes it: :func:`emms.rank` counts the parameters
of each candidate's module as loaded (``n_params``, also in ``Ranking.meta["n_params"]``); from
arrays, ``emms.score(X, y, metric="params", n_params=...)``.
"""

from __future__ import annotations

import numpy as np

from emms.errors import InputError
from emms.metrics.registry import register


@register("params", targets=("classes", "multilabel", "real", "flabels"))
def params(features: object, target: object, *, n_params: int | None = None) -> float:
    """Size prior: the model's parameter count (needs ``n_params``; ignores features and target)."""
    if n_params is None:
        raise InputError("n_params: the params metric needs the model's parameter count (n_params=...)")
    if isinstance(n_params, (bool, np.bool_)) or not isinstance(n_params, (int, np.integer)) or n_params < 1:
        raise InputError(f"n_params: expected a positive integer, got {n_params!r}")
    return float(n_params)
