"""Store overhead: verified write/read of a feature matrix vs plain np.save/np.load, same run.

Usage: OMP_NUM_THREADS=1 python benchmarks/bench_store.py [--rows 20000] [--dim 1280] [--repeats 3]
Prints a markdown table (median seconds over repeats and the ratio to the plain numpy baseline).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from emms.compute.store import Store

from _timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    array = np.random.default_rng(0).normal(size=(args.rows, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        store, plain = Store(folder), Path(folder) / "plain.npy"
        chunk = 512

        def chunked_put() -> None:
            store.clear()
            store.get_or_compute("chunked", args.rows, lambda a, b: array[a:b], chunk_rows=chunk)

        rows: list = [
            ("plain np.save (no fsync, no checksum)", median_seconds(lambda: np.save(plain, array), args.repeats), None),
            ("Store.put (fsync + sha256 + rename)", median_seconds(lambda: store.put("k", array, {}), args.repeats), 0),
            (f"Store.get_or_compute, {chunk}-row chunks", median_seconds(chunked_put, args.repeats), 0),
            ("plain np.load", median_seconds(lambda: np.load(plain), args.repeats), None),
        ]
        store.put("k", array, {})
        rows += [
            ("Store.get (size + sha256 + shape check)", median_seconds(lambda: store.get("k"), args.repeats), 3),
        ]
    size_mb = array.nbytes / 2**20
    print(f"array {args.rows}x{args.dim} float32 ({size_mb:.0f} MiB), median of {args.repeats}\n")
    print("| operation | seconds | MiB/s | ratio to plain numpy |")
    print("|---|---:|---:|---:|")
    for name, seconds, base in rows:
        ratio = "1.00" if base is None else f"{seconds / rows[base][1]:.2f}"
        print(f"| {name} | {seconds:.3f} | {size_mb / seconds:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
