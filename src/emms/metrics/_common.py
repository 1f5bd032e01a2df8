"""Array helpers shared by several metrics (class labels as integer codes 0..C-1)."""

from __future__ import annotations

import numpy as np


def class_means(features: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Mean feature vector of each class: (C, D) from features (N, D) and codes in 0..C-1."""
    sums = np.zeros((n_classes, features.shape[1]))
    np.add.at(sums, codes, features)
    return sums / np.bincount(codes, minlength=n_classes)[:, None]


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
