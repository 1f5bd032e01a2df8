"""The feature store against maintained libraries for resumable chunked writes (issue 21).

Question: would zarr or joblib.Memory serve instead of ``emms.compute.store.Store``? The workload is the
store's: a (rows, dim) float32 feature matrix computed in ``--chunk``-row pieces, each piece kept
as soon as it is computed (a killed extraction resumes from the finished pieces), then read back
whole and checked. Candidates, each in a fresh temporary folder, interleaved for ``--repeats``
rounds (median seconds):

* ``np.save`` / ``np.load`` of the whole array: the floor (no chunks, no checks, not resumable);
* ``Store``: ``get_or_compute`` in chunks (each chunk fsynced with a sha256 sidecar, then joined
  into one verified entry), read with ``Store.get`` (size, shape, sha256 checked); once more with
  ``os.fsync`` patched out, to show what fsync costs;
* ``zarr``: a chunked zarr v3 array, one chunk per piece (zarr's local store writes each chunk
  to a temporary name and renames it), without and with the CRC32C checksum codec; read whole;
* ``joblib.Memory``: the piece function cached per (start, stop), read by calling it again and
  concatenating the pieces.

    OMP_NUM_THREADS=1 python benchmarks/bench_store_libraries.py --rows 20000 --dim 1280 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


Candidate = tuple[Path, Callable[[], None], Callable[[], np.ndarray], Callable[[], np.ndarray]]


def candidates(array: np.ndarray, chunk: int, folder: Path) -> dict[str, Candidate]:
    """name -> (its folder, write in chunks, read whole, read as a user of the cache would: for the
    store ``get_or_compute``, which recomputes what fails its check)."""
    import joblib
    import zarr
    from zarr.codecs import Crc32cCodec

    from emms.compute.store import Store

    rows = array.shape[0]
    bounds = [(a, min(a + chunk, rows)) for a in range(0, rows, chunk)]
    piece = lambda a, b: array[a:b]  # noqa: E731 - the "computation" of one chunk
    out: dict = {}

    (folder / "plain").mkdir()
    plain = folder / "plain" / "plain.npy"
    out["np.save / np.load (floor)"] = (plain.parent, lambda: np.save(plain, array), lambda: np.load(plain),
                                        lambda: np.load(plain))

    store = Store(folder / "store")

    def store_write() -> None:
        store.clear()
        store.get_or_compute("features", rows, piece, chunk_rows=chunk)

    def store_write_without_fsync() -> None:  # for scale only: what fsync costs the store
        with mock.patch("os.fsync"):
            store_write()

    out["emms Store, os.fsync patched out (scale only)"] = (
        folder / "store", store_write_without_fsync, lambda: store.get("features"),
        lambda: store.get_or_compute("features", rows, piece, chunk_rows=chunk))
    out["emms Store (fsync + sha256 per chunk)"] = (
        folder / "store", store_write, lambda: store.get("features"),
        lambda: store.get_or_compute("features", rows, piece, chunk_rows=chunk))

    for label, codecs in (("zarr v3", None), ("zarr v3 + CRC32C", [Crc32cCodec()])):
        path = folder / label.replace(" ", "_").replace("+", "")

        def zarr_write(path: Path = path, codecs: list | None = codecs) -> None:
            shutil.rmtree(path, ignore_errors=True)
            target = zarr.create_array(path, shape=array.shape, chunks=(chunk, array.shape[1]), dtype=array.dtype,
                                       compressors=codecs, fill_value=0)
            for a, b in bounds:
                target[a:b] = piece(a, b)

        read = lambda path=path: zarr.open_array(path, mode="r")[:]  # noqa: E731
        out[label] = (path, zarr_write, read, read)

    memory = joblib.Memory(folder / "joblib", verbose=0)
    cached = memory.cache(_rows, ignore=["array"])  # keyed by (start, stop), as the store keys its chunks

    def joblib_write() -> None:
        memory.clear(warn=False)
        for a, b in bounds:
            cached(array, a, b)

    read = lambda: np.concatenate([cached(array, a, b) for a, b in bounds])  # noqa: E731
    out["joblib.Memory (one cached call per chunk)"] = (folder / "joblib", joblib_write, read, read)
    return out


def _rows(array: np.ndarray, start: int, stop: int) -> np.ndarray:
    return array[start:stop]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    array = np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ops = candidates(array, args.chunk, folder)
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ops}
        for _ in range(args.repeats):
            for name, (_, write, read, _) in ops.items():
                times[name][0].append(timed(write))
                result = None

                def keep() -> None:
                    nonlocal result
                    result = read()

                times[name][1].append(timed(keep))
                if not np.array_equal(result, array):
                    raise SystemExit(f"{name}: read back a different array")
        outcome = {name: after_corruption(array, *op) for name, op in ops.items()}
    size_mb = array.nbytes / 2**20
    floor_w, floor_r = (float(np.median(t)) for t in times["np.save / np.load (floor)"])
    print(f"array {args.rows}x{args.dim} float32 ({size_mb:.0f} MiB), {args.chunk}-row chunks, median of "
          f"{args.repeats} interleaved rounds, load average {os.getloadavg()[0]:.1f}\n")
    print("| candidate | write s | write / floor | read s | read / floor | one flipped byte, then read |")
    print("|---|---:|---:|---:|---:|---|")
    for name, (w, r) in times.items():
        mw, mr = float(np.median(w)), float(np.median(r))
        print(f"| {name} | {mw:.3f} | {mw / floor_w:.2f} | {mr:.3f} | {mr / floor_r:.2f} | {outcome[name]} |")


def after_corruption(array: np.ndarray, folder: Path, write: Callable[[], None], read: Callable[[], np.ndarray],
                     use: Callable[[], np.ndarray]) -> str:
    """Write, flip one byte in the middle of the largest file (the data, not a manifest), then read as a user would."""
    write()
    target = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with target.open("r+b") as f:
        f.seek(target.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    try:
        result = use()
    except Exception as error:  # noqa: BLE001 - the outcome is what we report
        return f"error ({type(error).__name__})"
    return "recomputed, correct" if np.array_equal(result, array) else "**silently wrong values**"


if __name__ == "__main__":
    main()
