"""H-score (Bao et al., ICIP 2019) and its Ledoit–Wolf regularised form (Ibrahim et al., 2022).

With features f (N, D), their covariance Σ_f and the between-class covariance Σ_g (the covariance
of f after replacing every row by its class mean)::

    H(f) = tr(Σ_f⁺ Σ_g) = 1/(N−1) · Σ_c n_c (μ_c − μ)ᵀ Σ_f⁺ (μ_c − μ)            (higher is better)
    H_reg(f) = tr(Σ_LW⁻¹ (1 − a) Σ_g),     Σ_LW = (1 − a) S + a·tr(S)/D·I

Σ_f⁺ is the pseudo-inverse; S is the population (ddof 0) covariance and a the Ledoit–Wolf
shrinkage as scikit-learn's ``LedoitWolf`` computes it; Σ_f and Σ_g use ddof 1.

Both scores are functions of moments, so they stream (:class:`HScoreStream`): the centred
co-moment M = Σ_i (x_i − μ)(x_i − μ)ᵀ, the class offsets μ_c − μ and counts n_c, and for the
shrinkage Q = Σ_i ‖x_i − μ‖⁴. With p = D and m = tr(M)/(N·p), scikit-learn's estimator is::

    δ = (‖M‖²_F / N² − m²·p) / p,     b = (Q/N − ‖M‖²_F/N²) / (p·N),     a = min(b, δ) / δ   (a = 0 if b = 0)
    S = M / N,                        Σ_LW = (1 − a)·S + a·m·I

(the expanded form of ``ledoit_wolf_shrinkage``: Σ_ab (X²ᵀX²)_ab = Σ_i ‖x_i‖⁴ = Q).

Pinned variant: TLlib ``h_score`` and ``regularized_h_score`` (the regularised one mixes the ddof-0
shrunk covariance with the ddof-1 Σ_g, as the reference does). The pseudo-inverse drops
eigenvalues below λ_max · D · machine epsilon instead of TLlib's ``rcond=1e-15``, which only
differs on noise-level eigenvalues. When N <= D the centred features span at most N − 1
directions, so H-score equals C − 1 for any features: a warning says so (use ``hscore_reg``).
``hscore_reg`` stays defined there but rests on the shrinkage; it warns too.

References: Bao, Li, Huang, Zheng, "An Information-Theoretic Approach to Transferability in Task
Transfer Learning", ICIP 2019; Ibrahim, Ponomareva, Mazumder, "Newer is not always better:
rethinking transferability metrics, their peculiarities, stability and performance", ECML PKDD 2022.
"""

from __future__ import annotations

import warnings

import numpy as np

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import EmmsWarning
from emms.metrics._common import class_means
from emms.metrics.moments import ClassMoments
from emms.metrics.protocol import MetricStream, Rows, ScoreResult
from emms.metrics.registry import register


class HScoreStream(MetricStream):
    """H-score over chunks: co-moment M, class means and counts (:class:`ClassMoments`)."""

    regularised = False

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: object) -> ClassMoments:
        x = rows.features(start, stop)
        moments = ClassMoments(rows.n_classes, x.shape[1], norm_moments=self.regularised)
        return moments.update(x, rows.target(start, stop))

    def finish(self, rows: Rows, merged: ClassMoments, pass_index: int, state: object) -> ScoreResult:
        offsets = merged.class_means - merged.mean
        if self.regularised:
            return ScoreResult(hscore_reg_from_moments(merged.comoment, offsets, merged.counts, merged.norm_fourth))
        return ScoreResult(hscore_from_moments(merged.comoment, offsets, merged.counts))


class HScoreRegStream(HScoreStream):
    """Regularised H-score over chunks: as :class:`HScoreStream` plus Q = Σ‖x − μ‖⁴."""

    regularised = True


@register("hscore", targets=("classes",), stream=HScoreStream)
def hscore(features: object, target: object) -> float:
    """H-score (ICIP 2019): tr(Σ_f⁺ Σ_g), between-class variance seen through the feature covariance.

    ``features`` (N, D); ``target`` (N,) class labels (remapped; a single-sample class contributes
    its one row as its mean). Warns when N <= D (the score saturates at C − 1). Formula: module docstring.
    """
    centred, class_offsets, counts = _centred_moments(features, target)
    return hscore_from_moments(centred.T @ centred, class_offsets, counts)


@register("hscore_reg", targets=("classes",), stream=HScoreRegStream)
def hscore_reg(features: object, target: object) -> float:
    """Regularised H-score (Ibrahim et al. 2022): H-score with the Ledoit–Wolf shrunk covariance.

    ``features`` (N, D); ``target`` (N,) class labels (remapped; single-sample classes as in
    :func:`hscore`). Well-defined for N <= D. Formula: module docstring.
    """
    centred, class_offsets, counts = _centred_moments(features, target)
    squared_norms = np.einsum("nd,nd->n", centred, centred)
    return hscore_reg_from_moments(centred.T @ centred, class_offsets, counts, float(squared_norms @ squared_norms))


def _centred_moments(features: object, target: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked features centred on their mean (N, D), class means of those (C, D), class sizes (C,)."""
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    centred = x - x.mean(axis=0)
    return centred, class_means(centred, codes, classes.size), np.bincount(codes, minlength=classes.size)


def hscore_from_moments(comoment: np.ndarray, class_offsets: np.ndarray, counts: np.ndarray) -> float:
    """H-score from moments: ``comoment`` Σ(x−μ)(x−μ)ᵀ (D, D), ``class_offsets`` μ_c − μ (C, D),
    ``counts`` n_c (C,). Warns when N <= D (the score saturates at C − 1)."""
    n, d = int(counts.sum()), comoment.shape[0]
    if n <= d:
        warnings.warn(f"hscore: n_samples ({n}) <= n_features ({d}): H-score equals C - 1 = {counts.size - 1} "
                      "for any features; use hscore_reg or more samples", EmmsWarning, stacklevel=3)
    return _between_class_trace(comoment / (n - 1), class_offsets, counts)


def hscore_reg_from_moments(comoment: np.ndarray, class_offsets: np.ndarray, counts: np.ndarray,
                            norm_fourth: float) -> float:
    """Regularised H-score from moments: as :func:`hscore_from_moments` plus ``norm_fourth``
    Q = Σ_i ‖x_i − μ‖⁴; Ledoit–Wolf formula in the module docstring."""
    n, p = int(counts.sum()), comoment.shape[0]
    mu = np.trace(comoment) / (n * p)
    frobenius = float(np.sum(comoment**2)) / n**2
    delta = (frobenius - 2.0 * mu * np.trace(comoment) / n + p * mu**2) / p
    beta = min((norm_fourth / n - frobenius) / (p * n), delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    if n <= p:
        warnings.warn(f"hscore_reg: n_samples ({n}) <= n_features ({p}): the sample covariance is singular and the "
                      f"score rests on the Ledoit-Wolf shrinkage (weight {shrinkage:.2f} on a scaled identity); "
                      "expect noisier scores, use more samples if you can", EmmsWarning, stacklevel=3)
    covariance = (1.0 - shrinkage) * comoment / n + shrinkage * mu * np.eye(p)
    return (1.0 - shrinkage) * _between_class_trace(covariance, class_offsets, counts)


def _between_class_trace(covariance: np.ndarray, class_offsets: np.ndarray, counts: np.ndarray) -> float:
    """tr(covariance⁺ Σ_g) with Σ_g = 1/(N−1) Σ_c n_c m_c m_cᵀ, m_c = ``class_offsets`` (C, D) μ_c − μ."""
    values, vectors = np.linalg.eigh(covariance)
    keep = values > max(values[-1], 0.0) * covariance.shape[0] * np.finfo(np.float64).eps
    whitened_means = class_offsets @ vectors[:, keep] / np.sqrt(values[keep])
    return float(counts @ np.einsum("cd,cd->c", whitened_means, whitened_means) / (counts.sum() - 1))
