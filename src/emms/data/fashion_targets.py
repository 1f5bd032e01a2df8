"""The offline benchmark's image targets, built from Fashion-MNIST, with fixed deterministic splits.

One definition serves both sides of the benchmark: the ground-truth builder fine-tunes on
``train``, selects the learning rate on ``val`` and reports accuracy on ``test``; transferability
metrics score frozen features of ``probe``.

Targets (Fashion-MNIST class ids: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot):

``fm10``      the 10-way task.
``fm4``       coarse 4-way: tops {0, 2, 4, 6}, trouser + dress {1, 3}, footwear {5, 7, 9}, bag {8}.
``fm-tops4``  fine-grained: only classes 0, 2, 4, 6 (T-shirt/top, Pullover, Coat, Shirt).

Splits, per target, from one permutation (seed ``seed``) of the eligible images of each
Fashion-MNIST split: ``train``, ``val`` and ``probe`` are disjoint slices of the TRAIN split (60k);
``test`` comes from the TEST split (10k). The package's bundled Fashion-MNIST sample is drawn from
the test split, so no probe (scoring) image is in it: metrics are never developed on benchmark
scoring data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from emms._validation import check_positive_int
from emms.data.fashion import FASHION_CLASSES, GET_FASHION_MNIST, PACKAGED_LABELS_DIR, fashion_mnist_dir, read_idx
from emms.data.taskdata import TaskData
from emms.errors import InputError, ResourceError

PARTS = ("train", "val", "probe", "test")


@dataclass(frozen=True)
class TargetDefinition:
    """A target as a relabelling of Fashion-MNIST: ``class_map[fashion_class] = target_class``."""

    name: str
    class_names: tuple[str, ...]
    class_map: dict[int, int]
    description: str


TARGETS: dict[str, TargetDefinition] = {
    "fm10": TargetDefinition("fm10", FASHION_CLASSES, {c: c for c in range(10)}, "Fashion-MNIST, all 10 classes"),
    "fm4": TargetDefinition("fm4", ("top", "trouser or dress", "footwear", "bag"),
                            {0: 0, 2: 0, 4: 0, 6: 0, 1: 1, 3: 1, 5: 2, 7: 2, 9: 2, 8: 3},
                            "coarse 4-way: tops, trouser+dress, footwear, bag"),
    "fm-tops4": TargetDefinition("fm-tops4", ("T-shirt/top", "Pullover", "Coat", "Shirt"),
                                 {0: 0, 2: 1, 4: 2, 6: 3}, "fine-grained upper-body garments (4 classes)"),
}


@dataclass(frozen=True)
class BenchmarkTarget:
    """A target with its split: index arrays into the Fashion-MNIST train / test splits."""

    definition: TargetDefinition
    train: np.ndarray
    val: np.ndarray
    probe: np.ndarray
    test: np.ndarray
    seed: int

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def num_classes(self) -> int:
        return len(self.definition.class_names)

    def arrays(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (n, 28, 28) uint8 and target labels (n,) int64 of ``part`` (train/val/probe/test)."""
        if part not in PARTS:
            raise InputError(f"part: expected one of {', '.join(PARTS)}, got {part!r}")
        images, labels = fashion_mnist_split("test" if part == "test" else "train")
        rows = getattr(self, part)
        mapping = np.full(10, -1, dtype=np.int64)
        for fashion_class, target_class in self.definition.class_map.items():
            mapping[fashion_class] = target_class
        return images[rows].copy(), mapping[labels[rows]]

    def task_data(self, part: str = "probe") -> TaskData:
        """``part`` as a classification :class:`TaskData` (labels are class names), e.g. for scoring."""
        images, labels = self.arrays(part)
        names = self.definition.class_names
        return TaskData(name=f"{self.name}-{part}", modality="image", inputs=images, task="classification",
                        labels=pd.DataFrame({"label": [names[c] for c in labels]}), class_names=list(names),
                        description=f"{self.definition.description}; {part} split (seed {self.seed})")

    def fingerprint(self, parts: tuple[str, ...] = PARTS) -> str:
        """sha256 (first 16 hex) of the definition and the index arrays of ``parts``: a cache / record key."""
        digest = hashlib.sha256(repr((self.name, sorted(self.definition.class_map.items()), self.seed)).encode())
        for part in parts:
            digest.update(part.encode())
            digest.update(np.ascontiguousarray(getattr(self, part), dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


def benchmark_targets(names: list[str] | tuple[str, ...] | None = None, *, n_train: int = 2000, n_val: int = 500,
                      n_probe: int = 2000, n_test: int = 1000, seed: int = 0) -> dict[str, BenchmarkTarget]:
    """The benchmark targets (all of :data:`TARGETS` by default) with deterministic disjoint splits.

    For each target the eligible TRAIN-split images are permuted with ``numpy.random.default_rng(seed)``
    and cut into train (n_train), val (n_val) and probe (n_probe); the eligible TEST-split images
    are permuted by the same generator and the first n_test kept.
    """
    names = list(TARGETS) if names is None else list(names)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise InputError(f"names: unknown target(s) {', '.join(unknown)}; expected some of {', '.join(TARGETS)}")
    sizes = {"n_train": n_train, "n_val": n_val, "n_probe": n_probe, "n_test": n_test}
    for key, value in sizes.items():
        check_positive_int(value, key)
    train_labels, test_labels = fashion_mnist_labels("train"), fashion_mnist_labels("test")
    out = {}
    for name in names:
        definition = TARGETS[name]
        keep = np.array(sorted(definition.class_map))
        rng = np.random.default_rng(seed)
        pool = rng.permutation(np.flatnonzero(np.isin(train_labels, keep)))
        test_pool = rng.permutation(np.flatnonzero(np.isin(test_labels, keep)))
        if n_train + n_val + n_probe > pool.size or n_test > test_pool.size:
            raise InputError(f"n_train/n_val/n_probe/n_test: target {name} has {pool.size} train-split and "
                             f"{test_pool.size} test-split images; asked for {n_train}+{n_val}+{n_probe} and {n_test}")
        cuts = np.cumsum([n_train, n_val, n_probe])
        out[name] = BenchmarkTarget(definition, train=pool[: cuts[0]], val=pool[cuts[0]: cuts[1]],
                                    probe=pool[cuts[1]: cuts[2]], test=test_pool[:n_test], seed=seed)
    return out


def _idx_prefix(split: str) -> str:
    if split not in ("train", "test"):
        raise InputError(f"split: expected 'train' or 'test', got {split!r}")
    return "train" if split == "train" else "t10k"


@lru_cache(maxsize=2)
def fashion_mnist_labels(split: str) -> np.ndarray:
    """Labels (n,) int64 of the full Fashion-MNIST ``train`` (60k) or ``test`` (10k) split, read-only.

    From the images' folder (:func:`emms.data.fashion.fashion_mnist_dir`) when it has them, else from
    the package's copy, so the benchmark splits and their fingerprints need no download.
    """
    name = f"{_idx_prefix(split)}-labels-idx1-ubyte.gz"
    path = fashion_mnist_dir() / name
    labels = read_idx(path if path.is_file() else PACKAGED_LABELS_DIR / name).astype(np.int64)
    labels.setflags(write=False)
    return labels


@lru_cache(maxsize=2)
def fashion_mnist_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Full Fashion-MNIST ``train`` (60k) or ``test`` (10k) split: images (n, 28, 28) uint8, labels (n,).

    The images are read from ``$EMMS_FASHION_MNIST_DIR`` or the Debian package's
    /usr/share/datasets/fashion-mnist (``dataset-fashion-mnist``); a missing file raises a
    ResourceError that says how to get it. The arrays are read-only (shared by the cache).
    """
    path = fashion_mnist_dir() / f"{_idx_prefix(split)}-images-idx3-ubyte.gz"
    if not path.is_file():
        raise ResourceError(f"Fashion-MNIST images not found: {path}; {GET_FASHION_MNIST}")
    images, labels = read_idx(path), fashion_mnist_labels(split)
    if images.shape[0] != labels.shape[0]:
        raise ResourceError(f"Fashion-MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    images.setflags(write=False)
    return images, labels
