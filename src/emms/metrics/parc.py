"""PARC: Pairwise Annotation Representation Comparison (Bolya et al., NeurIPS 2021, arXiv 2111.06977).

score = 100 * Spearman( triu(1 - corr(F_i, F_j)), triu(1 - corr(Y_i, Y_j)) )

F are the features after an optional PCA to ``n_dims`` dimensions and column standardisation
(population std); corr(F_i, F_j) is the Pearson correlation between two *samples* (rows); Y is the
one-hot label matrix; triu takes the strict upper triangle (i < j). Range [-100, 100]; higher is
better.

Pinned variant (see ``shared/reference/README.md``): the TencentARC/SFDA pipeline
(``PARC_Score`` = ``n_dims=32``: scikit-learn PCA with ``svd_solver='randomized',
random_state=1919, iterated_power=1``, clamped to min(N, D) components; ``n_dims=None``: no
reduction), with an **exact-tie label RDM**: 0 for same-class pairs and 1 + 1/(C-1) otherwise,
which is what 1 - corr of one-hot rows equals in exact arithmetic. The reference's np.corrcoef
splits these ties in the last bit, which moves its value by 0.3-9 % and makes it depend on row
order; ours is permutation invariant and matches the reference's exact-tie diagnostics.

Memory: the N x N matrix costs 8 N^2 bytes, so above ``max_samples`` rows (default 5000) a
seeded stratified subsample is scored (every class keeps at least one row); that is the only
randomness. Single-sample classes have no same-class pairs; they still contribute their
different-class pairs.
"""

from __future__ import annotations

import numpy as np
import scipy.stats
from sklearn.decomposition import PCA

from emms._validation import as_class_labels, as_float_matrix, check_seed
from emms.errors import InputError
from emms.metrics._common import stratified_subsample
from emms.metrics.registry import register


def _reduce_dims(x: np.ndarray, n_dims: int | None) -> np.ndarray:
    if n_dims is None:
        return x
    n_components = min(n_dims, x.shape[0], x.shape[1])
    return PCA(n_components=n_components, svd_solver="randomized", random_state=1919,
               iterated_power=1).fit_transform(x)


@register("parc", targets=("classes",), randomised=True)
def parc(features: object, target: object, *, n_dims: int | None = 32, max_samples: int = 5000,
         seed: int = 0) -> float:
    """PARC (NeurIPS 2021): 100 x Spearman between feature and label dissimilarity matrices.

    features: (N, D) float32/float64; target: (N,) class labels (remapped to 0..C-1).
    n_dims: PCA dimensions (32 as in the reference ``PARC_Score``; None = no reduction).
    max_samples, seed: stratified subsample above this many rows (memory is 8 N^2 bytes).
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    if n_dims is not None and (isinstance(n_dims, bool) or not isinstance(n_dims, (int, np.integer)) or n_dims < 1):
        raise InputError(f"n_dims: expected a positive integer or None, got {n_dims!r}")
    if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)) or max_samples < classes.size + 1:
        raise InputError(f"max_samples: expected an integer > number of classes ({classes.size}), got {max_samples!r}")
    rows = stratified_subsample(codes, int(max_samples), check_seed(seed))
    x, codes = x[rows], codes[rows]
    reduced = _reduce_dims(x, n_dims)
    spread = reduced.std(axis=0)
    standardised = (reduced - reduced.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    feature_rdm = 1.0 - np.corrcoef(standardised)
    upper = np.triu_indices(x.shape[0], 1)
    feature_pairs = feature_rdm[upper]
    del feature_rdm
    different_class = (codes[upper[0]] != codes[upper[1]]).astype(np.float64)
    label_pairs = different_class * (1.0 + 1.0 / (classes.size - 1))
    if not np.all(np.isfinite(feature_pairs)):
        raise InputError("features: some rows are constant after standardisation, so their correlation is undefined")
    if np.ptp(label_pairs) == 0:
        raise InputError("target: PARC needs both same-class and different-class pairs of samples; "
                         "every class here has a single sample")
    if np.ptp(feature_pairs) == 0:
        raise InputError("features: every pair of samples is equally dissimilar, so PARC's rank correlation is undefined")
    return float(scipy.stats.spearmanr(feature_pairs, label_pairs)[0] * 100.0)
