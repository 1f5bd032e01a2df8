"""Chunk sources: rows of an (N, D) array read a chunk at a time, wherever the array lives.

A ``.npy`` file (:class:`NpyFile`: plain file reads at byte offsets, so resident memory stays at
one chunk; a ``numpy.memmap`` would keep every page it touched resident), a zarr array or folder,
a :class:`~emms.compute.store.Store` entry (:func:`store_source`), any array-like with ``shape`` and row
slicing (:class:`ArraySource`: numpy, memmap, zarr, h5py), and :class:`IndexedRows` (row i =
``table[index[i]]``: class-level F-labels without an (N, L) copy). All are picklable, so Dask
workers read their own chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emms.errors import InputError

DEFAULT_CHUNK_ROWS = 16_384


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
    """The features of a complete :class:`~emms.compute.store.Store` entry, read in chunks.

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


def flabel_sources(target: object, n_rows: int) -> list[ChunkSource]:
    """F-labels as K chunk sources of N rows: a list of arrays/paths/sources or one (N, L, K) array."""
    blocks: list[ChunkSource]
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


def read_rows(source: ChunkSource, rows: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """The sorted ``rows`` of ``source``, read in one chunked pass."""
    parts = []
    for start, stop in chunk_bounds(source.shape[0], chunk_rows):
        lo, hi = np.searchsorted(rows, [start, stop])
        if hi > lo:
            parts.append(np.asarray(source.read(start, stop))[rows[lo:hi] - start])
    return np.concatenate(parts, axis=0)
