"""NLEEP: LEEP on Gaussian-mixture posteriors instead of a source head (Li et al., CVPR 2021).

"Ranking Neural Checkpoints": reduce the features with PCA keeping 80 % of the variance, fit a
Gaussian mixture with ``components_per_class`` × C components (5 × C, the paper's setting), and
use its posteriors p(component | x_i) (N, K) as the "source" probabilities of LEEP::

    NLEEP = 1/N · Σ_i log Σ_k P(y_i | k) p(k | x_i),     P(y | k) ∝ Σ_{i: y_i = y} p(k | x_i)

Pinned variant: the mean *log* empirical prediction, as in the paper and google-research
stable_transfer (the SFDA-family copies return the mean probability without the log). PCA with
the exact ("full") solver; the mixture is seeded (``seed``) and, for cost, uses
``covariance_type="diag"`` by default (the reference code uses scikit-learn's "full", which costs
O(K·d²) per sample and iteration; pass ``covariance_type="full"`` to reproduce it). The PCA + GMM
step is shared with PACTran (:func:`emms.metrics.pactran.gmm_assignments`).
"""

from __future__ import annotations

import warnings

from emms._validation import as_class_labels, as_float_matrix, check_positive_int, check_seed
from emms.errors import EmmsWarning
from emms.metrics.leep import expected_empirical_log_prediction
from emms.metrics.pactran import check_gmm_options, gmm_assignments
from emms.metrics.registry import register


@register("nleep", targets=("classes",), randomised=True)
def nleep(features: object, target: object, *, seed: int = 0, components_per_class: int = 5,
          covariance_type: str = "diag", pca_variance: float = 0.8) -> float:
    """NLEEP (CVPR 2021): LEEP with the posteriors of a seeded GMM on PCA-reduced features.

    ``features`` (N, D); ``target`` (N,) class labels (remapped to 0..C-1; a single-sample class
    simply gets its own empirical P(y | k)). ``components_per_class`` × C components, capped at N
    with a warning. Deterministic for a fixed ``seed``. Formula and variant: module docstring.
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    components_per_class = check_positive_int(components_per_class, "components_per_class")
    check_gmm_options(pca_variance, covariance_type)
    n_components = components_per_class * classes.size
    if n_components > x.shape[0]:
        warnings.warn(f"nleep: {components_per_class} x {classes.size} classes = {n_components} mixture components "
                      f"exceed the {x.shape[0]} samples; using {x.shape[0]}", EmmsWarning, stacklevel=2)
        n_components = x.shape[0]
    probs = gmm_assignments(x, classes.size, seed=check_seed(seed), pca_variance=pca_variance,
                            n_components=n_components, covariance_type=covariance_type)
    return expected_empirical_log_prediction(probs, codes, classes.size)
