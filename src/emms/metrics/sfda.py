"""SFDA: Self-challenging Fisher Discriminant Analysis (Shao et al., ECCV 2022, arXiv 2207.08418).

Pinned variant: the official TencentARC/SFDA ``SFDA_Score`` (commit 3b7edf7), computed in closed
form and without touching the caller's array.

1. Shrinkage LDA. With class priors pi_c, class means mu_c and the pooled within-class covariance
   S_w = sum_c pi_c Cov_c (population normalisation), the shrinkage is
   s = max(exp(-5 l), 1e-10) where l approximates the top eigenvalue of S_w by the reference's
   three-step power iteration (started from the row sums, returning x^T S_w y for the last two
   iterates; it is *not* the exact eigenvalue, and matching it is what makes the numbers agree).
   S_s = (1 - s) S_w + s (tr(S_w) / D) I. The reference keeps all D generalised eigenvectors of
   (S_b, S_s), which makes its decision rule exactly that of shrinkage LDA:
   logit_c(x) = x^T S_s^{-1} mu_c - 1/2 mu_c^T S_s^{-1} mu_c + log pi_c, p = softmax(logit).
2. ConfMix ("self-challenging"): soften p once more, q = softmax(p); replace each x of class c by
   q_c x + (1 - q_c) m_c where m_c is the unweighted mean of the other classes' means.
3. Refit shrinkage LDA on the mixed features with the same s; the score is mean_i p(y_i | x_i)
   (no log, as in the reference). Range (0, 1]; higher is better.

Single-sample classes contribute zero within-class scatter and their own mean; nothing special is
needed. Deterministic. When N < D the score saturates at 1.0 (the reference does too: SFDA
issue #5); reduce the dimension first if that happens.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics._common import class_means
from emms.metrics.registry import register


def power_iteration_top_eigenvalue(matrix: np.ndarray, n_iterations: int = 3) -> float:
    """Approximate top eigenvalue of a symmetric PSD (D, D) matrix, as the SFDA reference does.

    Starts from the row sums; each step does y = A x / |A x|, x = A y / |A y|; returns x^T A y.
    When the row sums lie in the null space of A (e.g. rows summing to zero), where the reference
    divides by zero, the exact top eigenvalue is returned instead.
    """
    x = matrix.sum(axis=1)
    if not np.linalg.norm(matrix @ x) > 0:
        return float(np.linalg.eigvalsh(matrix)[-1])
    y = x
    for _ in range(n_iterations):
        ax = matrix @ x
        y = ax / np.linalg.norm(ax)
        ay = matrix @ y
        x = ay / np.linalg.norm(ay)
    return float(x @ matrix @ y)


def shrinkage_lda_proba(features: np.ndarray, codes: np.ndarray, n_classes: int,
                        shrinkage: float | None = None) -> tuple[np.ndarray, float]:
    """Class probabilities (N, C) of shrinkage LDA fitted and evaluated on ``features`` (N, D).

    ``shrinkage=None`` picks s = max(exp(-5 l), 1e-10) with l from
    :func:`power_iteration_top_eigenvalue` of the within-class covariance. Returns (proba, s).
    """
    n = features.shape[0]
    priors = np.bincount(codes, minlength=n_classes) / n
    means = class_means(features, codes, n_classes)
    centred = features - means[codes]
    within = centred.T @ centred / n
    if not np.trace(within) > 0:
        raise InputError("features: every class's rows are identical (no within-class variation), "
                         "so the Fisher discriminant is undefined")
    if shrinkage is None:
        shrinkage = max(float(np.exp(-5.0 * power_iteration_top_eigenvalue(within))), 1e-10)
    dim = within.shape[0]
    shrunk = (1.0 - shrinkage) * within
    shrunk.flat[:: dim + 1] += shrinkage * np.trace(within) / dim
    coef = scipy.linalg.solve(shrunk, means.T, assume_a="pos").T  # (C, D) = mu_c^T S_s^{-1}
    intercept = -0.5 * np.einsum("cd,cd->c", means, coef) + np.log(priors)
    return scipy.special.softmax(features @ coef.T + intercept, axis=1), shrinkage


@register("sfda", targets=("classes",))
def sfda(features: object, target: object) -> float:
    """SFDA score (ECCV 2022): shrinkage LDA, ConfMix, refit; mean p(y|x) in (0, 1].

    features: (N, D) float32/float64; target: (N,) class labels (any values; remapped to 0..C-1).
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    n_classes = classes.size
    proba, shrinkage = shrinkage_lda_proba(x, codes, n_classes)
    softened = scipy.special.softmax(proba, axis=1)
    means = class_means(x, codes, n_classes)
    other_means = (means.sum(axis=0) - means) / (n_classes - 1)
    confidence = softened[np.arange(x.shape[0]), codes][:, None]
    mixed = confidence * x + (1.0 - confidence) * other_means[codes]
    proba, _ = shrinkage_lda_proba(mixed, codes, n_classes, shrinkage=shrinkage)
    return float(proba[np.arange(x.shape[0]), codes].mean())
