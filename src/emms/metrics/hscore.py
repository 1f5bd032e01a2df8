"""H-score (Bao et al., ICIP 2019) and its Ledoit–Wolf regularised form (Ibrahim et al., 2022).

With features f (N, D), their covariance Σ_f and the between-class covariance Σ_g (the covariance
of f after replacing every row by its class mean)::

    H(f) = tr(Σ_f⁺ Σ_g) = 1/(N−1) · Σ_c n_c (μ_c − μ)ᵀ Σ_f⁺ (μ_c − μ)            (higher is better)
    H_reg(f) = tr(Σ_LW⁻¹ (1 − a) Σ_g),     Σ_LW = (1 − a) S + a·tr(S)/D·I

Σ_f⁺ is the pseudo-inverse; S is the population (ddof 0) covariance and a the Ledoit–Wolf
shrinkage, both from scikit-learn's ``LedoitWolf``; Σ_f and Σ_g use ddof 1.

Pinned variant: TLlib ``h_score`` and ``regularized_h_score`` (the regularised one mixes the ddof-0
shrunk covariance with the ddof-1 Σ_g, as the reference does). The pseudo-inverse drops
eigenvalues below λ_max · D · machine epsilon instead of TLlib's ``rcond=1e-15``, which only
differs on noise-level eigenvalues. When N <= D the centred features span at most N − 1
directions, so H-score equals C − 1 for any features: a warning says so (use ``hscore_reg``).

References: Bao, Li, Huang, Zheng, "An Information-Theoretic Approach to Transferability in Task
Transfer Learning", ICIP 2019; Ibrahim, Ponomareva, Mazumder, "Newer is not always better:
rethinking transferability metrics, their peculiarities, stability and performance", ECML PKDD 2022.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.covariance import LedoitWolf

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import EmmsWarning
from emms.metrics.registry import register
from emms.metrics.sfda import class_means


@register("hscore", targets=("classes",))
def hscore(features: object, target: object) -> float:
    """H-score (ICIP 2019): tr(Σ_f⁺ Σ_g), between-class variance seen through the feature covariance.

    ``features`` (N, D); ``target`` (N,) class labels (remapped; a single-sample class contributes
    its one row as its mean). Warns when N <= D (the score saturates at C − 1). Formula: module docstring.
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    n, d = x.shape
    if n <= d:
        warnings.warn(f"hscore: n_samples ({n}) <= n_features ({d}): H-score equals C - 1 = {classes.size - 1} "
                      "for any features; use hscore_reg or more samples", EmmsWarning, stacklevel=2)
    centred = x - x.mean(axis=0)
    covariance = centred.T @ centred / (n - 1)
    return _between_class_trace(covariance, centred, codes, classes.size)


@register("hscore_reg", targets=("classes",))
def hscore_reg(features: object, target: object) -> float:
    """Regularised H-score (Ibrahim et al. 2022): H-score with the Ledoit–Wolf shrunk covariance.

    ``features`` (N, D); ``target`` (N,) class labels (remapped; single-sample classes as in
    :func:`hscore`). Well-defined for N <= D. Formula: module docstring.
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    centred = x - x.mean(axis=0)
    shrunk = LedoitWolf(assume_centered=False).fit(centred)
    return (1.0 - shrunk.shrinkage_) * _between_class_trace(shrunk.covariance_, centred, codes, classes.size)


def _between_class_trace(covariance: np.ndarray, centred: np.ndarray, codes: np.ndarray, n_classes: int) -> float:
    """tr(covariance⁺ Σ_g) with Σ_g = 1/(N−1) Σ_c n_c m_c m_cᵀ, m_c the class means of ``centred`` (N, D)."""
    values, vectors = np.linalg.eigh(covariance)
    keep = values > max(values[-1], 0.0) * covariance.shape[0] * np.finfo(np.float64).eps
    whitened_means = class_means(centred, codes, n_classes) @ vectors[:, keep] / np.sqrt(values[keep])
    counts = np.bincount(codes, minlength=n_classes)
    return float(counts @ np.einsum("cd,cd->c", whitened_means, whitened_means) / (centred.shape[0] - 1))
