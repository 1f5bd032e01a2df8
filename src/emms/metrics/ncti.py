"""NCTI: Neural Collapse inspired Transferability Index (Wang et al., ICCV 2023).

Pool-relative: NCTI min-max normalises three per-model terms across the candidate pool, so a
model's score depends on the other candidates. Two phases:

1. :func:`ncti_statistics` (one model). PCA to ``n_components`` (64) dimensions; shrinkage
   s = max(exp(-sum of the top-32 PCA explained variances), 1e-10); scikit-learn
   ``LinearDiscriminantAnalysis`` (solver "svd" when s == 1e-10, else "eigen" with shrinkage s),
   fitted and evaluated on the same rows; Z = its (C-1)-dimensional projection, P its class
   probabilities. Terms:
   ``seli`` = ||Z - mean(Z)||_* (nuclear norm; within-class variability collapse),
   ``ncc``  = mean_i P[i, y_i] (nearest-centre classifier fit),
   ``vc``   = log sum_c ||P[y == c]||_* (class-wise prediction spread; smaller is better).
2. :func:`ncti_combine` (the pool). score_m = mm(ncc)_m + mm(seli)_m - mm(vc)_m, with
   mm(t)_m = (t_m - min t) / (max t - min t) over the pool (scikit-learn ``minmax_scale``: a term
   that is equal for every model contributes 0).

Pinned variant: BUserName/NCTI ``NCTI_Score`` (commit b18d395) and the combination of its
``evaluate_metric_group1_cpu.py``. Deviations: the PCA uses the deterministic full SVD (the
reference's default solver picks a randomised one with no seed when N, D > 500, making it
non-deterministic by ~0.5 %), and ``n_components`` is clamped to min(N, D) instead of failing when
N or D < 64. Single-sample classes are passed to scikit-learn's LDA as they are (their nuclear
norm is their probability vector's length).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics._common import class_means, pool_minmax
from emms.metrics.registry import register


@dataclass(frozen=True)
class NCTIStatistics:
    """The three per-model NCTI terms (see the module docstring)."""

    seli: float
    ncc: float
    vc: float


def ncti_statistics(features: object, target: object, *, n_components: int = 64) -> NCTIStatistics:
    """Per-model NCTI terms from features (N, D) float32/float64 and class labels (N,)."""
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    if x.shape[0] <= classes.size:
        raise InputError(f"features: NCTI's discriminant analysis needs more samples than classes; "
                         f"got {x.shape[0]} samples and {classes.size} classes")
    pca = PCA(n_components=min(n_components, x.shape[0], x.shape[1]), svd_solver="full")
    reduced = pca.fit_transform(x)
    if not np.any(reduced - class_means(reduced, codes, classes.size)[codes]):
        raise InputError("features: every class's rows are identical (no within-class variation), so NCTI's "
                         "discriminant analysis is undefined")
    shrinkage = max(float(np.exp(-pca.explained_variance_[:32].sum())), 1e-10)
    if shrinkage == 1e-10:
        lda = LinearDiscriminantAnalysis(solver="svd")
    else:
        lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=shrinkage)
    try:
        projected = lda.fit_transform(reduced, codes)
    except np.linalg.LinAlgError:
        raise InputError("features: no within-class variation left after PCA, so NCTI's discriminant "
                         "analysis is undefined") from None
    seli = np.linalg.norm(projected - projected.mean(axis=0, keepdims=True), ord="nuc")
    proba = lda.predict_proba(reduced)
    ncc = proba[np.arange(x.shape[0]), codes].mean()
    class_nuclear = sum(np.linalg.norm(proba[codes == c], ord="nuc") for c in range(classes.size))
    return NCTIStatistics(seli=float(seli), ncc=float(ncc), vc=float(np.log(class_nuclear)))


def ncti_combine(statistics_by_model: Mapping[str, NCTIStatistics]) -> dict[str, float]:
    """NCTI scores of a pool: mm(ncc) + mm(seli) - mm(vc) over at least two models."""
    names, scaled = pool_minmax({name: (s.ncc, s.seli, s.vc) for name, s in statistics_by_model.items()}, "NCTI")
    scores = scaled[:, 0] + scaled[:, 1] - scaled[:, 2]
    return {name: float(score) for name, score in zip(names, scores)}


@register("ncti", targets=("classes",), pool_relative=True)
def ncti(features_by_model: Mapping[str, object], target: object, *, n_components: int = 64) -> dict[str, float]:
    """NCTI (ICCV 2023), pool-relative: min-max combined neural-collapse terms per model.

    features_by_model: {name: (N, D_m) features}; target: (N,) class labels. Needs >= 2 models.
    """
    stats = {name: ncti_statistics(feats, target, n_components=n_components)
             for name, feats in features_by_model.items()}
    return ncti_combine(stats)
