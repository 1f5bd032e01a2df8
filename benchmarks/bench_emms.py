"""Benchmark: the exact EMMS solver vs the GEMM floor and vs a plain transcription of the official code.

For each size (N, D, L, K) it times, in one run, median of ``--repeats``:

* floor        X̃ᵀX̃ plus X̃ᵀ[Z_1 ... Z_K] on the same float64 arrays (the unavoidable matrix products);
* gcv          ``EMMS()`` (default: exact solver, GCV-ridge score), from the raw arrays;
* in_sample    ``EMMS(score="in_sample")``, the plain residual with the same exact solver;
* official     a plain numpy transcription of the released algorithm: standardise, ``lstsq``
               W-step, ``lstsq`` t-step, sparsemax, one alternation.

Ratios are computed from times measured in the same run. Prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_emms.py [--repeats 5] [--sizes 5000x512x256x3,...] [--breakdown]
"""

from __future__ import annotations

import argparse

import numpy as np
from threadpoolctl import threadpool_info

from emms import EMMS
from emms.metrics.emms import _gcv_search, _Spectrum, _sparsemax
from emms.stats import SufficientStats

from _timing import median_seconds


def make_task(n: int, d: int, width: int, k: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """Features sharing a rank-32 signal with K noisy F-label blocks (float64)."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(n, 32))
    x = signal @ rng.normal(size=(32, d)) + rng.normal(scale=2.0, size=(n, d)) + rng.normal(size=d)
    z = [signal @ rng.normal(size=(32, width)) + rng.normal(scale=s, size=(n, width)) for s in np.linspace(1, 4, k)]
    return x, z


def gemm_floor(x: np.ndarray, z_all: np.ndarray) -> None:
    """The matrix products any exact method needs: XᵀX and XᵀZ."""
    _ = x.T @ x
    _ = x.T @ z_all


def official_transcription(x: np.ndarray, z: list[np.ndarray]) -> float:
    """The released EMMS algorithm written plainly with numpy (one alternation, lstsq)."""
    n, width, k = x.shape[0], z[0].shape[1], len(z)
    xs = (x - x.mean(0)) / (x.std(0) + 1e-8)
    y = np.stack([(b - b.mean(0)) / (b.std(0) + 1e-8) for b in z], axis=2)
    coef = np.linalg.lstsq(xs, y @ np.full(k, 1.0 / k), rcond=None)[0]
    prediction = xs @ coef
    weights = _sparsemax(np.linalg.lstsq(y.reshape(n * width, k), prediction.reshape(n * width), rcond=None)[0])
    return -(np.sum((prediction - y @ weights) ** 2) / n) * width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="5000x512x256x3,20000x1024x256x3")
    parser.add_argument("--breakdown", action="store_true", help="also time the stages of the gcv fit")
    args = parser.parse_args()
    threads = ", ".join(f"{i['internal_api']}={i['num_threads']}" for i in threadpool_info())
    print(f"BLAS threads: {threads}; median of {args.repeats} runs; float64 inputs.\n")
    print("| N | D | L | K | floor s | gcv s | in_sample s | official s | gcv / floor | in_sample / floor "
          "| gcv / in_sample | official / gcv |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    stages = []
    for size in args.sizes.split(","):
        n, d, width, k = (int(v) for v in size.split("x"))
        x, z = make_task(n, d, width, k)
        z_all = np.concatenate(z, axis=1)
        floor = median_seconds(lambda: gemm_floor(x, z_all), args.repeats)
        gcv = median_seconds(lambda: EMMS().fit(x, z), args.repeats)
        in_sample = median_seconds(lambda: EMMS(score="in_sample").fit(x, z), args.repeats)
        official = median_seconds(lambda: official_transcription(x, z), args.repeats)
        assert np.isclose(official_transcription(x, z), EMMS(solver="official").fit(x, z).score_, rtol=1e-8)
        print(f"| {n} | {d} | {width} | {k} | {floor:.3f} | {gcv:.3f} | {in_sample:.3f} | {official:.3f} "
              f"| {gcv / floor:.2f}x | {in_sample / floor:.2f}x | {gcv / in_sample:.2f}x | {official / gcv:.1f}x |")
        if args.breakdown:
            stages.append((size, floor, *stage_seconds(x, z, args.repeats)))
    if stages:
        print("\n| size | floor s | statistics pass s | standardise s | eigendecomposition s | GCV λ search s |")
        print("|---|---|---|---|---|---|")
        for size, floor, *times in stages:
            print(f"| {size} | {floor:.3f} | " + " | ".join(f"{t:.3f}" for t in times) + " |")


def stage_seconds(x: np.ndarray, z: list[np.ndarray], repeats: int) -> tuple[float, float, float, float]:
    """Median time of each stage of ``EMMS().fit``: statistics (incl. validation), standardise, eigh, λ search."""
    stats = SufficientStats.from_arrays(x, z)
    standard = stats.standardised()
    spectrum = _Spectrum(standard)
    return (median_seconds(lambda: SufficientStats.from_arrays(x, z), repeats),
            median_seconds(stats.standardised, repeats),
            median_seconds(lambda: _Spectrum(standard), repeats),
            median_seconds(lambda: _gcv_search(spectrum), repeats))


if __name__ == "__main__":
    main()
