"""ETran: Energy-based Transferability estimation (Gholami et al., ICCV 2023, arXiv 2308.02027).

Pool-relative: the energy and classification terms are min-max normalised across the candidate
pool before they are blended. Two phases:

1. :func:`etran_statistics` (one model).
   ``energy`` = mean of the k lowest ("bot", default) or highest ("top") values of
   E_i = logsumexp_d x_id over the N samples, k = max(1, int(10 * percent) * N // 1000), i.e.
   ``percent`` % of the samples at 0.1 % resolution (default 0.5 %). As in ETran's evaluation
   script the energy is taken over the penultimate *features*, not over logits.
   ``lda`` = mean_i p(y_i | x_i) of a linear Gaussian classifier fitted on the same rows.
   ``lda="reference"`` (default) pins what mgholamikn/ETran ``LDA_Score`` (commit a63361e)
   computes: its eigenvectors come from ``np.linalg.eigh`` of the non-symmetric S_w^{-1} S_b, so
   they are orthonormal and its coefficient matrix mu V V^T collapses to the class means mu; the
   classifier is therefore logit_c(x) = x . mu_c - 1/2 |mu_c|^2 + log pi_c (identity covariance).
   ``lda="shrinkage"`` uses the shrinkage LDA that the same code intended (SFDA's first stage,
   :func:`emms.metrics.sfda.shrinkage_lda_proba`).
2. :func:`etran_combine` (the pool). score_m = 0.85 mm(lda)_m + 0.15 mm(energy)_m, with
   mm(t)_m = (t_m - min t) / (max t - min t) over the pool (ETran ``tw.py``; scikit-learn
   ``minmax_scale``, a term equal for every model contributes 0).

Deterministic. The paper's regression and detection terms are not in the released code and are
not implemented. Single-sample classes are handled as any other (their mean is the sample).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import scipy.special

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics._common import class_means, pool_minmax
from emms.metrics.registry import register
from emms.metrics.sfda import shrinkage_lda_proba

LDA_WEIGHT = 0.85
ENERGY_WEIGHT = 0.15


@dataclass(frozen=True)
class ETranStatistics:
    """The two per-model ETran terms (see the module docstring)."""

    energy: float
    lda: float


def energy_score(features: object, *, percent: float = 0.5, tail: str = "bot") -> float:
    """Mean energy logsumexp(x_i) of the ``percent`` % lowest ("bot") or highest ("top") rows.

    features: (N, D). Matches ETran ``Energy_Score(features, percent, tail)`` where that selects
    at least one row (ours never selects zero rows).
    """
    x = as_float_matrix(features, "features", min_rows=1)
    if tail not in ("bot", "top"):
        raise InputError(f"tail: expected 'bot' or 'top', got {tail!r}")
    if not 0 < percent <= 100:
        raise InputError(f"percent: expected a percentage in (0, 100], got {percent!r}")
    energies = np.sort(scipy.special.logsumexp(x, axis=1))
    k = max(1, int(percent * 10) * x.shape[0] // 1000)
    chosen = energies[:k] if tail == "bot" else energies[-k:]
    return float(chosen.mean())


def lda_score(features: object, target: object, *, lda: str = "reference") -> float:
    """Mean true-class probability of the ETran linear classifier (see the module docstring)."""
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    if lda == "reference":
        means = class_means(x, codes, classes.size)
        priors = np.bincount(codes, minlength=classes.size) / x.shape[0]
        logits = x @ means.T - 0.5 * np.einsum("cd,cd->c", means, means) + np.log(priors)
        proba = scipy.special.softmax(logits, axis=1)
    elif lda == "shrinkage":
        proba, _ = shrinkage_lda_proba(x, codes, classes.size)
    else:
        raise InputError(f"lda: expected 'reference' or 'shrinkage', got {lda!r}")
    return float(proba[np.arange(x.shape[0]), codes].mean())


def etran_statistics(features: object, target: object, *, percent: float = 0.5, tail: str = "bot",
                     lda: str = "reference") -> ETranStatistics:
    """Per-model ETran terms from features (N, D) and class labels (N,)."""
    return ETranStatistics(energy=energy_score(features, percent=percent, tail=tail),
                           lda=lda_score(features, target, lda=lda))


def etran_combine(statistics_by_model: Mapping[str, ETranStatistics]) -> dict[str, float]:
    """ETran scores of a pool: 0.85 mm(lda) + 0.15 mm(energy) over at least two models."""
    names, scaled = pool_minmax({name: (s.lda, s.energy) for name, s in statistics_by_model.items()}, "ETran")
    scores = LDA_WEIGHT * scaled[:, 0] + ENERGY_WEIGHT * scaled[:, 1]
    return {name: float(score) for name, score in zip(names, scores)}


@register("etran", targets=("classes",), pool_relative=True)
def etran(features_by_model: Mapping[str, object], target: object, *, percent: float = 0.5, tail: str = "bot",
          lda: str = "reference") -> dict[str, float]:
    """ETran (ICCV 2023), pool-relative: 0.85 min-max(LDA score) + 0.15 min-max(energy score).

    features_by_model: {name: (N, D_m) features}; target: (N,) class labels. Needs >= 2 models.
    """
    stats = {name: etran_statistics(feats, target, percent=percent, tail=tail, lda=lda)
             for name, feats in features_by_model.items()}
    return etran_combine(stats)
