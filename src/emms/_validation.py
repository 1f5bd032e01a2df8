"""The one place where inputs are checked and converted.

Metrics, adapters and the pipeline call these helpers instead of writing their own checks, so a
given mistake gets the same clear message everywhere. Each helper returns a new array (inputs are
never modified) and raises :class:`emms.errors.InputError` naming the argument.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from emms.errors import EmmsWarning, InputError, ResourceError

FloatArray = np.ndarray


def as_float_matrix(x: object, name: str, *, min_rows: int = 2, dtype=np.float64, copy: bool = True) -> FloatArray:
    """Return ``x`` as a finite 2-D float array of shape (N, D) with N >= ``min_rows``.

    Accepts float or integer (not bool-only object) arrays; float32 is upcast to ``dtype``.
    The result is a private copy unless ``copy=False`` (for callers that never write to it), which
    returns ``x`` itself when it already has ``dtype``.
    """
    arr = as_numeric_matrix(x, name, min_rows=min_rows).astype(dtype, copy=copy)
    _check_finite(arr, name)
    return arr


def as_float_vector(x: object, name: str, *, min_rows: int = 2, dtype=np.float64) -> FloatArray:
    """Return ``x`` as a finite 1-D float array of length N >= ``min_rows``."""
    arr = _as_numeric(x, name)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of shape (n_samples,), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise InputError(f"{name}: expected at least {min_rows} samples, got {arr.shape[0]}")
    arr = arr.astype(dtype, copy=True)
    _check_finite(arr, name)
    return arr


def as_class_labels(y: object, name: str = "labels", *, n_samples: int | None = None,
                    min_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codes, classes)``: labels remapped to 0..C-1 (int64) and the sorted originals.

    Accepts integer, string or integer-valued float labels of shape (N,).
    """
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of class labels, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name}: expected at least one label, got an empty array")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name}: contains NaN or Inf")
        if not np.all(arr == np.round(arr)):
            raise InputError(f"{name}: expected integer class labels, got non-integer floats "
                             "(pass real-valued targets as a regression target instead)")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind == "O":
        try:
            arr = arr.astype(str)
        except (TypeError, ValueError) as exc:  # pragma: no cover - defensive
            raise InputError(f"{name}: labels must be integers or strings") from exc
    elif arr.dtype.kind not in "iuUSb":
        raise InputError(f"{name}: expected integer or string class labels, got dtype {arr.dtype}")
    if n_samples is not None and arr.shape[0] != n_samples:
        raise InputError(f"{name}: expected {n_samples} labels (one per feature row), got {arr.shape[0]}")
    classes, codes = np.unique(arr, return_inverse=True)
    if classes.size < min_classes:
        raise InputError(f"{name}: expected at least {min_classes} distinct classes, got {classes.size}")
    return codes.astype(np.int64).reshape(-1), classes


def as_numeric_matrix(x: object, name: str, *, min_rows: int = 2) -> np.ndarray:
    """``x`` as a 2-D numeric array (N, D), N >= ``min_rows``, **not converted or copied**.

    Float32, integer and memory-mapped arrays keep their dtype and storage; finiteness is left to
    the caller, which reads the array chunk by chunk (:meth:`emms.metrics.stats.SufficientStats.from_arrays`).
    """
    arr = _as_numeric(x, name)
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise InputError(f"{name}: expected at least {min_rows} samples (rows), got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise InputError(f"{name}: expected at least 1 feature column, got shape {arr.shape}")
    return arr


def as_f_labels(z: object, name: str = "f_labels", *, n_samples: int | None = None,
                min_rows: int = 2, copy: bool = True, convert: bool = True) -> list[FloatArray]:
    """Return F-labels as a list of K float64 arrays of shape (N, L_k).

    Accepts a sequence of 2-D arrays (widths may differ) or one array of shape (N, L, K).
    ``min_rows=1`` suits a chunk of a larger data set; ``copy`` as in :func:`as_float_matrix`;
    ``convert=False`` returns the blocks unconverted, as :func:`as_numeric_matrix` (no finiteness check).
    """
    if isinstance(z, np.ndarray) or (not isinstance(z, Sequence) and hasattr(z, "__array__")):
        arr = np.asarray(z)
        if arr.ndim == 2:
            blocks = [arr]
        elif arr.ndim == 3:
            blocks = [arr[:, :, k] for k in range(arr.shape[2])]
        else:
            raise InputError(f"{name}: expected a list of (N, L_k) arrays or one (N, L, K) array, got shape {arr.shape}")
    elif isinstance(z, Sequence) and not isinstance(z, (str, bytes)):
        blocks = list(z)
    else:
        raise InputError(f"{name}: expected a list of (N, L_k) arrays or one (N, L, K) array, got {type(z).__name__}")
    if len(blocks) == 0:
        raise InputError(f"{name}: expected at least one F-label array, got none")
    out = []
    for k, block in enumerate(blocks):
        if convert:
            arr = as_float_matrix(block, f"{name}[{k}]", min_rows=min_rows, copy=copy)
        else:
            arr = as_numeric_matrix(block, f"{name}[{k}]", min_rows=min_rows)
        if n_samples is not None and arr.shape[0] != n_samples:
            raise InputError(f"{name}[{k}]: expected {n_samples} rows (one per feature row), got {arr.shape[0]}")
        out.append(arr)
    n = out[0].shape[0]
    for k, arr in enumerate(out):
        if arr.shape[0] != n:
            raise InputError(f"{name}[{k}]: has {arr.shape[0]} rows but {name}[0] has {n}")
    return out


def check_same_rows(n_expected: int, arr: np.ndarray, name: str, reference: str = "features") -> None:
    """Raise if ``arr`` does not have ``n_expected`` rows."""
    if arr.shape[0] != n_expected:
        raise InputError(f"{name}: has {arr.shape[0]} rows but {reference} has {n_expected}")


def drop_constant_columns(x: FloatArray, name: str, *, rtol: float = 1e-12) -> tuple[FloatArray, np.ndarray]:
    """Drop columns whose spread is zero (to ``rtol`` of the column scale), warning once.

    Returns the reduced array and the boolean mask of kept columns. Raises if none is left.
    """
    keep = nonconstant_mask(x.min(axis=0), x.max(axis=0), rtol=rtol)
    if not keep.all():
        n_drop = int((~keep).sum())
        if not keep.any():
            raise InputError(f"{name}: every column is constant; nothing to score")
        warnings.warn(f"{name}: dropped {n_drop} constant column(s) of {x.shape[1]}", EmmsWarning, stacklevel=3)
        x = x[:, keep]
    return x, keep


def nonconstant_mask(col_min: np.ndarray, col_max: np.ndarray, *, rtol: float = 1e-12) -> np.ndarray:
    """Boolean mask of columns whose range exceeds ``rtol`` times max(|value|, 1).

    Works from per-column minima and maxima, so streamed statistics and in-memory arrays use the
    same rule (see :func:`drop_constant_columns`).
    """
    scale = np.maximum(np.maximum(np.abs(col_min), np.abs(col_max)), 1.0)
    return (col_max - col_min) > rtol * scale


def as_probability_matrix(p: object, name: str, *, n_samples: int | None = None, atol: float = 1e-6) -> FloatArray:
    """Return ``p`` as a float64 (N, K) matrix of probabilities: entries >= 0, rows summing to 1.

    A row may miss 1 by ``atol`` or by the rounding of its own dtype (K·eps: a float32 softmax over
    1000 classes is off by ~1e-5); such rows are renormalised to sum to 1 exactly.
    """
    dtype = np.asarray(p).dtype
    arr = as_float_matrix(p, name, min_rows=1)
    if n_samples is not None and arr.shape[0] != n_samples:
        raise InputError(f"{name}: expected {n_samples} rows (one per sample), got {arr.shape[0]}")
    sums = arr.sum(axis=1)
    rounding = arr.shape[1] * np.finfo(dtype).eps if dtype.kind == "f" else 0.0
    if (arr < 0).any() or not np.allclose(sums, 1.0, rtol=0.0, atol=max(atol, rounding)):
        raise InputError(f"{name}: expected probabilities (entries >= 0, each row summing to 1), got entries in "
                         f"[{arr.min():.3g}, {arr.max():.3g}] and row sums in [{sums.min():.3g}, {sums.max():.3g}]; "
                         "pass softmax(logits), not logits")
    return arr / sums[:, None]


def row_count(x: object, name: str = "features") -> int | None:
    """N of a 2-D array-like (N, D) without converting it, or None when ``x`` is None.

    For metrics that do not read an argument but must still check its row count (LEEP, NCE).
    """
    if x is None:
        return None
    shape = np.shape(x)
    if len(shape) != 2:
        raise InputError(f"{name}: expected a 2-D array of shape (n_samples, n_features), got shape {shape}")
    return shape[0]


def check_seed(seed: object, name: str = "seed") -> int:
    """Return ``seed`` as a non-negative int."""
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise InputError(f"{name}: expected a non-negative integer, got {seed!r}")
    return int(seed)


def as_torch_device(device: object, name: str = "device", *, kinds: tuple[str, ...] = ("cpu", "cuda", "mps")):
    """``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``) as a ``torch.device``.

    A device type outside ``kinds`` is an InputError; a CUDA/MPS device torch cannot see here is a
    ResourceError. Imports torch, so only callers that already need it should call this.
    """
    import torch

    accepted = ", ".join(f"'{k}'" + (", 'cuda:N'" if k == "cuda" else "") for k in kinds)
    accepted = " or ".join(accepted.rsplit(", ", 1))
    try:
        dev = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in kinds:
        raise InputError(f"{name}: expected {accepted}, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ResourceError(f"{name}: {device!r} requested but no CUDA GPU is available to torch; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ResourceError(f"{name}: {device!r} requested but MPS is not available; use --device cpu")
    return dev


def check_positive_int(value: object, name: str) -> int:
    """Return ``value`` as an int >= 1 (bools are not integers here)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _as_numeric(x: object, name: str) -> np.ndarray:
    if x is None:
        raise InputError(f"{name}: expected an array, got None")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: could not be read as an array ({exc})") from exc
    if arr.dtype.kind not in "fiub":
        raise InputError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.float64)
    if arr.size == 0:
        raise InputError(f"{name}: expected a non-empty array, got shape {arr.shape}")
    return arr


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{name}: contains {bad} NaN or Inf value(s); expected finite numbers")
