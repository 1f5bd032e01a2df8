"""Benchmark: EMMS against its floor, the paper's baselines, and on a memory-mapped array (issues 2, 10, 19).

Speed (``--sizes``): for each size (N, D, L, K), interleaved rounds (every function once per round,
so a change of machine load hits all alike), median of ``--repeats``, one run:

* floor        XᵀX and Xᵀ[Z_1 … Z_K] of the centred float64 arrays plus ``eigh(XᵀX)`` (the products
               any exact method needs, and the eigendecomposition the GCV score needs);
* emms         ``EMMS().fit`` from the raw arrays (default since issue 19: per-encoder GCV R²),
               validation and chunked statistics included;
* columns      ``EMMS(mixture="columns").fit`` (the paper's column mixture, GCV; the default before);
* official     a plain numpy transcription of the released algorithm (lstsq, one alternation);
* logme_f      the project's LogME with F-labels (all columns at once) on the same features;
* thuml_loop   LogME with F-labels as the reference code bases compute it: one SVD, then a Python
               loop over the F-label columns, each with its own fixed point (``bench_logme_flabels``).

Memory (``--memmap NxDxLxK``): writes float32 memmaps X (N, D) and Z (N, L, K) under ``--tmpdir``,
then in a fresh process runs ``EMMS().fit`` on them and prints JSON: the growth of anonymous
resident memory (``RssAnon`` sampled every 2 ms; the memmap's file pages are not anonymous), the
peak of traced numpy/Python allocations, seconds, and the score.

    OMP_NUM_THREADS=1 python benchmarks/bench_emms.py --repeats 5 --sizes 5000x512x256x3,20000x1024x256x3 --breakdown
    OMP_NUM_THREADS=1 python benchmarks/bench_emms.py --memmap 2000000x256x128x3 --tmpdir /tmp/emms-memmap

The statistics pass (``--passes NxDxLxK``): its one blocked read against the five reads it replaced,
with the caches evicted before each call, and EMMS / floor in three runs of interleaved rounds.

    OMP_NUM_THREADS=1 python benchmarks/bench_emms.py --passes 5000x512x256x3 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

from emms import EMMS
from emms.metrics._simplex import sparsemax
from emms.metrics._emms_spectrum import Spectrum, encoder_r2
from emms.metrics.logme import logme_flabels
from emms.metrics.stats import SufficientStats, _summary_pass

from _timing import interleaved_medians
from bench_logme_flabels import logme_per_column_loop


def make_task(n: int, d: int, width: int, k: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Features sharing a rank-32 signal with K noisy F-label blocks (float64)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 32))
    x = signal @ rng.normal(size=(32, d)) + rng.normal(scale=2.0, size=(n, d)) + rng.normal(size=d)
    z = [signal @ rng.normal(size=(32, width)) + rng.normal(scale=s, size=(n, width)) for s in np.linspace(1, 4, k)]
    return x, z


def floor(xc: np.ndarray, zc: np.ndarray) -> None:
    """XᵀX and XᵀZ (centred, float64) and the eigendecomposition of XᵀX."""
    np.linalg.eigh(xc.T @ xc)
    _ = xc.T @ zc


def official_transcription(x: np.ndarray, z: list[np.ndarray]) -> float:
    """The released EMMS algorithm written plainly with numpy (one alternation, lstsq)."""
    n, width, k = x.shape[0], z[0].shape[1], len(z)
    xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
    y = np.stack([(b - b.mean(0)) / (b.std(0) + 1e-8) for b in z], axis=2)
    coef = np.linalg.lstsq(xs, y @ np.full(k, 1.0 / k), rcond=None)[0]
    prediction = xs @ coef
    weights = sparsemax(np.linalg.lstsq(y.reshape(n * width, k), prediction.reshape(n * width), rcond=None)[0])
    return -(np.sum((prediction - y @ weights) ** 2) / n) * width


def speed(sizes: str, repeats: int, breakdown: bool) -> None:
    threads = ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
    print(f"BLAS threads: {threads}; load average {os.getloadavg()[0]:.1f} at start; median of {repeats} "
          "interleaved rounds; float64 inputs.\n")
    print("| N | D | L | K | floor s | emms s | columns s | official s | logme_f s | thuml_loop s | emms / floor "
          "| columns / floor | logme_f / emms | thuml_loop / emms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    stages = []
    for size in sizes.split(","):
        n, d, width, k = (int(v) for v in size.split("x"))
        x, z = make_task(n, d, width, k)
        xc, zc = x - x.mean(0), np.concatenate([b - b.mean(0) for b in z], axis=1)
        z_all = np.concatenate(z, axis=1)
        fns = {"floor": lambda: floor(xc, zc), "emms": lambda: EMMS().fit(x, z),
               "columns": lambda: EMMS(mixture="columns").fit(x, z), "official": lambda: official_transcription(x, z),
               "logme_f": lambda: logme_flabels(x, z), "thuml_loop": lambda: logme_per_column_loop(x, z_all)}
        t, results = interleaved_medians(fns, repeats)
        assert np.isclose(results["official"], EMMS(solver="official").fit(x, z).score_, rtol=1e-8)
        assert np.isclose(results["thuml_loop"], results["logme_f"], rtol=1e-6)  # same number, two structures
        print(f"| {n} | {d} | {width} | {k} | " + " | ".join(f"{t[m]:.3f}" for m in fns)
              + f" | {t['emms'] / t['floor']:.2f}x | {t['columns'] / t['floor']:.2f}x"
              f" | {t['logme_f'] / t['emms']:.2f}x | {t['thuml_loop'] / t['emms']:.2f}x |", flush=True)
        if breakdown:
            stages.append((size, t["floor"], *stage_seconds(x, z, repeats)))
    if stages:
        print("\n| size | floor s | statistics pass s | standardise s | eigendecomposition + projection s | GCV λ search s |")
        print("|---|---|---|---|---|---|")
        for size, floor_s, *times in stages:
            print(f"| {size} | {floor_s:.3f} | " + " | ".join(f"{s:.3f}" for s in times) + " |")


def stage_seconds(x: np.ndarray, z: list[np.ndarray], repeats: int) -> list[float]:
    """Median time of each stage of ``EMMS().fit``: statistics (incl. validation), standardise, spectrum, λ search."""
    stats = SufficientStats.from_arrays(x, z)
    standard = stats.standardised(labels="blocks")
    spectrum = Spectrum(standard)
    t, _ = interleaved_medians({"stats": lambda: SufficientStats.from_arrays(x, z),
                                "standardise": lambda: stats.standardised(labels="blocks"),
                                "spectrum": lambda: Spectrum(standard),
                                "search": lambda: encoder_r2(spectrum, gcv=True)}, repeats)
    return list(t.values())


_PEAK_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time, tracemalloc
    import numpy as np
    from emms import EMMS

    def anon_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))

    n, d, width, k, base = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    x = np.memmap(base + ".x", dtype=np.float32, mode="r", shape=(n, d))
    z = np.memmap(base + ".z", dtype=np.float32, mode="r", shape=(n, width, k))
    EMMS().fit(x[:1000], z[:1000])  # imports and first-call allocations
    start, peak, done = anon_kb(), [0], [False]

    def watch():
        while not done[0]:
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    tracemalloc.start()
    t0 = time.perf_counter()
    model = EMMS().fit(x, z)
    seconds = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1]
    done[0] = True
    watcher.join()
    print(json.dumps({"n": n, "d": d, "width": width, "k": k, "data_mb": (x.nbytes + z.nbytes) / 2**20,
                      "anon_start_mb": start / 1024, "anon_growth_mb": (peak[0] - start) / 1024,
                      "anon_peak_mb": peak[0] / 1024, "traced_peak_mb": traced / 2**20, "seconds": seconds,
                      "score": model.score_, "weights": model.weights_.tolist()}))
""")


def memmap_peak(size: str, tmpdir: Path) -> dict:
    """Write float32 memmaps of ``size`` (NxDxLxK) under ``tmpdir``; measure ``EMMS().fit`` on them in a fresh process."""
    n, d, width, k = (int(v) for v in size.split("x"))
    tmpdir.mkdir(parents=True, exist_ok=True)
    base = tmpdir / f"emms-{size}"
    if not (Path(f"{base}.x").is_file() and Path(f"{base}.z").is_file()):
        rng = np.random.default_rng(0)
        x = np.memmap(f"{base}.x", dtype=np.float32, mode="w+", shape=(n, d))
        z = np.memmap(f"{base}.z", dtype=np.float32, mode="w+", shape=(n, width, k))
        mix_x, mix_z = rng.normal(size=(8, d)).astype(np.float32), rng.normal(size=(k, 8, width)).astype(np.float32)
        for a in range(0, n, 65_536):  # written in blocks: this process stays small too
            b = min(a + 65_536, n)
            signal = rng.normal(size=(b - a, 8)).astype(np.float32)
            x[a:b] = signal @ mix_x + rng.normal(size=(b - a, d)).astype(np.float32)
            for j in range(k):
                z[a:b, :, j] = signal @ mix_z[j] + 2 * rng.normal(size=(b - a, width)).astype(np.float32)
        x.flush()
        z.flush()
        del x, z
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(n), str(d), str(width), str(k), str(base)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def passes(size: str, rounds: int, runs: int) -> None:
    """The statistics pass at one size: (1) the five reads of a chunk it replaced (min, max, mean of X
    and of each Z_k, the concatenation of the Z_k, the squares) against its one blocked read, each
    call after a 240 MB read that evicts the caches; (2) EMMS / floor in ``runs`` interleaved runs of
    ``rounds`` rounds (only the floor and the fit, so the ratio is not diluted by other methods)."""
    n, d, width, k = map(int, size.split("x"))
    x, z = make_task(n, d, width, k)
    evict = np.ones(30_000_000)

    def five_reads() -> None:
        for a in [x, *z]:
            a.min(axis=0), a.max(axis=0), a.mean(axis=0)
        zr = np.concatenate(z, axis=1)
        np.einsum("nl,nl->l", zr, zr)

    cold = {"five reads": five_reads, "one blocked read": lambda: _summary_pass(x, z)}
    t, _ = interleaved_medians({name: (lambda f=f: (evict.sum(), f())) for name, f in cold.items()}, rounds)
    t_evict, _ = interleaved_medians({"evict": evict.sum}, rounds)
    print(f"{size}, caches evicted before each call, median of {rounds}: "
          + ", ".join(f"{name} {1000 * (t[name] - t_evict['evict']):.1f} ms" for name in cold))
    xc = x - x.mean(axis=0)
    zc = np.concatenate(z, axis=1)
    zc -= zc.mean(axis=0)
    ratios = []
    for _ in range(runs):
        t, _ = interleaved_medians({"floor": lambda: floor(xc, zc), "emms": lambda: EMMS().fit(x, z)}, rounds)
        ratios.append(t["emms"] / t["floor"])
    print(f"EMMS / floor in {runs} runs of {rounds} interleaved rounds: " + ", ".join(f"{r:.3f}" for r in ratios))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="5000x512x256x3,20000x1024x256x3")
    parser.add_argument("--breakdown", action="store_true", help="also time the stages of EMMS().fit")
    parser.add_argument("--passes", default=None, help="NxDxLxK: the statistics pass's reads and EMMS / floor (see passes)")
    parser.add_argument("--memmap", default=None, help="NxDxLxK: measure peak memory of EMMS().fit on float32 memmaps")
    parser.add_argument("--tmpdir", type=Path, default=Path(tempfile.gettempdir()) / "emms-memmap")
    args = parser.parse_args()
    if args.passes:
        passes(args.passes, max(args.repeats, 11), 3)
        return
    if args.memmap:
        print(json.dumps(memmap_peak(args.memmap, args.tmpdir)))
        return
    speed(args.sizes, args.repeats, args.breakdown)


if __name__ == "__main__":
    main()
