"""Shared fixtures-as-functions for the part-2 baseline metric tests (SFDA ... linear probe).

Reference records (cases.npz + expected.json) live in ``tests/data/reference`` (see its PROVENANCE.md).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"


@lru_cache(maxsize=1)
def cases() -> dict[str, np.ndarray]:
    with np.load(REFERENCE_DIR / "cases.npz") as data:
        return {key: data[key] for key in data.files}


@lru_cache(maxsize=1)
def records() -> dict[str, dict]:
    data = json.loads((REFERENCE_DIR / "expected.json").read_text())
    return {r["id"]: r for r in data["results"] + data["diagnostics"]}


def separable(n_per_class: int = 30, n_classes: int = 4, dim: int = 8, noise: float = 0.05, seed: int = 0):
    """Features (N, dim) whose classes sit at well-separated centres, and their labels (N,)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * 3.0
    features = centres[labels] + noise * rng.normal(size=(labels.size, dim))
    order = rng.permutation(labels.size)
    return features[order], labels[order]


def random_features(labels: np.ndarray, dim: int = 8, seed: int = 1) -> np.ndarray:
    """Features (N, dim) independent of the labels."""
    return np.random.default_rng(seed).normal(size=(labels.size, dim))
