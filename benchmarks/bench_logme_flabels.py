"""Benchmark: LogME with F-labels, all columns at once vs a plain per-column loop.

The loop is the structure of the reference code bases (thuml/LogME ``_fit_fixed_point``, copied by
SFDA/EMMS): one factorisation, then a Python loop over target columns, each running its own scalar
fixed-point iteration. It is written here (not imported) and checked to give the same number.
Both timings include the factorisation. Two target structures: class-level F-labels (few distinct
rows, where FᵀY is formed from per-class feature sums, see ``emms.metrics.stats.cross_product``) and
per-sample F-labels (every row distinct). Prints one markdown table for each.

    OMP_NUM_THREADS=1 python benchmarks/bench_logme_flabels.py [--n 5000 --d 512 --columns 768 --classes 100 --repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np

from emms.metrics.logme import logme_flabels

from _timing import interleaved_medians


def logme_per_column_loop(features: np.ndarray, targets: np.ndarray) -> float:
    """Fixed-point LogME, one target column at a time (reference structure, N > D branch)."""
    n, d = features.shape
    _, eigenvalues, vh = np.linalg.svd(features.T @ features)
    singular = np.sqrt(eigenvalues)
    rank = int(np.sum(singular > 1e-10))
    sigma = eigenvalues[:rank]
    u = features @ vh[:rank].T / singular[:rank]
    evidences = []
    for j in range(targets.shape[1]):
        y = targets[:, j]
        x2 = (u.T @ y) ** 2
        res_x2 = y @ y - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / (t + sigma) ** 2).sum()
            res2 = (x2 / (1 + sigma / t) ** 2).sum() + res_x2
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - 0.5 * np.sum(np.log(alpha + beta * sigma))
                    - beta / 2 * res2 - alpha / 2 * m2 - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def make_data(n: int, d: int, columns: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Features (n, d) and F-label-like targets (n, columns) sharing a 32-dim latent signal.

    ``classes`` > 0: class-level F-labels as in classification (each sample gets the embedding of
    its class, so only ``classes`` distinct target rows); 0: every row distinct (as for captions).
    """
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 32))
    features = latent @ rng.normal(size=(32, d)) + 2.0 * rng.normal(size=(n, d)) + rng.normal(size=d)
    if classes:
        labels = np.argmax(latent @ rng.normal(size=(32, classes)) + rng.gumbel(size=(n, classes)), axis=1)
        return features, rng.normal(size=(classes, columns))[labels]
    targets = latent @ rng.normal(size=(32, columns)) + rng.normal(size=(n, columns)) * rng.uniform(0.5, 6, columns)
    return features, targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--columns", type=int, default=768)
    parser.add_argument("--classes", type=int, default=100, help="distinct class-level F-label rows (the first table)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"LogME with F-labels: N={args.n}, D={args.d}, {args.columns} target columns; median of "
          f"{args.repeats} interleaved rounds; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"numpy {np.__version__}; {platform.processor() or platform.machine()}; "
          f"load average {os.getloadavg()[0]:.1f} at start")
    for classes, title in ((args.classes, f"class-level F-labels ({args.classes} distinct rows, a classification task)"),
                           (0, "per-sample F-labels (every row distinct, e.g. captions)")):
        features, targets = make_data(args.n, args.d, args.columns, classes)
        seconds, values = interleaved_medians({
            "loop": lambda: logme_per_column_loop(features, targets),
            "ours": lambda: logme_flabels(features, [targets]),
            "floor": lambda: (np.linalg.eigh(features.T @ features), features.T @ targets)}, args.repeats)
        assert np.isclose(values["ours"], values["loop"], rtol=1e-8), (values["ours"], values["loop"])
        print(f"\n{title}\n")
        print("| implementation | wall-clock (s) | score | speed-up |")
        print("|---|---:|---:|---:|")
        print(f"| per-column loop (reference structure) | {seconds['loop']:.3f} | {values['loop']:.6f} | 1.0x |")
        print(f"| `emms.metrics.logme.logme_flabels` (all columns at once) | {seconds['ours']:.3f} | "
              f"{values['ours']:.6f} | {seconds['loop'] / seconds['ours']:.1f}x |")
        print(f"| dense floor: FᵀF, its eigen-decomposition and a dense FᵀY alone | {seconds['floor']:.3f} | - | "
              f"{seconds['loop'] / seconds['floor']:.1f}x |")


if __name__ == "__main__":
    main()
