"""xᵀy for targets with few distinct rows (class-level F-labels, one-hot labels), shared by EMMS's
statistics (:mod:`emms.metrics.stats`) and LogME (:mod:`emms.metrics.logme`)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

#: :func:`cross_factors` groups the rows of y when at most this fraction of them are distinct ...
_GROUPED_MAX_DISTINCT_FRACTION = 0.25
#: ... and at least this many columns (below it the plain product is already cheap).
_GROUPED_MIN_COLUMNS = 16


def cross_factors(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Matrices whose product is xᵀy (D, T), for x (N, D) and y (N, T), exploiting repeated rows of y.

    Class-level F-labels and one-hot targets have only U ≪ N distinct rows y_u (one per class).
    Then xᵀy = Sᵀ Y_U with S (U, D) the sums of the rows of x that share a y row and Y_U (U, T)
    the distinct rows: [Sᵀ, Y_U] costs O(N·D + U·D·T) instead of O(N·D·T), and a caller that
    multiplies xᵀy by more matrices can choose the cheapest order (``numpy.linalg.multi_dot``).
    Used when U <= N/4 and T >= 16; otherwise (and for torch tensors) the one factor [x.T @ y].
    """
    if not isinstance(y, np.ndarray):
        return [x.T @ y]
    groups = _distinct_rows(y) if y.shape[1] >= _GROUPED_MIN_COLUMNS else None
    if groups is None:
        return [x.T @ y]
    first, inverse = groups
    n = y.shape[0]
    membership = sparse.csr_matrix((np.ones(n), (inverse, np.arange(n))), shape=(first.size, n))
    return [(membership @ x).T, y[first]]


def cross_product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """xᵀy (D, T) through :func:`cross_factors`; equal to ``x.T @ y`` up to the order of summation."""
    factors = cross_factors(x, y)
    return factors[0] if len(factors) == 1 else factors[0] @ factors[1]


def _distinct_rows(y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, inverse) with ``y[first][inverse] == y`` when y has few distinct rows, else None.

    Rows are grouped by a fixed random projection, then the grouping is checked exactly; a
    projection collision (distinct rows, same value) falls back to sorting the rows themselves.
    """
    n = y.shape[0]
    if np.unique(y[:, 0]).size > _GROUPED_MAX_DISTINCT_FRACTION * n:  # rows differ at least that much: no grouping
        return None
    probe = y @ np.random.default_rng(0).standard_normal(y.shape[1])
    _, first, inverse = np.unique(probe, return_index=True, return_inverse=True)
    if first.size > _GROUPED_MAX_DISTINCT_FRACTION * n:
        return None
    distinct, inverse = y[first], inverse.reshape(-1)
    block = 4096  # compare in row blocks: no second (N, T) copy of y
    if not all(np.array_equal(distinct[inverse[a:a + block]], y[a:a + block]) for a in range(0, n, block)):
        _, first, inverse = np.unique(y, axis=0, return_index=True, return_inverse=True)
        if first.size > _GROUPED_MAX_DISTINCT_FRACTION * n:
            return None
    return first, inverse.reshape(-1)
