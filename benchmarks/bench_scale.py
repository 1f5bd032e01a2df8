"""Scale-out benchmark: out-of-core EMMS memory and speed, Dask 2 workers vs one process, growth in N and D.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_scale.py [--tmp /tmp] [--quick]

1. EMMS on a float32 ``.npy`` of N = 2,000,000 x D = 256 (2.05 GB) with K = 3 F-label encoders of
   width L = 128 (class-level F-labels, row i = table_k[label_i], :class:`emms.compute.streaming.IndexedRows`),
   streamed in chunks in a child process: peak RSS (``VmHWM``) and time. The in-memory run
   (``EMMS().fit`` on arrays) is measured at N = 250,000, a size that fits, and compared per row
   with the streamed run on the same N and on the 2 M file (same process layout, same thread count).
2. Dask: a LocalCluster of 2 worker processes (1 thread each) vs the in-process stream, same chunks.
3. Time of the streamed EMMS for N x D (.npy source, one thread).

Each measurement runs in a fresh child process; medians of ``--repeats``. Files go under ``--tmp``
and are deleted at the end. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
args = json.loads(sys.argv[1])
from emms.metrics.emms import EMMS
from emms.compute.streaming import IndexedRows, open_source, stream_score
rng = np.random.default_rng(0)
n, classes, width, k = args["n"], args["classes"], args["width"], args["k"]
labels = np.random.default_rng(1).integers(0, classes, n)
tables = [rng.normal(size=(classes, width)) for _ in range(k)]
def peak_mb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's peak before exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
base = peak_mb()
t0 = time.perf_counter()
if args["mode"] == "in_memory":
    x = np.load(args["path"]) if args.get("path") else None
    value = EMMS().fit(x[:n], [t[labels] for t in tables]).score_
elif args["mode"] == "stream":
    value = stream_score(args["path"], [IndexedRows(t, labels) for t in tables], "emms",
                         chunk_rows=args["chunk_rows"], scheduler=args.get("scheduler"))
elif args["mode"] == "dask_local":
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.run(lambda: __import__("emms.compute.streaming"))  # workers up and imports done before timing
        t0 = time.perf_counter()
        value = stream_score(args["path"], [IndexedRows(t, labels) for t in tables], "emms",
                             chunk_rows=args["chunk_rows"], scheduler=client)
seconds = time.perf_counter() - t0
print(json.dumps({"score": value, "seconds": seconds, "peak_rss_mb": peak_mb(), "import_rss_mb": base}))
"""


def child(**args) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_of(repeats: int, **args) -> dict:
    runs = [child(**args) for _ in range(repeats)]
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {**best, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def write_features(path: Path, n: int, d: int, block: int = 200_000) -> None:
    """A float32 .npy of n x d written block by block (never whole in memory)."""
    rng = np.random.default_rng(2)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    mixing = rng.normal(size=(d, d)).astype(np.float32) / np.sqrt(d)
    for start in range(0, n, block):
        stop = min(start + block, n)
        out[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32) @ mixing + 1.0
    out.flush()
    del out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tmp", default=tempfile.gettempdir())
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the reported numbers)")
    parser.add_argument("--repeats", type=int, default=1)
    opts = parser.parse_args()
    big_n = 200_000 if opts.quick else 2_000_000
    fit_n = 50_000 if opts.quick else 250_000
    d, width, k, classes, chunk = 256, 128, 3, 100, 16_384
    common = {"classes": classes, "width": width, "k": k}
    folder = Path(tempfile.mkdtemp(prefix="emms-bench-scale-", dir=opts.tmp))
    path = folder / "features.npy"
    try:
        t0 = time.perf_counter()
        write_features(path, big_n, d)
        print(f"wrote {path.stat().st_size / 1e9:.2f} GB ({big_n} x {d} float32) in {time.perf_counter() - t0:.0f} s\n")

        big = median_of(opts.repeats, mode="stream", path=str(path), n=big_n, chunk_rows=chunk, **common)
        _copy_head(path, folder / "small.npy", fit_n)
        small_stream = median_of(opts.repeats, mode="stream", path=str(folder / "small.npy"), n=fit_n, chunk_rows=chunk,
                                 **common)
        in_memory = median_of(opts.repeats, mode="in_memory", path=str(folder / "small.npy"), n=fit_n, **common)
        rate = {name: r["seconds"] / n * 1e6 for name, r, n in
                (("big", big, big_n), ("small", small_stream, fit_n), ("mem", in_memory, fit_n))}
        print("### EMMS out of core (D = 256, K = 3, L = 128, chunk_rows = 16384, 1 thread)\n")
        print("| run | N | time (s) | µs / row | time / in-memory per row | peak RSS (MB) | score |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, r, n, key in (("in memory (EMMS().fit on arrays)", in_memory, fit_n, "mem"),
                                 ("streamed from .npy", small_stream, fit_n, "small"),
                                 (f"streamed from .npy ({path.stat().st_size / 1e9:.2f} GB)", big, big_n, "big")):
            print(f"| {label} | {n:,} | {r['seconds']:.1f} | {rate[key]:.2f} | {rate[key] / rate['mem']:.2f}x | "
                  f"{r['peak_rss_mb']:.0f} | {r['score']:.6f} |")
        gap = abs(small_stream["score"] - in_memory["score"]) / abs(in_memory["score"])
        print(f"\n(interpreter + imports alone: {big['import_rss_mb']:.0f} MB RSS; the streamed and in-memory "
              f"scores at N = {fit_n:,} differ by {gap:.1e} relative)\n")

        dask_n = min(big_n, 400_000)
        _copy_head(path, folder / "dask.npy", dask_n)
        dask_path = str(folder / "dask.npy")
        single = median_of(opts.repeats, mode="stream", path=dask_path, n=dask_n, chunk_rows=chunk, **common)
        on_dask = median_of(opts.repeats, mode="dask_local", path=dask_path, n=dask_n, chunk_rows=chunk, **common)
        print(f"### Dask: 2 worker processes vs one process (N = {dask_n:,}, D = 256, same chunks; "
              f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} when measured)\n")
        print("| run | time (s) | speed-up | score |")
        print("|---|---:|---:|---:|")
        print(f"| one process (scheduler=None) | {single['seconds']:.1f} | 1.00x | {single['score']:.12f} |")
        speed_up = single["seconds"] / on_dask["seconds"]
        print(f"| LocalCluster, 2 workers x 1 thread | {on_dask['seconds']:.1f} | {speed_up:.2f}x | {on_dask['score']:.12f} |")
        print(f"\n(scores bit-identical: {single['score'] == on_dask['score']})\n")

        print("### Streamed EMMS time (s) by N and D (K = 3, L = 128, float32 .npy source, 1 thread)\n")
        ns = (25_000, 50_000, 100_000) if opts.quick else (50_000, 100_000, 200_000)
        ds = (64, 256, 512)
        print("| N \\ D | " + " | ".join(str(x) for x in ds) + " |")
        print("|---|" + "---:|" * len(ds))
        for n in ns:
            cells = []
            for dim in ds:
                grid = folder / f"grid-{dim}.npy"
                if not grid.exists():
                    write_features(grid, max(ns), dim)
                source = grid if n == max(ns) else _head(grid, folder, n)
                run = median_of(opts.repeats, mode="stream", path=str(source), n=n, chunk_rows=chunk, **common)
                cells.append(f"{run['seconds']:.2f}")
            print(f"| {n:,} | " + " | ".join(cells) + " |")
    finally:
        for f in folder.glob("*"):
            f.unlink()
        folder.rmdir()


def _copy_head(source: Path, target: Path, n: int) -> None:
    """Write the first n rows of the .npy ``source`` to ``target`` (block by block)."""
    if target.exists():
        return
    src = np.load(source, mmap_mode="r")
    out = np.lib.format.open_memmap(target, mode="w+", dtype=src.dtype, shape=(n, src.shape[1]))
    for start in range(0, n, 200_000):
        out[start:min(start + 200_000, n)] = src[start:min(start + 200_000, n)]
    out.flush()
    del out, src


def _head(grid: Path, folder: Path, n: int) -> Path:
    target = folder / f"{grid.stem}-{n}.npy"
    _copy_head(grid, target, n)
    return target


if __name__ == "__main__":
    main()
