"""EMMS's solver on G's spectrum: :class:`Spectrum` (the eigen-decomposition every score reads), the
per-encoder GCV R² (:func:`encoder_r2`), the λ search of the column mixture (:func:`gcv_search`) and
the paper's alternating minimisation (:func:`alternate`). Formulas: :mod:`emms.metrics.emms`."""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy.optimize import minimize_scalar

from emms.errors import EmmsWarning
from emms.metrics._simplex import simplex_qp
from emms.metrics.stats import StandardStats

# log(λ / N) search range for GCV: from almost no shrinkage to almost full shrinkage, first on a grid of
# this many points, then refined by bounded Brent.
_LOG_RIDGE_RANGE = (math.log(1e-8), math.log(1e4))
_GRID_POINTS = 25


class Spectrum:
    """Eigen-decomposition of G restricted to its r numerically non-zero directions.

    ``eigenvalues`` (r,), ``projected`` ĉ (K, r, L), ``scaled_products`` ⟨ĉ_{k,i}, ĉ_{j,i}⟩ / s_i
    (r, K, K) and ``base`` R(0) = A − Σ_i ⟨ĉ_{k,i}, ĉ_{j,i}⟩ / s_i, the in-sample residual matrix
    (exactly 0 when the centred features span every centred target: rank = N − 1). With these,
    P(λ) = R(0) + Σ_i λ/(s_i+λ) · Q_i and R(λ) = R(0) + Σ_i (λ/(s_i+λ))² · Q_i, Q_i the scaled
    products: algebraically the formulas of the module docstring, but free of the cancellation that
    A − Σ(...) suffers when the fit nearly interpolates.
    """

    def __init__(self, stats: StandardStats, rows: np.ndarray | None = None) -> None:
        # rows: X̃ (N, D') with N < D': the nonzero spectrum of X̃ᵀX̃ from X̃X̃ᵀ = U diag(s) Uᵀ, v_i = X̃ᵀu_i / √s_i
        s, vectors = np.linalg.eigh(stats.gram if rows is None else rows @ rows.T)
        cutoff = max(s.max(), 0.0) * max(stats.n_samples, stats.n_features) * np.finfo(np.float64).eps
        kept = s > cutoff
        self.eigenvalues = s[kept]
        vectors = vectors[:, kept] if rows is None else rows.T @ (vectors[:, kept] / np.sqrt(self.eigenvalues))
        self.projected = np.matmul(vectors.T, stats.cross)
        products = np.einsum("kil,jil->ikj", self.projected, self.projected, optimize=True)
        self.scaled_products = products / self.eigenvalues[:, None, None]
        self.label_inner = stats.label_inner
        self.n_samples = stats.n_samples
        self.rank = int(kept.sum())
        if self.rank >= self.n_samples - 1:
            self.base = np.zeros_like(stats.label_inner)
        else:
            self.base = stats.label_inner - self.scaled_products.sum(axis=0)

    def penalised(self, ridge: float) -> np.ndarray:
        """P(λ): tᵀP(λ)t = min_W ‖XW − Zt‖² + λ‖W‖²."""
        shrink = ridge / (self.eigenvalues + ridge)
        return self.base + np.tensordot(shrink, self.scaled_products, axes=1)

    def residual(self, ridge: float) -> np.ndarray:
        """R(λ): tᵀR(λ)t = ‖XW_λ − Zt‖² for the ridge solution W_λ."""
        shrink = ridge / (self.eigenvalues + ridge)
        return self.base + np.tensordot(shrink**2, self.scaled_products, axes=1)

    def dof(self, ridge: float) -> float:
        """Effective degrees of freedom Σ s_i / (s_i + λ)."""
        return float(np.sum(self.eigenvalues / (self.eigenvalues + ridge)))


def gcv_value(rss: float, dof: float, n: int) -> float:
    """GCV = RSS / N / (1 − (df + 1)/N)², +inf when the fit (with intercept) interpolates."""
    slack = 1.0 - (dof + 1.0) / n
    return math.inf if slack <= 0 else rss / n / slack**2


def encoder_r2(spectrum: Spectrum, *, gcv: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """R²_k of every encoder (K,), its λ_k (K,) and the number of λ evaluations.

    With T_k = A_kk = ‖Z_k − z̄_k‖², q_{k,i} = ‖ĉ_{k,i}‖²/s_i, RSS_k(λ) = R(λ)_kk = R(0)_kk + Σ_i (λ/(s_i+λ))² q_{k,i}::

        in_sample:  R²_k = 1 − RSS_k(0) / T_k
        gcv:        R²_k = 1 − min(min_λ GCV_k(λ), GCV_null,k) / GCV_null,k,
                    GCV_k(λ) = RSS_k(λ)/N / (1 − (df(λ)+1)/N)²,   GCV_null,k = T_k·N/(N−1)²

    GCV_null,k is GCV at λ → ∞ (df → 0, RSS → T_k): exactly the leave-one-out error of predicting
    each row by the mean of the others, so R²_k ∈ [0, 1] and features that predict nothing score 0.
    """
    n = spectrum.n_samples
    total = np.diag(spectrum.label_inner).copy()
    base = np.maximum(np.diag(spectrum.base), 0.0)
    if not gcv:
        return 1.0 - base / total, np.zeros_like(total), 1
    fit = np.diagonal(spectrum.scaled_products, axis1=1, axis2=2)  # q (r, K)
    s = spectrum.eigenvalues
    null = total * n / (n - 1) ** 2

    def gcv_values(log_ridges: np.ndarray) -> np.ndarray:  # (G,) -> (G, K)
        ridge = np.exp(log_ridges)[:, None]
        shrink = ridge / (s + ridge)
        slack = 1.0 - ((s / (s + ridge)).sum(axis=1) + 1.0) / n
        rss = base + (shrink**2) @ fit
        with np.errstate(divide="ignore"):
            return np.where(slack[:, None] > 0, rss / n / np.maximum(slack, 0.0)[:, None] ** 2, np.inf)

    grid = math.log(n) + np.linspace(*_LOG_RIDGE_RANGE, _GRID_POINTS)
    values = gcv_values(grid)
    n_evals = grid.size
    best_gcv, best_log = null.copy(), np.full(total.size, grid[-1])
    for k in range(total.size):
        i = int(np.argmin(values[:, k]))
        lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        refined = minimize_scalar(lambda u: float(gcv_values(np.array([u]))[0, k]), bounds=(lo, hi),
                                  method="bounded", options={"xatol": 1e-6})
        n_evals += refined.nfev
        value, log_ridge = (refined.fun, refined.x) if refined.fun <= values[i, k] else (values[i, k], grid[i])
        if value < best_gcv[k]:
            best_gcv[k], best_log[k] = value, log_ridge
    return 1.0 - best_gcv / null, np.exp(best_log), n_evals


def gcv_search(spectrum: Spectrum) -> tuple[float, np.ndarray, int]:
    """Minimise GCV over log λ (grid, then bounded Brent); returns (λ, t, evaluations)."""
    n = spectrum.n_samples
    n_evals = 0
    previous = None  # warm start: t moves little between neighbouring λ

    def gcv_at(log_ridge: float) -> tuple[float, np.ndarray]:
        nonlocal n_evals, previous
        n_evals += 1
        ridge = math.exp(log_ridge)
        weights = previous = simplex_qp(spectrum.penalised(ridge), start=previous)
        rss = max(float(weights @ spectrum.residual(ridge) @ weights), 0.0)
        return gcv_value(rss, spectrum.dof(ridge), n), weights

    grid = math.log(n) + np.linspace(*_LOG_RIDGE_RANGE, _GRID_POINTS)
    values = [gcv_at(u)[0] for u in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, _GRID_POINTS - 1)]
    refined = minimize_scalar(lambda u: gcv_at(u)[0], bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6})
    log_ridge = float(refined.x) if refined.fun <= values[best] else float(grid[best])
    return math.exp(log_ridge), gcv_at(log_ridge)[1], n_evals


def alternate(spectrum: Spectrum, ridge: float, *, tol: float,
               max_iter: int) -> tuple[np.ndarray, list[float], bool]:
    """Alternating minimisation of J(W, t) = ‖XW − Zt‖² + λ‖W‖² over W and t in the simplex.

    Works in G's eigenbasis (W̃ = VᵀW): the W-step is the ridge least-squares solution
    W̃_i = Σ_k t_k ĉ_{k,i} / (s_i + λ); the t-step minimises tᵀAt − 2tᵀb, b_k = ⟨W̃, ĉ_k⟩, exactly.
    Starts from uniform t (as the paper); stops when t moves by at most ``tol``.
    Returns t, J after every alternation (non-increasing) and whether ``tol`` was reached.
    The rate is linear; it slows down when X nearly interpolates the F-labels (J flat in t).
    """
    c_hat = spectrum.projected
    scale = (spectrum.eigenvalues + ridge)[:, None]
    k = c_hat.shape[0]
    weights = np.full(k, 1.0 / k)
    history: list[float] = []
    for _ in range(max_iter):
        coef = np.tensordot(weights, c_hat, axes=1) / scale
        fit_terms = np.tensordot(c_hat, coef, axes=([1, 2], [0, 1]))
        new_weights = simplex_qp(spectrum.label_inner, fit_terms, start=weights)
        step = float(np.max(np.abs(new_weights - weights)))
        weights = new_weights
        history.append(float(np.sum(scale * coef**2) - 2 * weights @ fit_terms
                             + weights @ spectrum.label_inner @ weights))
        if step <= tol:
            return weights, history, True
    warnings.warn(f"EMMS alternating solver: t still moved by {step:.2e} after max_iter={max_iter} "
                  "alternations; raise max_iter or use solver='exact'", EmmsWarning, stacklevel=3)
    return weights, history, False
