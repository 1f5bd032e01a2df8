"""Exact minimisation over the probability simplex: EMMS's weights t of the K F-label encoders."""

from __future__ import annotations

import numpy as np


def simplex_qp(quad: np.ndarray, linear: np.ndarray | None = None, *, start: np.ndarray | None = None,
                max_steps: int = 1000) -> np.ndarray:
    """Exact minimiser of tᵀQt − 2bᵀt over the probability simplex (Q (K, K) symmetric PSD, b in
    the range of Q, as always here: Q = ZᵀZ and b = Zᵀu for stacked F-labels Z).

    Primal active-set method: on a support S solve the KKT system Q_SS t_S − b_S = μ1, 1ᵀt_S = 1
    (least squares, so a singular Q_SS, e.g. a repeated encoder, is fine); step back to feasibility
    when a weight turns negative; add the index whose gradient (Qt − b)_j falls below μ. Stops when
    the KKT conditions hold (t ≥ 0, (Qt − b)_j ≥ μ off the support). ``start``: a point of the
    simplex to start from (its support is the first guess).
    """
    q = np.asarray(quad, dtype=np.float64)
    q = 0.5 * (q + q.T)
    b = np.zeros(q.shape[0]) if linear is None else np.asarray(linear, dtype=np.float64)
    k = q.shape[0]
    tol = 1e-13 * max(float(np.max(np.abs(q))), float(np.max(np.abs(b))), 1e-300)
    if start is None:  # the best vertex
        weights = np.zeros(k)
        weights[int(np.argmin(np.diag(q) - 2 * b))] = 1.0
    else:  # a feasible warm start, e.g. the previous solution
        weights = np.array(start, dtype=np.float64)
    support = [int(i) for i in np.flatnonzero(weights > 0)]
    for _ in range(max_steps):
        target, multiplier = _kkt_on_support(q, b, support)
        if np.all(target >= 0):
            weights[:] = 0.0
            weights[support] = target
            gradient = q @ weights - b
            outside = [j for j in range(k) if j not in support]
            if not outside:
                break
            j = min(outside, key=lambda i: gradient[i])
            if gradient[j] >= multiplier - tol:
                break
            support.append(j)
        else:
            current = weights[support]
            negative = target < 0
            ratios = current[negative] / (current[negative] - target[negative])
            blocking = np.asarray(support)[negative][int(np.argmin(ratios))]
            weights[support] = current + float(np.min(ratios)) * (target - current)
            weights[blocking] = 0.0
            support = [i for i in support if weights[i] > 0.0]
    weights = np.clip(weights, 0.0, None)
    return weights / weights.sum()


def _kkt_on_support(q: np.ndarray, b: np.ndarray, support: list[int]) -> tuple[np.ndarray, float]:
    """Solve Q_SS t − μ1 = b_S, 1ᵀt = 1 (least squares if singular); returns (t_S, μ)."""
    m = len(support)
    system = np.zeros((m + 1, m + 1))
    system[:m, :m] = q[np.ix_(support, support)]
    system[:m, m] = -1.0
    system[m, :m] = 1.0
    rhs = np.append(b[support], 1.0)
    try:
        solution = np.linalg.solve(system, rhs)
    except np.linalg.LinAlgError:  # singular Q_SS (e.g. a repeated encoder): minimum-norm solution
        solution = np.linalg.lstsq(system, rhs, rcond=None)[0]
    return solution[:m], float(solution[m])


def sparsemax(values: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the probability simplex (Martins & Astudillo, 2016)."""
    ordered = np.sort(values)[::-1]
    cumulative = np.cumsum(ordered) - 1.0
    ks = np.arange(1, values.size + 1)
    support = ordered - cumulative / ks > 0
    threshold = cumulative[support][-1] / ks[support][-1]
    return np.maximum(values - threshold, 0.0)
