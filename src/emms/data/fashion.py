"""Fashion-MNIST pieces shared by the bundled sample, its builder and the offline benchmark targets:
the class names, a reader for its gzipped IDX files and the seeded per-class pick."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: Where the Debian package ``dataset-fashion-mnist`` installs the IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
#: The package's copy of the two label files (34 kB): enough to build the benchmark splits.
PACKAGED_LABELS_DIR = Path(__file__).resolve().parents[1] / "resources" / "fashion-mnist-labels"
#: How to get the full images (70,000, 30 MB), named in every error that needs them.
GET_FASHION_MNIST = ("install the Debian package dataset-fashion-mnist, or download the four idx.gz files of "
                     "https://github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder and set "
                     "EMMS_FASHION_MNIST_DIR to it")


def fashion_mnist_dir() -> Path:
    """The folder of the full Fashion-MNIST IDX files: ``$EMMS_FASHION_MNIST_DIR`` or Debian's."""
    return Path(os.environ.get("EMMS_FASHION_MNIST_DIR", FASHION_MNIST_DIR))


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped IDX file (the MNIST/Fashion-MNIST format) into a uint8 array."""
    raw = gzip.decompress(path.read_bytes())
    zero, dtype_code, ndim = raw[0:2], raw[2], raw[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def per_class_rows(labels: np.ndarray, per_class: int, seed: int, n_classes: int) -> np.ndarray:
    """Sorted rows holding ``per_class`` rows of each class 0..n_classes-1 of ``labels`` (N,), drawn
    without replacement by ``numpy.random.default_rng(seed)``, one class after the other."""
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
                                   for c in range(n_classes)]))
