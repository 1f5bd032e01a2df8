"""EMMS: Efficient Multi-task Model Selector (Meng et al., NeurIPS 2023, arXiv 2308.06262).

A candidate model's features X (N, D) are scored by how well a linear map predicts K foundation-model
label embeddings ("F-labels") Z_k (N, L_k). Features are standardised per column (X̃, G = X̃ᵀX̃ =
V diag(s) Vᵀ); everything below is a function of the sufficient statistics (:mod:`emms.metrics.stats`).

**Default, ``mixture="per_encoder"``** (issue 19; derivation in ``docs/emms-score.md``). Each
block is only centred (Z̃_k = Z_k − z̄_k, T_k = ‖Z̃_k‖²_F), ĉ_k = Vᵀ X̃ᵀ Z̃_k, q_{k,i} = ‖ĉ_{k,i}‖²/s_i::

    RSS_k(λ) = T_k − Σ_i q_{k,i} (1 − (λ/(s_i+λ))²)           ridge residual of X̃ → Z̃_k
    GCV_k(λ) = RSS_k(λ)/N / (1 − (df(λ)+1)/N)²,   df(λ) = Σ_i s_i/(s_i+λ)
    R²_k     = 1 − min(min_λ GCV_k(λ), T_k·N/(N−1)²) / (T_k·N/(N−1)²)
    score    = max_k R²_k,      t = uniform over the encoders reaching the max (a vertex unless tied)

T_k·N/(N−1)² is GCV at λ → ∞, exactly the leave-one-out error of predicting each row by the mean of
the others, so R²_k ∈ [0, 1] is an out-of-sample fraction of variance explained: scale-free (a
useless model scores 0 whatever K), invariant to Z_k → c·Z_k·Q + b (Q orthogonal) and to X → X·diag(a) + b.
t is the encoder whose labels the features predict best. ``score="in_sample"``: R²_k = 1 − RSS_k(0)/T_k.

**``mixture="columns"``**, the paper's column-wise mixture (the default before issue 19). All
columns standardised, blocks rescaled to N·L and zero-padded to L = max L_k::

    min_{W, t ∈ simplex}  ‖X W − Σ_k t_k Z_k‖²_F  (+ λ‖W‖²_F)

For fixed t the best W is a ridge fit, so the problem collapses onto K×K matrices (A_kj = ⟨Z_k, Z_j⟩)::

    penalised objective   P(λ)_kj = A_kj − Σ_i ⟨ĉ_{k,i}, ĉ_{j,i}⟩ / (s_i + λ)
    ridge residual        R(λ)_kj = A_kj − Σ_i ⟨ĉ_{k,i}, ĉ_{j,i}⟩ (s_i + 2λ) / (s_i + λ)²

t(λ) = argmin over the simplex of tᵀP(λ)t (an exact active-set QP); ``score="gcv"``: score =
−GCV(λ*)/L with GCV(λ) = tᵀR(λ)t / N / (1 − (df(λ) + 1)/N)²; ``score="in_sample"``: the paper's plain
residual −tᵀR(0)t / (N·L) (minimum-norm least squares: eigen-directions below
``s_max · max(N, D) · eps`` ignored). λ is searched on a log grid around N and refined with bounded
Brent. This score is not scale-free (a useless model scores −1/K with K disagreeing encoders) and
depends on each encoder's coordinate basis (docs/emms-score.md).

Solvers: ``exact`` (the reductions above), ``alternating`` (columns only: the paper's alternating
minimisation at the same λ, iterated to ``tol``; it reaches the same optimum) and ``official``
(the released code's number: one alternation, t = sparsemax of the unconstrained least-squares t,
stale W, score −SSE/N·L).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import BaseEstimator

from emms._validation import as_f_labels, as_float_matrix, drop_constant_columns, nonconstant_mask
from emms.errors import EmmsWarning, InputError
from emms.metrics._simplex import simplex_qp, sparsemax
from emms.metrics.protocol import MetricStream, Rows, ScoreResult
from emms.metrics.registry import register
from emms.metrics.stats import StandardStats, SufficientStats, in_eigenbasis

SOLVERS = ("exact", "alternating", "official")
SCORES = ("gcv", "in_sample")
MIXTURES = ("per_encoder", "columns")
# log(λ / N) search range for GCV: from almost no shrinkage to almost full shrinkage.
_LOG_RIDGE_RANGE = (math.log(1e-8), math.log(1e4))
_GRID_POINTS = 25
_OFFICIAL_EPS = 1e-8


class EMMS(BaseEstimator):
    """EMMS transferability score of one model's features against K F-label embeddings.

    A scikit-learn estimator (``get_params``, ``set_params``, ``clone``, ``repr``).

    Parameters
    ----------
    solver : "exact" (default) | "alternating" | "official"
        ``alternating`` (the paper's alternating minimisation) needs ``mixture="columns"``;
        ``official`` reproduces the released code and ignores ``score`` and ``mixture``.
    score : "gcv" (default, out-of-sample) | "in_sample" (the residual of the least-squares fit).
    mixture : "per_encoder" (default) | "columns"
        ``per_encoder``: score = max over encoders of the out-of-sample R² of X predicting Z_k,
        t = the encoder(s) reaching it; scale-free, invariant to c·Z_k·Q + b (Q orthogonal).
        ``columns``: the paper's column-wise mixture Σ t_k Z_k of standardised blocks (score −GCV/L
        or −RSS/(N·L); the scores of EMMS before issue 19).
    tol, max_iter : stopping rule of the alternating solver (max change of t between iterations).
    chunk_rows : rows read at a time by ``fit`` (default: about 32 MB of float64 per chunk).

    Attributes (after ``fit``)
    --------------------------
    score_ : float, higher = better (see the module docstring for its scale).
    weights_ : (K,) simplex weight t of each encoder.
    encoder_scores_, ridges_ : (K,) R²_k and λ_k of each encoder (per_encoder mixture only).
    objective_ : columns: the minimised ‖XW − Zt‖² + λ‖W‖² (official: its stale SSE);
        per_encoder: Σ_k t_k ‖XW_k − Z_k‖² / ‖Z_k‖², the in-sample unexplained fraction of the chosen encoder.
    ridge_ : λ used (0 for in_sample and official); in units of G = X̃ᵀX̃ (eigenvalues average N).
        per_encoder: the chosen encoder's λ (the top of the search range, 1e4·N, when no λ beats
        predicting the mean).
    n_iter_ : GCV evaluations (exact), alternations (alternating) or 1 (official, in_sample exact).
    regime_ : "small_n" when N <= D or the effective rank of X̃ is >= N/2, else "large_n".
    effective_rank_, n_samples_, n_features_ (kept columns), label_width_ (L).
    objective_history_, converged_ : objective after each alternation, and whether ``tol`` was
        reached (alternating solver only).
    """

    def __init__(self, solver: str = "exact", score: str = "gcv", mixture: str = "per_encoder", *,
                 tol: float = 1e-10, max_iter: int = 100_000, chunk_rows: int | None = None) -> None:
        self.solver = solver
        self.score = score
        self.mixture = mixture
        self.tol = tol
        self.max_iter = max_iter
        self.chunk_rows = chunk_rows

    def fit(self, features: object, f_labels: object) -> EMMS:
        """Fit on features (N, D) and f_labels (K arrays (N, L_k) or one (N, L, K)); returns self.

        Any array-like (float32/64, integer, ``numpy.memmap``) is read in chunks of ``chunk_rows``
        rows (:meth:`emms.metrics.stats.SufficientStats.from_arrays`): no whole-array float64 copy.
        """
        self._check_params()
        if self.solver == "official":
            return self._fit_official(features, f_labels)
        stats = SufficientStats.from_arrays(features, f_labels, chunk_rows=self.chunk_rows,
                                            paired=self.mixture == "columns")
        standard = stats.standardised(labels=self._labels())
        if standard.n_samples >= standard.n_features:
            return self._fit_spectrum(standard, _Spectrum(standard))
        rows = stats.standardised_rows(features, standard.feature_mask)  # N < D: the (N, N) side is cheaper
        return self._fit_spectrum(standard, _Spectrum(standard, rows=rows))

    def fit_stats(self, stats: SufficientStats | StandardStats) -> EMMS:
        """Fit from sufficient statistics alone (exact or alternating solver); returns self.

        ``stats``: a :class:`SufficientStats`, or a :class:`StandardStats` standardised for this
        ``mixture`` (``stats.standardised(labels="blocks")`` for per_encoder, ``"columns"`` for columns).
        """
        self._check_params()
        if self.solver == "official":
            raise InputError("solver: 'official' needs the raw arrays (use fit); fit_stats supports 'exact' and 'alternating'")
        labels = self._labels()
        if isinstance(stats, SufficientStats):
            stats = stats.standardised(labels=labels)
        elif not isinstance(stats, StandardStats):
            raise InputError(f"stats: expected SufficientStats or StandardStats, got {type(stats).__name__}")
        elif stats.labels != labels:
            raise InputError(f"stats: mixture={self.mixture!r} needs statistics standardised with labels={labels!r}, "
                             f"got labels={stats.labels!r}")
        return self._fit_spectrum(stats, _Spectrum(stats))

    # -- internals -------------------------------------------------------------------------------

    def _labels(self) -> str:
        """How the F-labels are standardised for this mixture (:meth:`SufficientStats.standardised`)."""
        return "blocks" if self.mixture == "per_encoder" else "columns"

    def _fit_spectrum(self, stats: StandardStats, spectrum: _Spectrum) -> EMMS:
        n, width = stats.n_samples, stats.label_width
        self._set_shape(n, stats.n_features, width, spectrum.rank)
        if self.mixture == "per_encoder":
            return self._fit_per_encoder(spectrum)
        if self.score == "gcv":
            ridge, weights, n_evals = _gcv_search(spectrum)
        else:
            ridge, weights, n_evals = 0.0, simplex_qp(spectrum.penalised(0.0)), 1
        self.ridge_ = ridge
        if self.solver == "alternating":
            weights, history, self.converged_ = _alternate(spectrum, ridge, tol=self.tol, max_iter=self.max_iter)
            self.objective_history_ = history
            self.objective_ = history[-1]
            self.n_iter_ = len(history)
        else:
            self.objective_ = float(weights @ spectrum.penalised(ridge) @ weights)
            self.n_iter_ = n_evals
        self.weights_ = weights
        rss = max(float(weights @ spectrum.residual(ridge) @ weights), 0.0)
        if self.score == "gcv":
            self.score_ = 0.0 - _gcv_value(rss, spectrum.dof(ridge), n) / width
        else:
            self.score_ = 0.0 - rss / (n * width)
        return self

    def _fit_per_encoder(self, spectrum: _Spectrum) -> EMMS:
        """score_ = max_k R²_k, t = the encoders reaching it (formulas in the module docstring)."""
        scores, ridges, self.n_iter_ = _encoder_r2(spectrum, gcv=self.score == "gcv")
        best = scores >= scores.max() - 1e-12
        self.weights_ = best / best.sum()
        self.encoder_scores_ = scores
        self.ridges_ = ridges
        self.ridge_ = float(ridges[np.argmax(best)])
        self.score_ = float(scores.max())
        total = np.diag(spectrum.label_inner)
        self.objective_ = float(self.weights_ @ (np.diag(spectrum.base) / total))
        return self

    def _check_params(self) -> None:
        if self.solver not in SOLVERS:
            raise InputError(f"solver: expected one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if self.score not in SCORES:
            raise InputError(f"score: expected one of {', '.join(SCORES)}, got {self.score!r}")
        if self.mixture not in MIXTURES:
            raise InputError(f"mixture: expected one of {', '.join(MIXTURES)}, got {self.mixture!r}")
        if self.solver == "alternating" and self.mixture != "columns":
            raise InputError("solver: 'alternating' minimises the paper's column-wise mixture; pass mixture='columns' "
                             "(the per_encoder score has no alternation)")
        if self.chunk_rows is not None and (isinstance(self.chunk_rows, bool) or not isinstance(
                self.chunk_rows, (int, np.integer)) or self.chunk_rows < 1):
            raise InputError(f"chunk_rows: expected a positive integer or None, got {self.chunk_rows!r}")
        if not (isinstance(self.tol, (int, float)) and self.tol > 0):
            raise InputError(f"tol: expected a positive number, got {self.tol!r}")
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, (int, np.integer)) or self.max_iter < 1:
            raise InputError(f"max_iter: expected a positive integer, got {self.max_iter!r}")

    def _set_shape(self, n: int, d: int, width: int, rank: int) -> None:
        self.n_samples_, self.n_features_, self.label_width_, self.effective_rank_ = n, d, width, rank
        self.regime_ = "small_n" if (n <= d or 2 * rank >= n) else "large_n"
        if self.regime_ == "small_n":
            if self.solver == "official":
                advice = "the official score shrinks toward 0 for any features; prefer the default solver"
            elif self.score == "in_sample":
                advice = "the in-sample residual shrinks toward 0 for any features; prefer score='gcv'"
            else:
                advice = "the GCV score corrects for it, but expect noisier scores"
            reason = "N <= D" if n <= d else f"effective rank {rank} >= N/2"
            warnings.warn(f"EMMS small-N regime: N={n} samples, D={d} feature columns, effective rank {rank} "
                          f"({reason}); {advice}", EmmsWarning, stacklevel=3)

    def _fit_official(self, features: object, f_labels: object) -> EMMS:
        x = as_float_matrix(features, "features")
        blocks = as_f_labels(f_labels, "f_labels", n_samples=x.shape[0])
        widths = {b.shape[1] for b in blocks}
        if len(widths) > 1:
            raise InputError(f"f_labels: solver='official' needs every encoder to have the same width, "
                             f"got widths {[b.shape[1] for b in blocks]}")
        x, _ = drop_constant_columns(x, "features")
        n, width, k = x.shape[0], blocks[0].shape[1], len(blocks)
        xs = (x - x.mean(axis=0)) / (x.std(axis=0) + _OFFICIAL_EPS)
        ys = np.empty((n, width, k))
        for j, block in enumerate(blocks):
            ys[:, :, j] = (block - block.mean(axis=0)) / (block.std(axis=0) + _OFFICIAL_EPS)
            constant = ~nonconstant_mask(block.min(axis=0), block.max(axis=0))
            if constant.any():
                warnings.warn(f"f_labels[{j}]: ignored {int(constant.sum())} constant column(s) of {width}",
                              EmmsWarning, stacklevel=2)
                ys[:, constant, j] = 0.0
        uniform = np.full(k, 1.0 / k)
        coef, _, rank, _ = np.linalg.lstsq(xs, ys @ uniform, rcond=None)
        prediction = xs @ coef
        raw_weights = np.linalg.lstsq(ys.reshape(n * width, k), prediction.reshape(n * width), rcond=None)[0]
        weights = sparsemax(raw_weights)
        sse = float(np.sum((prediction - ys @ weights) ** 2))
        self._set_shape(n, x.shape[1], width, int(rank))
        self.ridge_ = 0.0
        self.weights_ = weights
        self.objective_ = sse
        self.n_iter_ = 1
        self.score_ = -(sse / n) * width
        return self


class EMMSStream(MetricStream):
    """EMMS over chunks: :class:`SufficientStats` per chunk (Chan's merge), :meth:`EMMS.fit_stats` at the end.

    The chunk statistics accept torch tensors (``on_device``): one computation on any device; with
    a device, G's eigen-decomposition runs there too (:func:`emms.metrics.stats.in_eigenbasis`).
    ``solver="official"`` needs the raw arrays: it does not stream (``accepts``).
    """

    on_device = True

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.estimator = EMMS(**options)  # type: ignore[arg-type]
        self.estimator._check_params()

    @classmethod
    def accepts(cls, options: Mapping[str, object]) -> bool:
        return options.get("solver") != "official"

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: object) -> SufficientStats:
        paired = self.estimator.mixture == "columns"  # only the column mixture needs cross-encoder terms
        return SufficientStats(paired=paired).update(rows.raw_features(start, stop), rows.target(start, stop))

    def fit(self, rows: Rows, merged: SufficientStats) -> EMMS:
        """A fitted :class:`EMMS` from the merged statistics (eigen-decomposition on ``rows.device`` if set)."""
        stats = merged.standardised(labels="blocks" if self.estimator.mixture == "per_encoder" else "columns")
        if rows.device is not None:
            stats = in_eigenbasis(stats, device=rows.device)
        return EMMS(**self.estimator.get_params()).fit_stats(stats)

    def finish(self, rows: Rows, merged: SufficientStats, pass_index: int, state: object) -> ScoreResult:
        estimator = self.fit(rows, merged)
        return ScoreResult(float(estimator.score_), np.asarray(estimator.weights_))


@register("emms", targets=("flabels",), stream=EMMSStream, estimator=EMMS)
def emms_score(features: object, f_labels: object, *, solver: str = "exact", score: str = "gcv",
               mixture: str = "per_encoder", tol: float = 1e-10, max_iter: int = 100_000) -> float:
    """EMMS: out-of-sample R² of the best-predicted F-label encoder (GCV ridge; the paper's mixture as an option).

    features (N, D); f_labels K arrays (N, L_k) or one (N, L, K). See :class:`EMMS`.
    """
    return EMMS(solver=solver, score=score, mixture=mixture, tol=tol, max_iter=max_iter).fit(features, f_labels).score_


class _Spectrum:
    """Eigen-decomposition of G restricted to its r numerically non-zero directions.

    ``eigenvalues`` (r,), ``projected`` ĉ (K, r, L), ``scaled_products`` ⟨ĉ_{k,i}, ĉ_{j,i}⟩ / s_i
    (r, K, K) and ``base`` R(0) = A − Σ_i ⟨ĉ_{k,i}, ĉ_{j,i}⟩ / s_i, the in-sample residual matrix
    (exactly 0 when the centred features span every centred target: rank = N − 1). With these,
    P(λ) = R(0) + Σ_i λ/(s_i+λ) · Q_i and R(λ) = R(0) + Σ_i (λ/(s_i+λ))² · Q_i, Q_i the scaled
    products: algebraically the formulas of the module docstring, but free of the cancellation that
    A − Σ(...) suffers when the fit nearly interpolates.
    """

    def __init__(self, stats: StandardStats, rows: np.ndarray | None = None) -> None:
        if rows is None:
            s, vectors = np.linalg.eigh(stats.gram)
        else:  # X̃ (N, D') with N < D': the nonzero spectrum of X̃ᵀX̃ from X̃X̃ᵀ = U diag(s) Uᵀ, v_i = X̃ᵀu_i / √s_i
            s, vectors = np.linalg.eigh(rows @ rows.T)
        cutoff = max(s.max(), 0.0) * max(stats.n_samples, stats.n_features) * np.finfo(np.float64).eps
        kept = s > cutoff
        self.eigenvalues = s[kept]
        if rows is not None:
            vectors = rows.T @ (vectors / np.sqrt(np.where(kept, s, 1.0)))
        self.projected = np.matmul(vectors[:, kept].T, stats.cross)
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


def _gcv_value(rss: float, dof: float, n: int) -> float:
    """GCV = RSS / N / (1 − (df + 1)/N)², +inf when the fit (with intercept) interpolates."""
    slack = 1.0 - (dof + 1.0) / n
    return math.inf if slack <= 0 else rss / n / slack**2


def _encoder_r2(spectrum: _Spectrum, *, gcv: bool) -> tuple[np.ndarray, np.ndarray, int]:
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


def _gcv_search(spectrum: _Spectrum) -> tuple[float, np.ndarray, int]:
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
        return _gcv_value(rss, spectrum.dof(ridge), n), weights

    grid = math.log(n) + np.linspace(*_LOG_RIDGE_RANGE, _GRID_POINTS)
    values = [gcv_at(u)[0] for u in grid]
    best = int(np.argmin(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, _GRID_POINTS - 1)]
    refined = minimize_scalar(lambda u: gcv_at(u)[0], bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-6})
    log_ridge = float(refined.x) if refined.fun <= values[best] else float(grid[best])
    return math.exp(log_ridge), gcv_at(log_ridge)[1], n_evals


def _alternate(spectrum: _Spectrum, ridge: float, *, tol: float,
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
