"""GBC: Gaussian Bhattacharyya coefficient (Pándy, Agostinelli, Uijlings, Ferrari, Mensink, CVPR 2022).

"Transferability Estimation using Bhattacharyya Class Separability". Each class c is modelled as a
Gaussian with mean μ_c and per-dimension variance v_c (population variance, floored at 1e-4);
for two classes with v̄ = (v_a + v_b)/2 the Bhattacharyya distance is::

    D_B(a, b) = 1/8 · Σ_d (μ_a − μ_b)²_d / v̄_d + ½ · [Σ log v̄ − ½ Σ log v_a − ½ Σ log v_b]
    GBC = − Σ_{a ≠ b} exp(−D_B(a, b))        (<= 0; 0 when the classes do not overlap)

``gaussian="spherical"`` (default, as in the reference) replaces each v_c by its mean over the
dimensions (one scalar per class) before applying the same expression, so the log term is a single
scalar term, not D of them; ``"diagonal"`` keeps the per-dimension variances.

Pinned variant: google-research stable_transfer ``gbc.get_gbc_score`` (variance floor 1e-4; the
spherical log term exactly as that code computes it). No PCA inside the metric (the paper's
experiments reduce features to 64 dimensions first; do that upstream if wanted). A class with a
single sample has zero variance, floored to 1e-4 like a constant feature.
"""

from __future__ import annotations

import numpy as np
import scipy.spatial.distance

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics._common import class_means
from emms.metrics.moments import ClassMoments
from emms.metrics.protocol import MetricStream, Rows, ScoreResult
from emms.metrics.registry import register

GAUSSIANS = ("spherical", "diagonal")
_VARIANCE_FLOOR = 1e-4
_BLOCK_ELEMENTS = 1 << 22  # bound on the (block, C, D) temporaries of the diagonal case (32 MiB)


class GBCStream(MetricStream):
    """GBC over chunks: class means and per-dimension class co-moments (:class:`ClassMoments`, ``"diag"``)."""

    def chunk(self, rows: Rows, start: int, stop: int, pass_index: int, state: object) -> ClassMoments:
        x = rows.features(start, stop)
        return ClassMoments(rows.n_classes, x.shape[1], per_class="diag").update(x, rows.target(start, stop))

    def finish(self, rows: Rows, merged: ClassMoments, pass_index: int, state: object) -> ScoreResult:
        variances = merged.class_comoments / merged.counts[:, None]
        return ScoreResult(gbc_from_moments(merged.class_means, variances, **self.options))


@register("gbc", targets=("classes",), stream=GBCStream)
def gbc(features: object, target: object, *, gaussian: str = "spherical") -> float:
    """GBC (CVPR 2022): minus the summed Bhattacharyya coefficients between class Gaussians.

    ``features`` (N, D); ``target`` (N,) class labels (remapped to 0..C-1); ``gaussian``
    "spherical" (default) or "diagonal". Formula, variant and single-sample classes: module docstring.
    """
    if gaussian not in GAUSSIANS:
        raise InputError(f"gaussian: expected one of {GAUSSIANS}, got {gaussian!r}")
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    n_classes = classes.size
    means = class_means(x, codes, n_classes)
    return gbc_from_moments(means, class_means((x - means[codes]) ** 2, codes, n_classes), gaussian=gaussian)


def gbc_from_moments(means: np.ndarray, variances: np.ndarray, *, gaussian: str = "spherical") -> float:
    """GBC from per-class moments (streamable): class ``means`` μ_c (C, D) and ``variances`` (C, D),
    population (ddof 0) variances per dimension; floored at 1e-4 here."""
    if gaussian not in GAUSSIANS:
        raise InputError(f"gaussian: expected one of {GAUSSIANS}, got {gaussian!r}")
    variances = np.maximum(variances, _VARIANCE_FLOOR)
    if gaussian == "spherical":
        distance = _spherical_distances(means, variances.mean(axis=1))
    else:
        distance = _diagonal_distances(means, variances)
    coefficient = np.exp(-distance)
    np.fill_diagonal(coefficient, 0.0)
    return float(-coefficient.sum())


def _spherical_distances(means: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """(C, C) Bhattacharyya distances for scalar per-class variances ``variance`` (C,)."""
    average = (variance[:, None] + variance[None, :]) / 2
    squared = scipy.spatial.distance.cdist(means, means, "sqeuclidean")
    log_term = np.log(average) - 0.5 * np.log(variance)[:, None] - 0.5 * np.log(variance)[None, :]
    return squared / average / 8 + 0.5 * log_term


def _diagonal_distances(means: np.ndarray, variances: np.ndarray) -> np.ndarray:
    """(C, C) Bhattacharyya distances for per-dimension variances (C, D), in blocks of rows."""
    n_classes, dim = means.shape
    half_log = 0.5 * np.log(variances).sum(axis=1)
    out = np.empty((n_classes, n_classes))
    step = max(1, _BLOCK_ELEMENTS // (n_classes * dim))
    for start in range(0, n_classes, step):
        rows = slice(start, start + step)
        average = (variances[rows, None, :] + variances[None, :, :]) / 2            # (b, C, D)
        mahalanobis = ((means[rows, None, :] - means[None, :, :]) ** 2 / average).sum(axis=2)
        log_term = np.log(average).sum(axis=2) - half_log[rows, None] - half_log[None, :]
        out[rows] = mahalanobis / 8 + 0.5 * log_term
    return out
