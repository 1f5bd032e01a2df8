"""Wall-clock of the part-2 baselines (SFDA, PARC, PACTran x3, NCTI, ETran, kNN, linear probe).

Synthetic Gaussian-class features; every metric timed in the same run (median of ``--repeats``),
pool-relative ones on a pool of two models (time per model reported). Prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics_part2.py --n 2000 --d 256 --c 20
"""

from __future__ import annotations

import argparse
import platform
import warnings

import numpy as np

from emms.metrics import score, score_pool

from _timing import median_seconds

PER_MODEL = ["sfda", "parc", "pactran_dirichlet", "pactran_gamma", "pactran_gauss", "knn", "linear_probe"]
POOL = ["ncti", "etran"]


def make_task(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, size=n - c)])
    features = rng.normal(size=(c, d))[labels] * 0.5 + rng.normal(size=(n, d))
    return features.astype(np.float32), labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--c", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    x, y = make_task(args.n, args.d, args.c)
    x2, _ = make_task(args.n, args.d, args.c, seed=1)
    warnings.simplefilter("ignore")
    print(f"N = {args.n}, D = {args.d}, C = {args.c}; median of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}\n")
    print("| metric | seconds per model | value |")
    print("|---|---|---|")
    for name in PER_MODEL:
        value = score(x, y, name)
        seconds = median_seconds(lambda name=name: score(x, y, name), args.repeats)
        print(f"| {name} | {seconds:.3f} | {value:.4f} |")
    for name in POOL:
        values = score_pool({"a": x, "b": x2}, y, name)
        seconds = median_seconds(lambda name=name: score_pool({"a": x, "b": x2}, y, name), args.repeats) / 2
        print(f"| {name} (pool of 2) | {seconds:.3f} | a={values['a']:.3f}, b={values['b']:.3f} |")


if __name__ == "__main__":
    main()
