"""Out-of-core scoring: metrics computed from statistics accumulated over row chunks on disk.

Most metrics are functions of sufficient statistics (``shared/DESIGN.md``), so they need one pass
over the features in chunks, never the whole (N, D) array in memory. A chunk's statistics are
computed on their own and merged pairwise in a fixed binary tree (:func:`tree_reduce`), so the
same chunks give bit-identical statistics in this process and on Dask workers (:mod:`emms.parallel`).

How each metric streams (:data:`STREAM_METHODS`):

==================  ==============================================================================
emms                one pass: :class:`emms.stats.SufficientStats` (G, C_k, A_kj, means, co-moments)
logme               one pass: FᵀF, FᵀY (classes: per-class feature sums), ‖y‖²
logme_flabels       one pass: FᵀF, FᵀZ, ‖z‖² over the concatenated F-label columns
hscore              one pass: centred co-moment M, class means, counts (:class:`ClassMoments`)
hscore_reg          one pass: as hscore plus Σ‖x − μ‖⁴ for the Ledoit–Wolf shrinkage
gbc                 one pass: class means and per-class variances per dimension
transrate           one pass (``variant="centred"``): per-class (D, D) co-moments, O(C·D²) memory;
                    two passes (``"official"``): the mean, then the normalised rows' moments
leep                two passes: the joint N·P(y, z), then Σ log of the empirical predictor
nce                 one pass: the (C, C_s) joint count table
others              not streamable (NLEEP, kNN, PARC, SFDA, PACTran, linear probe need the rows
                    together; NCTI and ETran are pool-relative): scored on a seeded stratified
                    subsample of ``max_rows`` rows (classes keep their proportions, at least one
                    row each), read in one pass; exact when N <= ``max_rows``
==================  ==============================================================================

Chunked sources (:func:`open_source`): a ``.npy`` file (read with plain file reads at byte
offsets, so resident memory stays at one chunk; a ``numpy.memmap`` would keep every page it
touched resident), a zarr array or folder, a :class:`~emms.store.Store` entry
(:func:`store_source`), any array-like with ``shape`` and row slicing (numpy, memmap, zarr, h5py),
and :class:`IndexedRows` (row i = ``table[index[i]]``: class-level F-labels without an (N, L) copy).
Targets (class labels, real values) and source probabilities are small next to the features and
are held in memory; F-labels may be sources.

Equality: streamed scores equal the in-memory functions' to ~1e-12 relative (tested at 1e-9 with
uneven chunks), because both call the same from-statistics function of each metric module.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emms._validation import as_class_labels, as_float_matrix, as_probability_matrix, check_seed
from emms.errors import EmmsWarning, InputError
from emms.metrics._common import one_hot, stratified_subsample
from emms.metrics.registry import check_target_kind, get_metric, score, score_pool
from emms.stats import SufficientStats, cross_product

DEFAULT_CHUNK_ROWS = 16_384
DEFAULT_MAX_ROWS = 10_000

STREAM_METHODS = {
    "emms": "one pass (sufficient statistics)",
    "logme": "one pass (FᵀF, FᵀY, ‖y‖²)",
    "logme_flabels": "one pass (FᵀF, FᵀZ, ‖z‖²)",
    "hscore": "one pass (co-moment, class means)",
    "hscore_reg": "one pass (co-moment, class means, Σ‖x−μ‖⁴)",
    "gbc": "one pass (class means and variances)",
    "transrate": "one pass (per-class co-moments); variant='official': two passes",
    "leep": "two passes (joint, then log predictions)",
    "nce": "one pass (joint counts)",
}
"""Streamable metrics and how they stream; every other metric uses a seeded stratified subsample."""


# ------------------------------------------------------------------------------------- sources

@runtime_checkable
class ChunkSource(Protocol):
    """Rows of an (N, D) array read a chunk at a time."""

    shape: tuple[int, int]

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as an in-memory array (stop - start, D)."""


class ArraySource:
    """Any array-like with a 2-D ``shape`` and row slicing: numpy, ``numpy.memmap``, zarr, h5py."""

    def __init__(self, array: Any, name: str = "features") -> None:
        shape = tuple(getattr(array, "shape", ()))
        if len(shape) != 2:
            raise InputError(f"{name}: expected a 2-D array (n_samples, n_columns) or a .npy/zarr path, "
                             f"got {type(array).__name__} of shape {shape}")
        self.array, self.shape = array, (int(shape[0]), int(shape[1]))

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.array[start:stop])


class NpyFile:
    """A C-ordered 2-D ``.npy`` file read by byte offset (bounded resident memory; picklable)."""

    def __init__(self, path: str | Path, name: str = "features") -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as handle:
                version = np.lib.format.read_magic(handle)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(handle)
                self.offset = handle.tell()
        except FileNotFoundError:
            raise InputError(f"{name}: file not found: {self.path}") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{name}: {self.path} is not a readable .npy file ({exc})") from None
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise InputError(f"{name}: {self.path} must hold a C-ordered numeric 2-D array, got shape {shape}, "
                             f"dtype {dtype}{', Fortran order' if fortran else ''}")
        self.shape, self.dtype = (int(shape[0]), int(shape[1])), dtype

    def read(self, start: int, stop: int) -> np.ndarray:
        row_bytes = self.shape[1] * self.dtype.itemsize
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + start * row_bytes)
            rows = np.fromfile(handle, dtype=self.dtype, count=(stop - start) * self.shape[1])
        if rows.size != (stop - start) * self.shape[1]:
            raise InputError(f"features: {self.path} is truncated (rows {start}:{stop} missing)")
        return rows.reshape(stop - start, self.shape[1])


@dataclass(frozen=True)
class IndexedRows:
    """Rows gathered from a small table: row i is ``table[index[i]]``.

    ``table`` (M, L), ``index`` (N,) integers in 0..M-1. Class-level F-labels (one embedding per
    class name) stream this way without materialising the (N, L) array.
    """

    table: np.ndarray
    index: np.ndarray

    def __post_init__(self) -> None:
        table, index = np.asarray(self.table), np.asarray(self.index)
        if table.ndim != 2 or index.ndim != 1 or index.dtype.kind not in "iu":
            raise InputError(f"IndexedRows: expected table (M, L) and an integer index (N,), got shapes "
                             f"{table.shape} and {index.shape} ({index.dtype})")
        if index.size and (index.min() < 0 or index.max() >= table.shape[0]):
            raise InputError(f"IndexedRows: index values must lie in 0..{table.shape[0] - 1}")

    @property
    def shape(self) -> tuple[int, int]:
        return (int(np.shape(self.index)[0]), int(np.shape(self.table)[1]))

    def read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.table)[np.asarray(self.index)[start:stop]]


def open_source(obj: object, name: str = "features") -> ChunkSource:
    """A :class:`ChunkSource` for a ``.npy`` path, a zarr path, a source, or an array-like."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        if path.suffix == ".npy":
            return NpyFile(path, name)
        if path.is_dir():
            import zarr

            try:
                array = zarr.open(str(path), mode="r")
            except Exception as exc:  # zarr raises several types for a folder that is not zarr
                raise InputError(f"{name}: {path} is not a zarr array ({type(exc).__name__}: {exc})") from None
            if not hasattr(array, "shape"):
                raise InputError(f"{name}: {path} is a zarr group; pass the path of one array inside it")
            return ArraySource(array, name)
        raise InputError(f"{name}: expected a .npy file or a zarr folder, got {path}"
                         + ("" if path.exists() else " (not found)"))
    if isinstance(obj, (NpyFile, ArraySource, IndexedRows)) or (
            isinstance(obj, ChunkSource) and not isinstance(obj, np.ndarray)):
        return obj
    return ArraySource(obj, name)


def store_source(store, key: str) -> NpyFile:
    """The features of a complete :class:`~emms.store.Store` entry, read in chunks.

    Chunked reads skip the entry's whole-file checksum (use ``store.get`` for a verified read).
    """
    path = store.entry_path(key) / "data.npy"
    if not path.is_file():
        raise InputError(f"key: no complete store entry {key!r} in {store.root}")
    return NpyFile(path, f"store entry {key}")


def chunk_bounds(n_rows: int, chunk_rows: int | Sequence[int]) -> list[tuple[int, int]]:
    """Row ranges [start, stop) covering 0..n_rows: chunks of ``chunk_rows`` rows, or the given sizes."""
    if isinstance(chunk_rows, (int, np.integer)) and not isinstance(chunk_rows, bool):
        if chunk_rows < 1:
            raise InputError(f"chunk_rows: expected a positive integer, got {chunk_rows}")
        sizes = [int(chunk_rows)] * (-(-n_rows // int(chunk_rows)))
        sizes[-1] = n_rows - int(chunk_rows) * (len(sizes) - 1)
    else:
        sizes = [int(s) for s in chunk_rows]
        if any(s < 1 for s in sizes) or sum(sizes) != n_rows:
            raise InputError(f"chunk_rows: expected a positive integer or positive chunk sizes summing to {n_rows}, "
                             f"got sizes summing to {sum(sizes)}")
    ends = np.cumsum(sizes)
    return [(int(e - s), int(e)) for e, s in zip(ends, sizes)]


def tree_reduce(items: Iterable, merge: Callable[[Any, Any], Any]) -> Any:
    """Combine ``items`` with ``merge(left, right)`` along a fixed balanced binary tree.

    The tree depends only on the number of items (merge two equal-height subtrees as soon as both
    exist, then fold the rest right to left), so the result is the same whether ``merge`` runs here
    or builds a Dask graph. Holds O(log n) partial results.
    """
    stack: list[tuple[int, Any]] = []
    for item in items:
        height, node = 0, item
        while stack and stack[-1][0] == height:
            _, left = stack.pop()
            height, node = height + 1, merge(left, node)
        stack.append((height, node))
    if not stack:
        raise InputError("features: expected at least one chunk of rows")
    result = stack.pop()[1]
    while stack:
        result = merge(stack.pop()[1], result)
    return result


# -------------------------------------------------------------------------------- accumulators

class Sums:
    """Named arrays that add when merged: raw cross products, count tables, sums of logs."""

    def __init__(self, **values: object) -> None:
        self.values = {k: np.asarray(v) for k, v in values.items()}

    def merge(self, other: Sums) -> Sums:
        """Add ``other`` into self; returns self."""
        for k, v in other.values.items():
            self.values[k] = self.values[k] + v
        return self

    def __getitem__(self, key: str) -> np.ndarray:
        return self.values[key]


class ClassMoments:
    """Class-conditional moments of features x (N, D) with class codes (N,) in 0..C-1.

    Always: ``n_samples``, ``mean`` μ (D,), ``comoment`` Σ(x−μ)(x−μ)ᵀ (D, D), ``counts`` n_c (C,),
    ``class_means`` μ_c (C, D) (0 for an absent class). ``per_class="diag"`` adds
    ``class_comoments`` Σ_{i∈c}(x_i−μ_c)² (C, D); ``"full"`` the (C, D, D) co-moments.
    ``norm_moments=True`` adds ``norm_cubed`` Σ‖x−μ‖²(x−μ) (D,) and ``norm_fourth`` Σ‖x−μ‖⁴.
    ``merge`` is Chan, Golub & LeVeque's pairwise update; the norm moments are shifted to the
    merged mean with (u = x − μ, centre moved by δ, M the co-moment)::

        Σ‖u−δ‖²(u−δ) = T − 2Mδ − tr(M)δ − n‖δ‖²δ
        Σ‖u−δ‖⁴     = Q − 4δᵀT + 4δᵀMδ + 2‖δ‖²tr(M) + n‖δ‖⁴
    """

    PER_CLASS = ("mean", "diag", "full")

    def __init__(self, n_classes: int, n_features: int, *, per_class: str = "mean",
                 norm_moments: bool = False) -> None:
        if per_class not in self.PER_CLASS:
            raise InputError(f"per_class: expected one of {self.PER_CLASS}, got {per_class!r}")
        self.per_class, self.norm_moments = per_class, norm_moments
        self.n_samples = 0
        self.mean = np.zeros(n_features)
        self.comoment = np.zeros((n_features, n_features))
        self.counts = np.zeros(n_classes, dtype=np.int64)
        self.class_means = np.zeros((n_classes, n_features))
        shape = {"mean": None, "diag": (n_classes, n_features), "full": (n_classes, n_features, n_features)}[per_class]
        self.class_comoments = None if shape is None else np.zeros(shape)
        self.norm_cubed = np.zeros(n_features) if norm_moments else None
        self.norm_fourth = 0.0

    def update(self, x: np.ndarray, codes: np.ndarray) -> ClassMoments:
        """Add validated float64 rows ``x`` (n, D) with class ``codes`` (n,); returns self."""
        chunk = ClassMoments(self.counts.size, x.shape[1], per_class=self.per_class, norm_moments=self.norm_moments)
        chunk.n_samples = x.shape[0]
        chunk.mean = x.mean(axis=0)
        centred = x - chunk.mean
        chunk.comoment = centred.T @ centred
        if self.norm_moments:
            squared = np.einsum("nd,nd->n", centred, centred)
            chunk.norm_cubed, chunk.norm_fourth = centred.T @ squared, float(squared @ squared)
        order = np.argsort(codes, kind="stable")
        chunk.counts = np.bincount(codes, minlength=self.counts.size)
        present = np.flatnonzero(chunk.counts)
        starts = np.concatenate([[0], np.cumsum(chunk.counts[present])[:-1]])
        rows = x[order]
        chunk.class_means[present] = np.add.reduceat(rows, starts, axis=0) / chunk.counts[present, None]
        if self.per_class != "mean":
            within = rows - np.repeat(chunk.class_means[present], chunk.counts[present], axis=0)
            if self.per_class == "diag":
                chunk.class_comoments[present] = np.add.reduceat(within**2, starts, axis=0)
            else:
                for c, start, size in zip(present, starts, chunk.counts[present]):
                    block = within[start:start + size]
                    chunk.class_comoments[c] = block.T @ block
        return self.merge(chunk)

    def merge(self, other: ClassMoments) -> ClassMoments:
        """Add the rows summarised by ``other`` into self; returns self."""
        if other.n_samples == 0:
            return self
        if self.n_samples == 0:
            self.__dict__.update(copy.deepcopy(other.__dict__))
            return self
        n_a, n_b = self.n_samples, other.n_samples
        n = n_a + n_b
        delta = other.mean - self.mean
        if self.norm_moments:
            cubed_a, fourth_a = _shift_norm_moments(n_a, self.comoment, self.norm_cubed, self.norm_fourth,
                                                    delta * (n_b / n))
            cubed_b, fourth_b = _shift_norm_moments(n_b, other.comoment, other.norm_cubed, other.norm_fourth,
                                                    -delta * (n_a / n))
            self.norm_cubed, self.norm_fourth = cubed_a + cubed_b, fourth_a + fourth_b
        self.comoment = self.comoment + other.comoment + (n_a * n_b / n) * np.outer(delta, delta)
        self.mean = self.mean + delta * (n_b / n)
        self.n_samples = n
        counts = self.counts + other.counts
        safe = np.maximum(counts, 1)
        factor = self.counts * other.counts / safe                 # 0 where either side has no rows
        class_delta = other.class_means - self.class_means
        if self.per_class == "diag":
            self.class_comoments = self.class_comoments + other.class_comoments + factor[:, None] * class_delta**2
        elif self.per_class == "full":
            self.class_comoments = (self.class_comoments + other.class_comoments
                                    + factor[:, None, None] * class_delta[:, :, None] * class_delta[:, None, :])
        self.class_means = self.class_means + class_delta * (other.counts / safe)[:, None]
        self.counts = counts
        return self

    def class_grams(self, centre: np.ndarray) -> np.ndarray:
        """Σ_{i∈c} (x_i − centre)(x_i − centre)ᵀ per class (C, D, D); needs ``per_class="full"``."""
        offsets = self.class_means - centre
        return self.class_comoments + self.counts[:, None, None] * offsets[:, :, None] * offsets[:, None, :]


def _shift_norm_moments(n: int, comoment: np.ndarray, cubed: np.ndarray, fourth: float,
                        delta: np.ndarray) -> tuple[np.ndarray, float]:
    """Norm moments about a centre moved by ``delta`` (formulas in :class:`ClassMoments`)."""
    trace, sq = float(np.trace(comoment)), float(delta @ delta)
    m_delta = comoment @ delta
    new_cubed = cubed - 2.0 * m_delta - trace * delta - n * sq * delta
    new_fourth = fourth - 4.0 * float(delta @ cubed) + 4.0 * float(delta @ m_delta) + 2.0 * sq * trace + n * sq**2
    return new_cubed, new_fourth


# ---------------------------------------------------------------------------------------- plans

@dataclass(frozen=True)
class ScoreResult:
    """A streamed score; ``weights`` are EMMS's simplex weights t (K,) (None for other metrics)."""

    score: float
    weights: np.ndarray | None = None


class StreamPlan:
    """What one metric computes per chunk and from the merged statistics.

    ``chunk(pass_index, state, start, stop)`` returns the statistics of rows start:stop (reading the
    sources itself, so a Dask worker does the reading); ``finish(pass_index, state, merged)`` returns
    the state of the next pass, or the :class:`ScoreResult` after the last one. Picklable.
    """

    n_passes = 1

    def __init__(self, metric: str, features: ChunkSource, target: object, kind: str, *,
                 source_probs: object = None, options: Mapping[str, object] | None = None) -> None:
        self.metric, self.features, self.kind = metric, features, kind
        self.options = dict(options or {})
        self.n_rows = features.shape[0]
        if kind == "flabels":
            self.flabels = flabel_sources(target, self.n_rows)
        elif kind == "classes":
            self.codes, classes = as_class_labels(target, "target", n_samples=self.n_rows)
            self.n_classes = classes.size
        else:
            from emms.metrics.logme import target_columns

            self.target = target_columns(target, self.n_rows, kind)
        self.probs = None if source_probs is None else open_source(source_probs, "source_probs")
        if self.probs is not None and self.probs.shape[0] != self.n_rows:
            raise InputError(f"source_probs: has {self.probs.shape[0]} rows but features has {self.n_rows}")
        if metric == "transrate" and self.options.get("variant") == "official":
            self.n_passes = 2
        if metric == "leep":
            self.n_passes = 2

    def read_features(self, start: int, stop: int) -> np.ndarray:
        return as_float_matrix(self.features.read(start, stop), "features", min_rows=1)

    def read_probs(self, start: int, stop: int) -> np.ndarray:
        return as_probability_matrix(self.probs.read(start, stop), "source_probs")

    def chunk(self, pass_index: int, state: object, start: int, stop: int) -> object:
        m = self.metric
        if m == "emms":
            paired = self.options.get("mixture") == "columns"  # only the column mixture needs cross-encoder terms
            return SufficientStats(paired=paired).update(self.features.read(start, stop),  # validated there
                                            [src.read(start, stop) for src in self.flabels])
        if m in ("logme", "logme_flabels"):
            x = self.read_features(start, stop)
            if self.kind == "classes":
                y = one_hot(self.codes[start:stop], self.n_classes)
            elif self.kind == "flabels":
                y = np.concatenate([as_float_matrix(src.read(start, stop), f"f_labels[{k}]", min_rows=1)
                                    for k, src in enumerate(self.flabels)], axis=1)
            else:
                y = self.target[start:stop]
            return Sums(gram=x.T @ x, cross=cross_product(x, y), target_sq=np.einsum("nt,nt->t", y, y), n=x.shape[0])
        codes = self.codes[start:stop]
        if m == "nce":
            from emms.metrics.nce import joint_counts

            probs = self.read_probs(start, stop)
            return Sums(counts=joint_counts(codes, np.argmax(probs, axis=1), self.n_classes, probs.shape[1]))
        if m == "leep":
            from emms.metrics.leep import leep_log_predictions

            probs = self.read_probs(start, stop)
            if pass_index == 0:
                joint = np.zeros((self.n_classes, probs.shape[1]))
                np.add.at(joint, codes, probs)
                return Sums(joint=joint)
            return Sums(log_sum=leep_log_predictions(probs, codes, state).sum(), n=codes.size)
        x = self.read_features(start, stop)
        if m == "transrate" and pass_index == 1:  # official variant: centred, row-normalised features
            x -= state
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
        per_class = {"gbc": "diag", "transrate": "full" if pass_index == 1 or self.n_passes == 1 else "mean"}
        moments = ClassMoments(self.n_classes, x.shape[1], per_class=per_class.get(m, "mean"),
                               norm_moments=m == "hscore_reg")
        return moments.update(x, codes)

    def finish(self, pass_index: int, state: object, merged: object) -> object:
        from emms.metrics import gbc, hscore, leep, logme, nce, transrate
        from emms.metrics.emms import EMMS

        m, opts = self.metric, self.options
        if m == "emms":
            est = EMMS(**opts).fit_stats(merged)
            return ScoreResult(float(est.score_), np.asarray(est.weights_))
        if m == "logme":
            n = int(merged["n"])
            value = logme.logme_from_stats(merged["gram"], merged["cross"], merged["target_sq"], n, **opts).evidence.mean()
        elif m == "logme_flabels":
            widths = [src.shape[1] for src in self.flabels]
            value = logme.logme_flabels_from_stats(merged["gram"], merged["cross"], merged["target_sq"],
                                                   int(merged["n"]), widths, **opts)
        elif m == "nce":
            value = nce.nce_from_counts(merged["counts"])
        elif m == "leep":
            if pass_index == 0:
                return leep.empirical_conditional(merged["joint"])
            value = float(merged["log_sum"]) / int(merged["n"])
        elif m == "hscore":
            value = hscore.hscore_from_moments(merged.comoment, merged.class_means - merged.mean, merged.counts)
        elif m == "hscore_reg":
            value = hscore.hscore_reg_from_moments(merged.comoment, merged.class_means - merged.mean, merged.counts,
                                                   merged.norm_fourth)
        elif m == "gbc":
            value = gbc.gbc_from_moments(merged.class_means, merged.class_comoments / merged.counts[:, None], **opts)
        elif m == "transrate":
            if self.n_passes == 2 and pass_index == 0:
                return merged.mean
            centre = merged.mean if self.n_passes == 1 else np.zeros_like(merged.mean)
            gram = merged.comoment + merged.n_samples * np.outer(merged.mean - centre, merged.mean - centre)
            value = transrate.transrate_from_grams(gram, merged.class_grams(centre), merged.counts, **opts)
        else:  # pragma: no cover - guarded by STREAM_METHODS
            raise InputError(f"metric: {m!r} is not streamable")
        return ScoreResult(float(value))


def flabel_sources(target: object, n_rows: int) -> list[ChunkSource]:
    """F-labels as K chunk sources of N rows: a list of arrays/paths/sources or one (N, L, K) array."""
    if isinstance(target, np.ndarray) and target.ndim == 3:
        blocks = [ArraySource(target[:, :, k], f"f_labels[{k}]") for k in range(target.shape[2])]
    elif isinstance(target, (list, tuple)) and target:
        blocks = [open_source(t, f"f_labels[{k}]") for k, t in enumerate(target)]
    else:
        raise InputError("f_labels: expected a list of K arrays or sources (N, L_k) or one (N, L, K) array")
    for k, block in enumerate(blocks):
        if block.shape[0] != n_rows:
            raise InputError(f"f_labels[{k}]: has {block.shape[0]} rows but features has {n_rows}")
    return blocks


def make_plan(features: object, target: object, metric: str, *, source_probs: object = None,
              target_kind: str | None = None, **options) -> StreamPlan:
    """Validate the arguments of a streamed score and return its :class:`StreamPlan`."""
    info = get_metric(metric)
    if info.name not in STREAM_METHODS:
        raise InputError(f"metric: {metric!r} is not streamable; streamable metrics: {', '.join(STREAM_METHODS)}")
    target = getattr(target, "arrays", target)  # emms.labels.FLabels
    kind = check_target_kind(info, target, target_kind)
    if info.needs_source_probs and source_probs is None:
        raise InputError(f"source_probs: metric {metric!r} needs the source head's probabilities, shape (N, C_source)")
    if not info.needs_source_probs and source_probs is not None:
        raise InputError(f"source_probs: metric {metric!r} does not use source probabilities")
    return StreamPlan(info.name, open_source(features), target, kind, source_probs=source_probs, options=options)


def run_plan(plan: StreamPlan, bounds: Sequence[tuple[int, int]]) -> ScoreResult:
    """Run every pass of ``plan`` in this process, one chunk in memory at a time."""
    state = None
    for p in range(plan.n_passes):
        merged = tree_reduce((plan.chunk(p, state, a, b) for a, b in bounds), _merge_in_place)
        state = plan.finish(p, state, merged)
    return state


def _merge_in_place(left: Any, right: Any) -> Any:
    return left.merge(right)


# ------------------------------------------------------------------------------------ public API

def stream_score(features: object, target: object, metric: str = "emms", *, chunk_rows: int | Sequence[int] =
                 DEFAULT_CHUNK_ROWS, source_probs: object = None, target_kind: str | None = None,
                 max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None, **options) -> float:
    """Score ``features`` (a .npy/zarr path, a source or an (N, D) array) chunk by chunk.

    ``target``: class labels (N,), real/multi-label targets, or F-labels (K arrays, paths or sources
    (N, L_k), or one (N, L, K) array). ``chunk_rows``: rows per chunk, or explicit chunk sizes.
    Streamable metrics (:data:`STREAM_METHODS`) equal the in-memory score; the others are scored on a
    seeded stratified subsample of ``max_rows`` rows (``seed``), with an :class:`EmmsWarning` when
    N > ``max_rows``. ``scheduler``: None (this process) or a Dask scheduler (see
    :func:`emms.parallel.dask_client`). ``options`` go to the metric.
    """
    return stream_fit(features, target, metric, chunk_rows=chunk_rows, source_probs=source_probs,
                      target_kind=target_kind, max_rows=max_rows, seed=seed, scheduler=scheduler, **options).score


def stream_fit(features: object, target: object, metric: str = "emms", *, chunk_rows: int | Sequence[int] =
               DEFAULT_CHUNK_ROWS, source_probs: object = None, target_kind: str | None = None,
               max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None,
               **options) -> ScoreResult:
    """:func:`stream_score` returning a :class:`ScoreResult` (with EMMS's weights)."""
    info = get_metric(metric)
    if info.pool_relative:
        raise InputError(f"metric: {metric!r} is pool-relative; use stream_score_pool")
    if info.name not in STREAM_METHODS:
        source = open_source(features)
        value = _score_subsample({"model": source}, target, info.name, source_probs_by_model={"model": source_probs}
                                 if source_probs is not None else None, target_kind=target_kind, max_rows=max_rows,
                                 seed=seed, options=options)["model"]
        return ScoreResult(value)
    plan = make_plan(features, target, metric, source_probs=source_probs, target_kind=target_kind, **options)
    bounds = chunk_bounds(plan.n_rows, chunk_rows)
    if scheduler is None:
        return run_plan(plan, bounds)
    from emms.parallel import run_plans

    return run_plans({"model": plan}, bounds, scheduler)["model"]


def stream_score_pool(features_by_model: Mapping[str, object], target: object, metric: str = "emms", *,
                      chunk_rows: int | Sequence[int] = DEFAULT_CHUNK_ROWS,
                      source_probs_by_model: Mapping[str, object] | None = None, target_kind: str | None = None,
                      max_rows: int = DEFAULT_MAX_ROWS, seed: int = 0, scheduler: object = None,
                      **options) -> dict[str, float]:
    """:func:`stream_score` for every model of a pool (pool-relative metrics: on a shared subsample)."""
    if not features_by_model:
        raise InputError("features_by_model: expected at least one model")
    info = get_metric(metric)
    if info.pool_relative:
        sources = {m: open_source(f, f"features[{m!r}]") for m, f in features_by_model.items()}
        return _score_subsample(sources, target, info.name, source_probs_by_model=None, target_kind=target_kind,
                                max_rows=max_rows, seed=seed, options=options)
    probs = source_probs_by_model or {}
    if info.needs_source_probs and set(features_by_model) - set(probs):
        missing = sorted(set(features_by_model) - set(probs))
        raise InputError(f"source_probs_by_model: metric {metric!r} needs source probabilities for {', '.join(missing)}")
    if scheduler is not None and info.name in STREAM_METHODS:
        from emms.parallel import run_plans

        plans = {m: make_plan(f, target, metric, source_probs=probs.get(m), target_kind=target_kind, **options)
                 for m, f in features_by_model.items()}
        bounds = {m: chunk_bounds(p.n_rows, chunk_rows) for m, p in plans.items()}
        return {m: r.score for m, r in run_plans(plans, bounds, scheduler).items()}
    return {m: stream_score(f, target, metric, chunk_rows=chunk_rows, source_probs=probs.get(m),
                            target_kind=target_kind, max_rows=max_rows, seed=seed, **options)
            for m, f in features_by_model.items()}


def subsample_rows(target: object, n_rows: int, max_rows: int, seed: int, *, stratify: bool) -> np.ndarray:
    """Sorted row indices of the seeded subsample used for non-streamable metrics.

    Class targets (``stratify``): :func:`emms.metrics._common.stratified_subsample`; others: a uniform
    draw without replacement. All rows when n_rows <= max_rows.
    """
    if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 2:
        raise InputError(f"max_rows: expected an integer >= 2, got {max_rows!r}")
    seed = check_seed(seed)
    if stratify:
        codes, _ = as_class_labels(target, "target", n_samples=n_rows)
        return stratified_subsample(codes, int(max_rows), seed)
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=int(max_rows), replace=False))


def read_rows(source: ChunkSource, rows: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """The sorted ``rows`` of ``source``, read in one chunked pass."""
    parts = []
    for start, stop in chunk_bounds(source.shape[0], chunk_rows):
        lo, hi = np.searchsorted(rows, [start, stop])
        if hi > lo:
            parts.append(np.asarray(source.read(start, stop))[rows[lo:hi] - start])
    return np.concatenate(parts, axis=0)


def _score_subsample(sources: Mapping[str, ChunkSource], target: object, metric: str, *,
                     source_probs_by_model: Mapping[str, object] | None, target_kind: str | None, max_rows: int,
                     seed: int, options: Mapping[str, object]) -> dict[str, float]:
    info = get_metric(metric)
    n_rows = {s.shape[0] for s in sources.values()}
    if len(n_rows) != 1:
        raise InputError(f"features_by_model: every model must have the same number of rows, got {sorted(n_rows)}")
    n = n_rows.pop()
    kind = check_target_kind(info, target, target_kind)
    rows = subsample_rows(target, n, max_rows, seed, stratify=kind == "classes")
    if rows.size < n:
        warnings.warn(f"{metric}: not streamable; scored on a seeded stratified subsample of {rows.size} of {n} rows "
                      f"(max_rows={max_rows}, seed={seed})", EmmsWarning, stacklevel=3)
    features = {m: read_rows(s, rows) for m, s in sources.items()}
    target_rows = np.asarray(target)[rows]
    if info.pool_relative:
        return score_pool(features, target_rows, metric, target_kind=target_kind, **options)
    out = {}
    for m, feats in features.items():
        probs = None
        if source_probs_by_model is not None:
            probs = read_rows(open_source(source_probs_by_model[m], "source_probs"), rows)
        out[m] = score(feats, target_rows, metric, source_probs=probs, target_kind=target_kind, **options)
    return out
