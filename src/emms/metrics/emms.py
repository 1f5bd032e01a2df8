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

import warnings
from collections.abc import Mapping

import numpy as np
from sklearn.base import BaseEstimator

from emms._validation import as_f_labels, as_float_matrix, drop_constant_columns, nonconstant_mask
from emms.errors import EmmsWarning, InputError
from emms.metrics._simplex import simplex_qp, sparsemax
from emms.metrics.protocol import MetricStream, Rows, ScoreResult
from emms.metrics.registry import register
from emms.metrics._emms_spectrum import Spectrum, alternate, encoder_r2, gcv_search, gcv_value
from emms.metrics.stats import StandardStats, SufficientStats, in_eigenbasis

SOLVERS = ("exact", "alternating", "official")
SCORES = ("gcv", "in_sample")
MIXTURES = ("per_encoder", "columns")
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
        rows = (stats.standardised_rows(features, standard.feature_mask)  # N < D: the (N, N) side is cheaper
                if standard.n_samples < standard.n_features else None)
        return self._fit_spectrum(standard, Spectrum(standard, rows=rows))

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
        return self._fit_spectrum(stats, Spectrum(stats))

    # -- internals -------------------------------------------------------------------------------

    def _labels(self) -> str:
        """How the F-labels are standardised for this mixture (:meth:`SufficientStats.standardised`)."""
        return "blocks" if self.mixture == "per_encoder" else "columns"

    def _fit_spectrum(self, stats: StandardStats, spectrum: Spectrum) -> EMMS:
        n, width = stats.n_samples, stats.label_width
        self._set_shape(n, stats.n_features, width, spectrum.rank)
        if self.mixture == "per_encoder":
            return self._fit_per_encoder(spectrum)
        if self.score == "gcv":
            ridge, weights, n_evals = gcv_search(spectrum)
        else:
            ridge, weights, n_evals = 0.0, simplex_qp(spectrum.penalised(0.0)), 1
        self.ridge_ = ridge
        if self.solver == "alternating":
            weights, history, self.converged_ = alternate(spectrum, ridge, tol=self.tol, max_iter=self.max_iter)
            self.objective_history_ = history
            self.objective_ = history[-1]
            self.n_iter_ = len(history)
        else:
            self.objective_ = float(weights @ spectrum.penalised(ridge) @ weights)
            self.n_iter_ = n_evals
        self.weights_ = weights
        rss = max(float(weights @ spectrum.residual(ridge) @ weights), 0.0)
        if self.score == "gcv":
            self.score_ = 0.0 - gcv_value(rss, spectrum.dof(ridge), n) / width
        else:
            self.score_ = 0.0 - rss / (n * width)
        return self

    def _fit_per_encoder(self, spectrum: Spectrum) -> EMMS:
        """score_ = max_k R²_k, t = the encoders reaching it (formulas in the module docstring)."""
        scores, ridges, self.n_iter_ = encoder_r2(spectrum, gcv=self.score == "gcv")
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
