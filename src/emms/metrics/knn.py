"""kNN: leave-one-out k-nearest-neighbour accuracy on the frozen features.

score = (1/N) sum_i [ vote_k(i) == y_i ], where vote_k(i) is the majority class among the k
nearest *other* samples of x_i (the sample itself is excluded, so it is a leave-one-out estimate).
Range [0, 1]; higher is better. Ties between classes are broken in favour of the class whose
first vote comes from the nearest neighbour, which makes the result deterministic.

Reference: the simple estimator found hard to beat by Sorkhei et al., "k-NN as a Simple and
Effective Estimator of Transferability" (arXiv 2503.18528), and the 1-NN baseline of PARC
(Bolya et al., NeurIPS 2021). Defaults: k = 5, Euclidean distance on the raw features
(``metric="cosine"`` and ``standardise=True`` are options). Neighbours come from scikit-learn's
``NearestNeighbors`` (memory-bounded, chunked brute force).

A sample from a single-sample class cannot have a same-class neighbour and always counts as an
error: the estimate then honestly says that class is unlearnable from one example.
"""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from emms._validation import as_class_labels, as_float_matrix
from emms.errors import InputError
from emms.metrics.registry import register


def _column_standardise(x: np.ndarray) -> np.ndarray:
    spread = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)


@register("knn", targets=("classes",))
def knn(features: object, target: object, *, k: int = 5, metric: str = "euclidean",
        standardise: bool = False) -> float:
    """Leave-one-out kNN accuracy in [0, 1]: majority vote of the k nearest other samples.

    features: (N, D) float32/float64; target: (N,) class labels (remapped to 0..C-1).
    """
    x = as_float_matrix(features, "features")
    codes, classes = as_class_labels(target, "target", n_samples=x.shape[0])
    n = x.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n - 1:
        raise InputError(f"k: expected an integer between 1 and n_samples - 1 = {n - 1}, got {k!r}")
    if metric not in ("euclidean", "cosine"):
        raise InputError(f"metric: expected 'euclidean' or 'cosine', got {metric!r}")
    if standardise:
        x = _column_standardise(x)
    neighbours = NearestNeighbors(n_neighbors=int(k), metric=metric).fit(x).kneighbors(return_distance=False)
    votes = codes[neighbours]  # (N, k), nearest first
    counts = np.zeros((n, classes.size))
    np.add.at(counts, (np.arange(n)[:, None], votes), 1.0)
    first_position = np.full((n, classes.size), k, dtype=np.float64)
    np.minimum.at(first_position, (np.arange(n)[:, None], votes), np.arange(k, dtype=np.float64)[None, :])
    # more votes wins; among equal counts the class seen first (nearest) wins
    predicted = np.argmax(counts * (k + 1) - first_position, axis=1)
    return float(np.mean(predicted == codes))
