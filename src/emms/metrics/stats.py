"""Sufficient statistics of (features, F-labels) for EMMS, accumulated over row chunks.

EMMS only needs, after standardising every column,

* ``G   = X̃ᵀX̃``            (D, D)   Gram matrix of the features,
* ``C_k = X̃ᵀZ̃_k``          (D, L)   feature / F-label cross products of encoder k,
* ``A_kj = ⟨Z̃_k, Z̃_j⟩``     (K, K)   inner products between F-label blocks,

so one pass over the data suffices, in chunks, on any number of workers. :class:`SufficientStats`
keeps column means and *centred* co-moments and merges two partial results with the pairwise
update of Chan, Golub & LeVeque (1979)::

    M_ab = M_ab' + M_ab'' + (m_a' - m_a'')(m_b' - m_b'') n' n'' / (n' + n'')

which stays accurate when the columns carry large offsets (raw sums of squares would cancel).

Encoders of different widths L_k are reconciled in :meth:`SufficientStats.standardised`: every
column is standardised (population std), block k is multiplied by ``sqrt(L / L_k)`` (L_k counts
its non-constant columns) so that every encoder carries the same total variance N·L, and the
narrower blocks are zero-padded to ``L = max_k L_k`` (their raw widths). Column l of every encoder
stays column l, so with equal widths this is exactly the plain formula. Constant columns are
excluded with an :class:`~emms.errors.EmmsWarning`: feature columns are removed, F-label columns
are set to zero (keeping the alignment of the other columns).

Chunks may be numpy arrays or torch tensors on any device (:mod:`emms.compute.backend`): the same code
computes a chunk's moments in either namespace (numpy: in float64; torch: in the tensor's dtype)
and brings them to the host as float64, where chunks merge.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emms._validation import as_f_labels, as_numeric_matrix, nonconstant_mask
from emms.errors import EmmsWarning, InputError
from emms.metrics._products import cross_product

#: Raw (uncentred) products are used for a float64 chunk only if every column has mean² <= this × variance.
_MAX_OFFSET_RATIO = 1e4
#: :meth:`SufficientStats.from_arrays` reads about this many bytes of float64 per chunk.
_CHUNK_BYTES = 32 * 2**20


def chunk_rows_for(n_columns: int) -> int:
    """Rows per chunk so that one float64 chunk of ``n_columns`` columns takes about 32 MB (>= 256 rows)."""
    return max(256, _CHUNK_BYTES // (8 * max(int(n_columns), 1)))


def _namespace(a: Any) -> Any:
    """The array namespace of a chunk: ``torch`` for a tensor, else ``numpy``."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(a, torch.Tensor) else np


def _host(a: Any) -> np.ndarray:
    """A numpy float64 copy of a tensor (numpy arrays are returned as float64, uncopied when they are)."""
    if isinstance(a, np.ndarray):
        return a.astype(np.float64, copy=False)
    return a.detach().to("cpu", dtype=sys.modules["torch"].float64).numpy()


def _column_summary(a: Any, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column means, minima and maxima (host float64) of a torch chunk (n, m); InputError if it holds NaN/Inf."""
    xp = _namespace(a)
    summary = _host(xp.mean(a, axis=0, dtype=xp.float64)), _host(xp.amin(a, axis=0)), _host(xp.amax(a, axis=0))
    _check_finite(summary, [a], [name])
    return summary


def _check_finite(summary: tuple[np.ndarray, np.ndarray, np.ndarray], arrays: Sequence[Any], names: Sequence[str]) -> None:
    """InputError naming the first of ``arrays`` (side by side in ``summary``'s columns) that holds NaN or ±Inf,
    which reach the column minima/maxima of (mean, min, max)."""
    _, low, high = summary
    if np.isfinite(low).all() and np.isfinite(high).all():
        return
    for a, name in zip(arrays, names):
        xp = _namespace(a)
        bad = int(a.shape[0] * a.shape[1] - int(xp.count_nonzero(xp.isfinite(xp.asarray(a)))))
        if bad:
            raise InputError(f"{name}: contains {bad} NaN or Inf value(s) (in a chunk of {a.shape[0]} rows); "
                             "expected finite numbers")


#: :func:`_summary_pass` reads about this many bytes per row block (so a block is still in cache for its second use).
_BLOCK_BYTES = 2**20


def _summary_pass(x: np.ndarray, z: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, tuple, tuple, np.ndarray]:
    """One read of a numpy chunk, in row blocks of about 1 MB: -> (x64, z64, x summary, z summary, Σz²).

    ``x64`` (n, D) is ``x`` itself when it is float64, else a float64 copy; ``z64`` (n, ΣL_k) is a
    new float64 buffer with the blocks side by side (the caller may centre both copies in place).
    Summaries are (mean, min, max) per column (host float64; NaN/Inf propagate into min/max),
    ``Σz²`` the raw sum of squares of each column of z64. Reading each block once for all five
    (instead of one pass per reduction) is what keeps the statistics near the cost of its products.
    """
    n, d = x.shape
    offsets = np.cumsum([0] + [b.shape[1] for b in z])
    x64 = x if x.dtype == np.float64 else np.empty((n, d))
    z64 = np.empty((n, int(offsets[-1])))
    x_low, x_high, x_sum = np.full(d, np.inf), np.full(d, -np.inf), np.zeros(d)
    z_low, z_high = np.full(z64.shape[1], np.inf), np.full(z64.shape[1], -np.inf)
    z_sum, z_squares = np.zeros(z64.shape[1]), np.zeros(z64.shape[1])
    step = max(1, _BLOCK_BYTES // (8 * (d + z64.shape[1])))
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        if x64 is not x:
            x64[rows] = x[rows]
        for block, a, b in zip(z, offsets[:-1], offsets[1:]):
            z64[rows, a:b] = block[rows]
        for part, low, high, total in ((x64[rows], x_low, x_high, x_sum), (z64[rows], z_low, z_high, z_sum)):
            np.minimum(low, part.min(axis=0), out=low)
            np.maximum(high, part.max(axis=0), out=high)
            total += part.sum(axis=0)
        z_squares += np.einsum("nl,nl->l", z64[rows], z64[rows])
    return x64, z64, (x_sum / n, x_low, x_high), (z_sum / n, z_low, z_high), z_squares


def _add_outer(a: np.ndarray, alpha: float, x: np.ndarray, y: np.ndarray) -> None:
    """a += alpha·x yᵀ in place for a C-contiguous float64 a (m, n): one BLAS rank-1 update (dger on
    the Fortran view aᵀ), without the (m, n) temporaries of ``a -= alpha * np.outer(x, y)``."""
    from scipy.linalg.blas import dger

    updated = dger(alpha, y, x, a=a.T, overwrite_a=True)
    if not np.shares_memory(updated, a):  # not updated in place (a not C-contiguous): copy the result back
        a[...] = updated.T


@dataclass(frozen=True)
class StandardStats:
    """Standardised statistics, ready for the EMMS solver.

    Attributes: ``gram`` G (D', D'), ``cross`` C (K, D', L) with blocks rescaled and zero-padded,
    ``label_inner`` A (K, K), ``n_samples`` N, ``label_width`` L, ``feature_mask`` (D,) the kept
    feature columns, ``label_masks`` the kept columns of each encoder, ``labels`` how the F-labels
    were scaled ("columns" or "blocks", see :meth:`SufficientStats.standardised`).
    """

    gram: np.ndarray
    cross: np.ndarray
    label_inner: np.ndarray
    n_samples: int
    label_width: int
    feature_mask: np.ndarray
    label_masks: tuple[np.ndarray, ...]
    labels: str = "columns"

    @property
    def n_features(self) -> int:
        """D': the number of non-constant feature columns."""
        return self.gram.shape[0]


def in_eigenbasis(stats: StandardStats, *, device: str = "cpu") -> StandardStats:
    """The same EMMS problem in G's eigenbasis, G = V diag(s) Vᵀ decomposed on a torch ``device``:
    gram diag(s) (D', D'), cross VᵀC_k (K, D', L). EMMS depends on X only through (s, VᵀC_k)."""
    import dataclasses

    import torch

    values, vectors = torch.linalg.eigh(torch.as_tensor(stats.gram, device=device, dtype=torch.float64))
    cross = torch.matmul(vectors.T, torch.as_tensor(stats.cross, device=device, dtype=torch.float64))
    return dataclasses.replace(stats, gram=np.diag(_host(values)), cross=_host(cross))


def _centred(xp: Any, blocks: Sequence[Any], means: np.ndarray, offsets: Sequence[tuple[int, int]]) -> Any:
    """[B_1 − m_1, …, B_K − m_K] (n, ΣL_k) of torch blocks in one tensor (their dtype, on their device);
    ``means`` (ΣL_k,) host float64, column ranges ``offsets``."""
    first = blocks[0]
    out = xp.empty((first.shape[0], offsets[-1][1]), dtype=first.dtype, device=first.device)
    for (start, stop), block in zip(offsets, blocks):
        out[:, start:stop] = block
        out[:, start:stop] -= xp.asarray(means[start:stop], dtype=first.dtype, device=first.device)
    return out


class SufficientStats:
    """Running float64 statistics of features X (N, D) and K F-label blocks Z_k (N, L_k).

    ``update(x_chunk, z_chunks)`` adds rows; ``merge(other)`` combines two partial results;
    ``standardised()`` returns the :class:`StandardStats` EMMS needs. Shapes are fixed by the first
    chunk. Memory: O(D² + D·ΣL_k + K²·max L_k). ``paired=False`` skips the cross-encoder paired
    co-moments (K(K−1)/2 passes over the F-labels), which only the column mixture needs.
    """

    def __init__(self, *, paired: bool = True) -> None:
        self.paired = paired
        self.n_samples = 0
        self._widths: tuple[int, ...] | None = None
        self._n_features: int | None = None

    @classmethod
    def from_arrays(cls, features: object, f_labels: object, *, chunk_rows: int | None = None,
                    paired: bool = True) -> SufficientStats:
        """Statistics of whole arrays: features (N, D), f_labels as in :meth:`update`.

        Any array-like (float32, float64, integer, ``numpy.memmap``) is read ``chunk_rows`` rows at
        a time (default: :func:`chunk_rows_for`, about 32 MB of float64 per chunk): peak memory is
        one float64 chunk plus O(D² + D·ΣL_k), never a whole-array copy. Chunks merge exactly as in
        :meth:`merge`, so the result equals streaming the same rows (:mod:`emms.compute.streaming`).
        """
        x = as_numeric_matrix(features, "features")
        z = as_f_labels(f_labels, "f_labels", n_samples=x.shape[0], convert=False)
        names = ["features"] + [f"f_labels[{k}]" for k in range(len(z))]
        rows = chunk_rows_for(x.shape[1] + sum(b.shape[1] for b in z)) if chunk_rows is None else int(chunk_rows)
        stats = None
        for start in range(0, x.shape[0], rows):
            stop = min(start + rows, x.shape[0])
            chunk = cls._of_chunk(x[start:stop], [b[start:stop] for b in z], names, paired)
            stats = chunk if stats is None else stats._absorb(chunk)
        return stats

    @property
    def label_widths(self) -> tuple[int, ...]:
        """Raw widths L_k of the F-label blocks (empty before the first update)."""
        return self._widths or ()

    def update(self, x_chunk: object, z_chunks: object) -> SufficientStats:
        """Add the rows ``x_chunk`` (n, D) and ``z_chunks`` (K arrays (n, L_k) or one (n, L, K)).

        Returns self. Inputs are not modified. Torch tensors (``x_chunk`` and a list of K blocks, on
        one device) are accumulated where they are, in their dtype.
        """
        if _namespace(x_chunk) is np:
            x = as_numeric_matrix(x_chunk, "x_chunk", min_rows=1)
            z = as_f_labels(z_chunks, "z_chunks", n_samples=x.shape[0], min_rows=1, convert=False)
        else:
            x, z = x_chunk, list(z_chunks)  # type: ignore[call-overload]
            if x.ndim != 2 or x.shape[0] < 1 or not z or any(b.ndim != 2 or b.shape[0] != x.shape[0] for b in z):
                raise InputError(f"x_chunk, z_chunks: expected tensors (n, D) and K >= 1 tensors (n, L_k), got shapes "
                                 f"{tuple(x.shape)} and {[tuple(b.shape) for b in z]}")
        names = ["x_chunk"] + [f"z_chunks[{k}]" for k in range(len(z))]
        return self._absorb(self._of_chunk(x, z, names, self.paired))

    def merge(self, other: SufficientStats) -> SufficientStats:
        """Add the rows summarised by ``other`` into self (Chan's pairwise update); returns self."""
        if not isinstance(other, SufficientStats):
            raise InputError(f"other: expected a SufficientStats, got {type(other).__name__}")
        return self._absorb(other)

    def standardised(self, labels: str = "columns") -> StandardStats:
        """Standardise, reconcile encoder widths and drop constant columns (see the module doc).

        ``labels="columns"``: every F-label column standardised and blocks rescaled to N·L (the
        paper's column-wise mixture). ``labels="blocks"``: F-labels only centred (constant columns
        zeroed), so each block keeps its geometry: C_k = X̃ᵀ(Z_k − z̄_k) and A_kk = ‖Z_k − z̄_k‖²_F
        are invariant to an orthogonal transform of Z_k (EMMS's per-encoder score).
        """
        if labels not in ("columns", "blocks"):
            raise InputError(f"labels: expected 'columns' or 'blocks', got {labels!r}")
        if labels == "columns" and not self.paired and len(self._widths) > 1:
            raise InputError("stats: the column mixture needs the paired co-moments; accumulate with paired=True")
        n = self.n_samples
        if n < 2:
            raise InputError(f"features: expected at least 2 samples, got {n}")
        keep_x = nonconstant_mask(self._x_min, self._x_max)
        if not keep_x.any():
            raise InputError("features: every column is constant; nothing to score")
        if not keep_x.all():
            warnings.warn(f"features: dropped {int((~keep_x).sum())} constant column(s) of {keep_x.size}",
                          EmmsWarning, stacklevel=3)
        sd_x = self._feature_sd(keep_x)
        gram = self._xx[np.ix_(keep_x, keep_x)] / np.outer(sd_x, sd_x)

        width = max(self._widths)
        n_blocks = len(self._widths)
        label_masks = []
        z_scale = np.zeros((n_blocks, width))  # 1 / std * sqrt(L / L_k) for kept columns, 0 otherwise
        cross = np.zeros((n_blocks, keep_x.sum(), width))
        for k, (start, stop) in enumerate(self._offsets()):
            keep = nonconstant_mask(self._z_min[start:stop], self._z_max[start:stop])
            if not keep.any():
                raise InputError(f"f_labels[{k}]: every column is constant; nothing to regress on")
            if not keep.all():
                warnings.warn(f"f_labels[{k}]: ignored {int((~keep).sum())} constant column(s) of {keep.size}",
                              EmmsWarning, stacklevel=3)
            sd = np.sqrt(self._zz[k, k, : stop - start] / n)
            z_scale[k, : stop - start][keep] = np.sqrt(width / keep.sum()) / sd[keep] if labels == "columns" else 1.0
            cross[k, :, : stop - start] = self._xz[keep_x, start:stop] / sd_x[:, None] * z_scale[k, : stop - start]
            label_masks.append(keep)
        label_inner = np.einsum("kjl,kl,jl->kj", self._zz, z_scale, z_scale)
        return StandardStats(gram=gram, cross=cross, label_inner=label_inner, n_samples=n,
                             label_width=width, feature_mask=keep_x, label_masks=tuple(label_masks), labels=labels)

    def standardised_rows(self, features: object, feature_mask: np.ndarray) -> np.ndarray:
        """X̃ (N, D'): ``features`` (the rows these statistics hold) centred, restricted to ``feature_mask``
        (``standardised().feature_mask``) and divided by each column's population sd, in float64;
        X̃ᵀX̃ is ``standardised().gram``. For N < D, where (N, N) products are the cheap side."""
        x = as_numeric_matrix(features, "features")
        return (np.asarray(x[:, feature_mask], dtype=np.float64) - self._x_mean[feature_mask]) / self._feature_sd(feature_mask)

    # -- internals -------------------------------------------------------------------------------

    def _feature_sd(self, keep: np.ndarray) -> np.ndarray:
        return np.sqrt(np.diag(self._xx)[keep] / self.n_samples)

    def _offsets(self) -> list[tuple[int, int]]:
        ends = np.cumsum(self._widths)
        return [(int(e - w), int(e)) for e, w in zip(ends, self._widths)]

    @classmethod
    def _of_chunk(cls, x: Any, z: Sequence[Any], names: Sequence[str], paired: bool) -> SufficientStats:
        """Statistics of one chunk: the one computation behind :meth:`from_arrays` and :meth:`update`.

        ``x`` (n, D) and the blocks of ``z`` (n, L_k) are numeric numpy arrays of any dtype or torch
        tensors (read, never written). numpy chunks are read once, in cache-sized row blocks
        (:func:`_summary_pass`), into float64 [X] and [Z_1, …, Z_K] with every column's minimum,
        maximum and sum; the co-moments then come from raw products when that loses nothing
        (:meth:`_uncentred_moments`), else from the buffers centred in place. Torch chunks are
        centred on their device, in their dtype. NaN/Inf show up in the minima/maxima, which are
        checked (InputError naming ``names[i]``).
        """
        stats = cls(paired=paired)
        stats.n_samples = x.shape[0]
        stats._n_features = x.shape[1]
        stats._widths = tuple(block.shape[1] for block in z)
        offsets = stats._offsets()
        xp = _namespace(x)
        if xp is np:
            x64, z64, x_summary, z_summary, z_squares = _summary_pass(x, z)
            _check_finite(x_summary, [x], names[:1])
            _check_finite(z_summary, z, names[1:])
            (stats._x_mean, stats._x_min, stats._x_max), (stats._z_mean, stats._z_min, stats._z_max) = x_summary, z_summary
            if stats._uncentred_moments(x64, z64, z_squares):
                return stats
            xc = x64 - stats._x_mean if x64 is x else np.subtract(x64, stats._x_mean, out=x64)
            zc = np.subtract(z64, stats._z_mean, out=z64)
        else:
            stats._x_mean, stats._x_min, stats._x_max = _column_summary(x, names[0])
            summaries = [_column_summary(block, name) for block, name in zip(z, names[1:])]
            stats._z_mean, stats._z_min, stats._z_max = (np.concatenate(parts) for parts in zip(*summaries))
            xc = _centred(xp, [x], stats._x_mean, [(0, x.shape[1])])
            zc = _centred(xp, z, stats._z_mean, offsets)
        stats._xx = _host(xc.T @ xc)
        stats._xz = _host(cross_product(xc, zc))
        stats._set_label_moments(lambda a, c, m: _host(xp.einsum("nl,nl->l", zc[:, a:a + m], zc[:, c:c + m])),
                                 _host(xp.einsum("nl,nl->l", zc, zc)))
        return stats

    def _uncentred_moments(self, x: np.ndarray, z: np.ndarray, z_squares: np.ndarray) -> bool:
        """Co-moments of float64 x (n, D) and z (n, ΣL_k) from raw products (``z_squares`` = Σ z², per
        column), without centring; False (nothing set) when a column's offset would cost accuracy.

        M = AᵀB − n·āb̄ᵀ loses about log10(ā²/var_a) digits to cancellation; it is used only when
        every column has mean² <= 1e4·variance (error <= ~1e-12 relative), else the caller centres.
        """
        n = self.n_samples
        spread = np.concatenate([self._x_max - self._x_min, self._z_max - self._z_min])
        if np.any(np.abs(np.concatenate([self._x_mean, self._z_mean])) > 100.0 * spread):
            return False  # the variance is at most the range squared: certainly too large an offset
        squares = z_squares - n * self._z_mean**2
        xx = x.T @ x
        _add_outer(xx, -float(n), self._x_mean, self._x_mean)
        variances = np.concatenate([np.diag(xx), squares]) / n
        if np.any(np.concatenate([self._x_mean, self._z_mean]) ** 2 > _MAX_OFFSET_RATIO * variances):
            return False
        self._xx = xx
        self._xz = cross_product(x, z)
        _add_outer(self._xz, -float(n), self._x_mean, self._z_mean)
        mean = self._z_mean
        self._set_label_moments(lambda a, c, m: (np.einsum("nl,nl->l", z[:, a:a + m], z[:, c:c + m])
                                                    - n * mean[a:a + m] * mean[c:c + m]), squares)
        return True

    def _set_label_moments(self, paired_moment: Any, squares: np.ndarray) -> None:
        """_zz[k, j, l] = Σ_i z̃_k[i, l] z̃_j[i, l] for l < min(L_k, L_j): ``squares`` (ΣL_k,) gives k = j,
        ``paired_moment(a, c, m)`` the pairs k < j (the m columns from a and from c); the pairs only
        if ``paired`` (the per-encoder score needs each column's square sum)."""
        offsets = self._offsets()
        self._zz = np.zeros((len(offsets), len(offsets), max(self._widths)))
        for k, (a, b) in enumerate(offsets):
            self._zz[k, k, : b - a] = squares[a:b]
            for j in range(k + 1, len(offsets) if self.paired else k + 1):
                m, c = min(b - a, offsets[j][1] - offsets[j][0]), offsets[j][0]
                self._zz[k, j, :m] = self._zz[j, k, :m] = paired_moment(a, c, m)

    def _absorb(self, other: SufficientStats) -> SufficientStats:
        if other.n_samples == 0:
            return self
        if self.n_samples == 0:
            self.__dict__.update({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in other.__dict__.items()})
            return self
        if other._n_features != self._n_features:
            raise InputError(f"x_chunk: expected {self._n_features} feature columns (as in earlier chunks), "
                             f"got {other._n_features}")
        if other.paired != self.paired:
            raise InputError(f"other: cannot merge statistics with paired={other.paired} into paired={self.paired}")
        if other._widths != self._widths:
            raise InputError(f"z_chunks: expected F-label widths {list(self._widths)} (as in earlier chunks), "
                             f"got {list(other._widths)}")
        n_a, n_b = self.n_samples, other.n_samples
        n = n_a + n_b
        factor = n_a * n_b / n
        dx = other._x_mean - self._x_mean
        dz = other._z_mean - self._z_mean
        self._xx += other._xx
        _add_outer(self._xx, factor, dx, dx)
        self._xz += other._xz
        _add_outer(self._xz, factor, dx, dz)
        dz_blocks = np.zeros((len(self._widths), max(self._widths)))
        for k, (a, b) in enumerate(self._offsets()):
            dz_blocks[k, : b - a] = dz[a:b]
        self._zz += other._zz + factor * dz_blocks[:, None, :] * dz_blocks[None, :, :]
        self._x_mean = self._x_mean + dx * (n_b / n)
        self._z_mean = self._z_mean + dz * (n_b / n)
        np.minimum(self._x_min, other._x_min, out=self._x_min)
        np.maximum(self._x_max, other._x_max, out=self._x_max)
        np.minimum(self._z_min, other._z_min, out=self._z_min)
        np.maximum(self._z_max, other._z_max, out=self._z_max)
        self.n_samples = n
        return self
