"""Content-addressed on-disk cache for features and label embeddings.

A cache entry is addressed by a key derived from everything that determines its content
(:meth:`Store.key`: model or encoder identity with its weights hash, data fingerprint,
preprocessing, layer, ...). Change any part and the key changes, so a stale entry is never read.

Format (chosen over zarr and joblib.Memory: numpy-only, memory-mappable, no pickle, and every read is
verified, so a corrupted entry is recomputed rather than returned or fatal; BENCHMARKS.md §7 measures
all three)::

    ROOT/emms-store-v1/
      objects/KEY/data.npy        the array (numpy .npy format, never pickled)
      objects/KEY/manifest.json   shape, dtype, bytes, sha256 of data.npy, created, meta
      partial/KEY/START-STOP.npy  finished chunks of an unfinished entry (:meth:`Store.chunk`)
      partial/KEY/START-STOP.json their sha256, shape and dtype (written after the .npy)
      tmp/                        entries being written

Atomicity: a complete entry is assembled in ``tmp/`` (files written, fsynced) and renamed into
``objects/`` in one ``rename`` of its directory, so a reader sees either no entry or a complete
one. Chunks are written to a temporary name, fsynced and renamed; a chunk only counts once its
JSON sidecar (written last, same way) exists and its checksum matches. A process killed at any
point therefore loses at most the chunk it was computing. Every read checks the sha256, size,
shape and dtype; an entry or chunk that fails is deleted with an :class:`EmmsWarning` and
recomputed. Two processes computing the same key at once do the work twice but never corrupt
the entry (last rename wins; both results are identical for a deterministic computation).
Processes computing *different* chunks of one entry (Dask workers sharing the cache directory,
:mod:`emms.compute.parallel`) write different files; :meth:`Store.join_chunks` then joins the verified
chunks into the entry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from emms._io import atomic_write_text, file_sha256
from emms._validation import check_positive_int
from emms.errors import EmmsWarning, InputError, ResourceError

_LAYOUT = "emms-store-v1"
_KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
_CHUNK_PATTERN = re.compile(r"(\d{12})-(\d{12})")


class Store:
    """A content-addressed, verified, resumable cache of numpy arrays.

    Parameters
    ----------
    root:
        Cache directory. Default: ``$EMMS_CACHE`` if set, else ``~/.cache/emms``. Nothing is
        created until the first write.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            root = os.environ.get("EMMS_CACHE") or Path.home() / ".cache" / "emms"
        self.root = Path(root).expanduser()
        self._base = self.root / _LAYOUT

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    def entry_path(self, key: str) -> Path:
        """The folder a complete entry for ``key`` lives in (it may not exist yet)."""
        return self._object_dir(key)

    # ------------------------------------------------------------------ keys
    @staticmethod
    def key(**parts: object) -> str:
        """Return the first 32 hex digits of sha256 over the canonical JSON of ``parts``.

        Values may be str, int, float, bool, None, lists/tuples/dicts of those, ``Path`` and
        numpy scalars. Key order does not matter.
        """
        if not parts:
            raise InputError("Store.key: expected at least one keyword part (e.g. model=..., data=...)")
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=_json_default)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    @staticmethod
    def chunk_bounds(n_rows: int, chunk_rows: int) -> list[tuple[int, int]]:
        """The chunks of an entry: ``[(0, chunk_rows), (chunk_rows, 2*chunk_rows), ...]`` up to ``n_rows``."""
        n_rows, chunk_rows = check_positive_int(n_rows, "n_rows"), check_positive_int(chunk_rows, "chunk_rows")
        return [(start, min(start + chunk_rows, n_rows)) for start in range(0, n_rows, chunk_rows)]

    # ------------------------------------------------------------ whole entries
    def get(self, key: str) -> np.ndarray | None:
        """Return the cached array for ``key``, or None on a miss.

        The file's size, sha256, shape and dtype are checked against the manifest; an entry that
        fails is deleted (with an :class:`EmmsWarning`) and None is returned.
        """
        entry = self._object_dir(key)
        if not entry.is_dir():
            return None
        problem, array = _read_verified(entry / "data.npy", entry / "manifest.json")
        if problem is None:
            return array
        warnings.warn(f"cache entry {key} is corrupt ({problem}); deleting it, it will be recomputed",
                      EmmsWarning, stacklevel=2)
        _remove_tree(entry)
        return None

    def put(self, key: str, array: np.ndarray, meta: dict | None = None) -> None:
        """Store ``array`` (numeric, any shape) under ``key`` with JSON-serialisable ``meta``, atomically."""
        array = _as_storable(array, "array")
        meta = _checked_meta(meta)
        final = self._object_dir(key)
        with self._writing():
            staging = self._staging_dir()
            try:
                manifest = _write_npy(staging / "data.npy", array)
                manifest.update(key=key, created=_now_iso(), meta=meta)
                _write_json(staging / "manifest.json", manifest)
                _fsync_dir(staging)
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():  # replaced entry: move the old one aside first, then swap in
                    old = self._staging_dir()
                    os.replace(final, old / "old")
                    os.rename(staging, final)
                    _remove_tree(old)
                else:
                    os.rename(staging, final)
                _fsync_dir(final.parent)
            finally:
                if staging.exists():
                    _remove_tree(staging)

    def get_or_compute(self, key: str, n_rows: int, compute_chunk: Callable[[int, int], np.ndarray], *,
                       chunk_rows: int = 512, meta: dict | None = None,
                       progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Return the array for ``key``, computing missing row chunks with ``compute_chunk``.

        ``compute_chunk(start, stop)`` must return an array of ``stop - start`` rows (same trailing
        shape and dtype for every chunk). Chunks are :meth:`chunk_bounds`: ``[0, chunk_rows),
        [chunk_rows, 2*chunk_rows)``, ...; each finished chunk is saved at once (:meth:`chunk`), so a
        rerun after a crash or SIGKILL computes only the chunks that were not finished. Once all
        chunks exist they are joined into one entry (:meth:`join_chunks`). ``progress(n)`` is called
        with the number of rows finished (computed or found) after each chunk.
        """
        n_rows = check_positive_int(n_rows, "n_rows")
        chunk_rows = check_positive_int(chunk_rows, "chunk_rows")
        meta = _checked_meta(meta)
        cached = self.get(key)
        if cached is not None and cached.shape[0] == n_rows:
            if progress is not None:
                progress(n_rows)
            return cached
        if cached is not None:
            warnings.warn(f"cache entry {key} has {cached.shape[0]} rows, expected {n_rows}; recomputing",
                          EmmsWarning, stacklevel=2)
            _remove_tree(self._object_dir(key))
        chunks: list[np.ndarray] = []
        for start, stop in self.chunk_bounds(n_rows, chunk_rows):
            chunks.append(self.chunk(key, start, stop, compute_chunk))
            if progress is not None:
                progress(stop - start)
        return self.join_chunks(key, n_rows, chunk_rows, meta, chunks=chunks)

    def chunk(self, key: str, start: int, stop: int, compute_chunk: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Rows ``start:stop`` of the unfinished entry ``key``: the saved chunk, else ``compute_chunk(start, stop)``.

        A saved chunk is verified first (a corrupt one is deleted with an :class:`EmmsWarning` and
        recomputed); a computed one is checked and saved atomically. Processes that compute different
        chunks of one entry at once (e.g. Dask workers sharing the cache directory) never disturb
        each other: every chunk has its own files.
        """
        partial = self._partial_dir(key)
        chunk = self._read_chunk(partial, key, start, stop)
        if chunk is None:
            chunk = _as_storable(compute_chunk(start, stop), f"compute_chunk({start}, {stop})")
            if chunk.ndim == 0 or chunk.shape[0] != stop - start:
                raise InputError(f"compute_chunk({start}, {stop}): expected an array with {stop - start} rows, "
                                 f"got shape {chunk.shape}")
            self._write_chunk(partial, start, stop, chunk)
        return chunk

    def join_chunks(self, key: str, n_rows: int, chunk_rows: int, meta: dict | None = None, *,
                    chunks: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Join the finished chunks of ``key`` into one complete entry (:meth:`put`); return it.

        The chunks are :meth:`chunk_bounds` for ``n_rows`` and ``chunk_rows``:
        ``chunks`` when the caller holds them, else they are read (verified) from the partial files;
        a missing one is a :class:`ResourceError` (not computed yet, or written where this process
        cannot see it). The partial files are removed afterwards, and also when the chunks disagree
        in trailing shape or dtype (an :class:`InputError`), so a rerun starts afresh.
        """
        bounds = self.chunk_bounds(n_rows, chunk_rows)
        meta = _checked_meta(meta)
        partial = self._partial_dir(key)
        if chunks is not None and len(chunks) != len(bounds):
            raise InputError(f"chunks: expected {len(bounds)} arrays ({n_rows} rows in chunks of {chunk_rows}), "
                             f"got {len(chunks)}")
        if chunks is None:
            chunks = [self._read_chunk(partial, key, start, stop) for start, stop in bounds]
            missing = [f"{start}:{stop}" for (start, stop), chunk in zip(bounds, chunks) if chunk is None]
            if missing:
                raise ResourceError(f"cache entry {key}: chunk rows {', '.join(missing[:3])}"
                                    f"{' ...' if len(missing) > 3 else ''} missing in {self.root}; they were not "
                                    "computed, or were written where this process cannot see them (workers and "
                                    "this process must share the cache directory)")
        first = chunks[0]
        for (start, stop), chunk in zip(bounds, chunks):
            if chunk.shape[1:] != first.shape[1:] or chunk.dtype != first.dtype:
                _remove_tree(partial)
                raise InputError(f"compute_chunk({start}, {stop}): returned shape {chunk.shape} dtype {chunk.dtype}, "
                                 f"but earlier chunks have trailing shape {first.shape[1:]} dtype {first.dtype}")
        result = np.concatenate(chunks, axis=0)
        self.put(key, result, meta)
        _remove_tree(partial)
        return result

    # ------------------------------------------------------------- listing
    def entries(self) -> list[dict]:
        """Describe every entry: key, kind, shape, dtype, bytes, created, complete, meta.

        Unfinished resumable computations are listed with ``complete=False`` and the rows done so far.
        """
        out: list[dict] = []
        objects = self._base / "objects"
        for entry in sorted(objects.iterdir()) if objects.is_dir() else []:
            try:
                manifest = json.loads((entry / "manifest.json").read_text())
                out.append({"key": entry.name, "kind": str(manifest["meta"].get("kind", "array")),
                            "shape": list(manifest["shape"]), "dtype": manifest["dtype"],
                            "bytes": int(manifest["bytes"]), "created": manifest["created"],
                            "complete": True, "meta": manifest["meta"]})
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                out.append({"key": entry.name, "kind": "corrupt", "shape": None, "dtype": None,
                            "bytes": _tree_bytes(entry), "created": None, "complete": False, "meta": {}})
        partials = self._base / "partial"
        for entry in sorted(partials.iterdir()) if partials.is_dir() else []:
            rows = sum(int(m.group(2)) - int(m.group(1)) for f in entry.glob("*.json")
                       if (m := _CHUNK_PATTERN.fullmatch(f.stem)))
            created = min((f.stat().st_mtime for f in entry.iterdir()), default=None)
            out.append({"key": entry.name, "kind": "partial", "shape": None, "dtype": None,
                        "bytes": _tree_bytes(entry), "created": None if created is None else _iso(created),
                        "complete": False, "meta": {"rows_done": rows}})
        return out

    def clear(self) -> int:
        """Delete every entry (complete, partial and temporary); return how many entries were removed."""
        removed = 0
        with self._writing():
            for sub in ("objects", "partial"):
                folder = self._base / sub
                for entry in list(folder.iterdir()) if folder.is_dir() else []:
                    _remove_tree(entry)
                    removed += 1
            if (self._base / "tmp").is_dir():
                _remove_tree(self._base / "tmp")
        return removed

    # ------------------------------------------------------------- internals
    def _object_dir(self, key: str) -> Path:
        return self._base / "objects" / _checked_key(key)

    def _partial_dir(self, key: str) -> Path:
        return self._base / "partial" / _checked_key(key)

    def _staging_dir(self) -> Path:
        tmp = self._base / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / uuid.uuid4().hex
        path.mkdir()
        return path

    def _read_chunk(self, partial: Path, key: str, start: int, stop: int) -> np.ndarray | None:
        stem = f"{start:012d}-{stop:012d}"
        data, sidecar = partial / f"{stem}.npy", partial / f"{stem}.json"
        if not sidecar.is_file():
            return None
        problem, chunk = _read_verified(data, sidecar)
        if problem is None and chunk.shape[0] == stop - start:
            return chunk
        warnings.warn(f"cache entry {key}: chunk rows {start}:{stop} is corrupt ({problem or 'wrong row count'}); "
                      "recomputing it", EmmsWarning, stacklevel=3)
        for path in (sidecar, data):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return None

    def _write_chunk(self, partial: Path, start: int, stop: int, chunk: np.ndarray) -> None:
        stem = f"{start:012d}-{stop:012d}"
        with self._writing():
            partial.mkdir(parents=True, exist_ok=True)
            tmp = partial / f".{stem}.{uuid.uuid4().hex}.tmp"
            try:
                manifest = _write_npy(tmp, chunk)
                os.replace(tmp, partial / f"{stem}.npy")
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            manifest.update(start=start, stop=stop, created=_now_iso())
            _write_json(partial / f"{stem}.json", manifest)
            _fsync_dir(partial)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a read-only, missing-permission or full cache location into a ResourceError."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                reason = "is not writable"
            elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
                reason = "is full (no space left on device)"
            else:
                reason = f"cannot be written ({exc.strerror or exc})"
            raise ResourceError(f"cache directory {self.root} {reason}; pass another --cache DIR "
                                "or set EMMS_CACHE") from exc


def _checked_key(key: object) -> str:
    if not isinstance(key, str) or not _KEY_PATTERN.fullmatch(key):
        raise InputError(f"key: expected 1-128 characters from [A-Za-z0-9_-] (use Store.key(...)), got {key!r}")
    return key


def _as_storable(array: object, name: str) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.dtype.kind not in "biufc":
        raise InputError(f"{name}: expected a numeric or boolean array, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def _checked_meta(meta: dict | None) -> dict:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InputError(f"meta: expected a dict, got {type(meta).__name__}")
    try:
        return json.loads(json.dumps(meta, default=_json_default))
    except ValueError as exc:
        raise InputError(f"meta: expected JSON-serialisable values ({exc})") from None


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise InputError(f"Store.key/meta: cannot serialise a {type(value).__name__} ({value!r}); "
                     "pass str, numbers, bools, None, lists or dicts")


def _write_npy(path: Path, array: np.ndarray) -> dict:
    """Write ``array`` to ``path`` (fsynced) and return its shape/dtype/bytes/sha256."""
    with open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {"shape": list(array.shape), "dtype": array.dtype.str, "bytes": path.stat().st_size,
            "sha256": file_sha256(path)}


def _write_json(path: Path, obj: dict) -> None:
    """Write JSON to ``path`` atomically (temp file, fsync, rename)."""
    atomic_write_text(path, json.dumps(obj, indent=1))


def _read_verified(data: Path, manifest_path: Path) -> tuple[str | None, np.ndarray | None]:
    """Return (None, array) if ``data`` matches its manifest, else (what is wrong, None)."""
    try:
        manifest = json.loads(manifest_path.read_text())
        expected_bytes, expected_sha = int(manifest["bytes"]), str(manifest["sha256"])
        shape, dtype = tuple(manifest["shape"]), np.dtype(manifest["dtype"])
    except FileNotFoundError:
        return "manifest missing", None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest: {type(exc).__name__}", None
    try:
        size = data.stat().st_size
    except FileNotFoundError:
        return "data file missing", None
    if size != expected_bytes:
        return f"truncated: {size} bytes, expected {expected_bytes}", None
    if file_sha256(data) != expected_sha:
        return "checksum mismatch", None
    try:
        array = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as exc:
        return f"unreadable data: {exc}", None
    if array.shape != shape or array.dtype != dtype:
        return f"shape/dtype {array.shape} {array.dtype} differ from the manifest {shape} {dtype}", None
    return None, array


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform/filesystem
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _now_iso() -> str:
    return _iso(time.time())


def _iso(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
