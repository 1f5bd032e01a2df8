"""Array helpers shared by several metrics (class labels as integer codes 0..C-1)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.preprocessing import minmax_scale

from emms.errors import InputError


def class_means(features: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean feature vector of each class: (C, D) from features (N, D) and codes in 0..C-1."""
    sums = np.zeros((n_classes, features.shape[1]))
    np.add.at(sums, codes, features)
    return sums / np.bincount(codes, minlength=n_classes)[:, None]


def pool_minmax(terms_by_model: Mapping[str, Sequence[float]], metric: str) -> tuple[list[str], np.ndarray]:
    """Model names and their T terms min-max scaled over the pool, term by term: (M, T) in [0, 1].

    For pool-relative metrics (NCTI, ETran): fewer than two models is an InputError; a term equal
    for every model scales to 0 (scikit-learn ``minmax_scale``).
    """
    names = list(terms_by_model)
    if len(names) < 2:
        raise InputError(f"features_by_model: {metric} is pool-relative (min-max over the candidates); "
                         f"expected at least 2 models, got {len(names)}")
    return names, minmax_scale(np.array([terms_by_model[name] for name in names], dtype=np.float64), axis=0)


def one_hot(codes: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot float64 rows (N, C) of codes (N,) in 0..C-1."""
    return np.eye(n_classes)[codes]


def stratified_subsample(codes: np.ndarray, max_samples: int, seed: int) -> np.ndarray:
    """Sorted row indices of a seeded stratified subsample of about ``max_samples`` rows.

    codes: (N,) class ids in 0..C-1. Each class keeps round(n_c * max_samples / N) rows, at least
    one; all rows are returned when N <= max_samples.
    """
    n = codes.shape[0]
    if n <= max_samples:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    counts = np.bincount(codes)
    keep = []
    for cls in np.flatnonzero(counts):
        members = np.flatnonzero(codes == cls)
        size = max(1, int(round(counts[cls] * max_samples / n)))
        keep.append(rng.choice(members, size=size, replace=False))
    return np.sort(np.concatenate(keep))
