"""Wall-clock cost of ``emms.evaluate`` bootstrap intervals and of a whole ``evaluate_scores`` call.

1. Bootstrap draws (1000 resamples, M models) of both weighted-tau variants: a loop of scipy calls
   (baseline) against the vectorised :func:`emms.evaluate.correlations.weighted_tau_batch`, same run,
   median over repeats, and the largest difference between the two sets of draws.
2. ``evaluate_scores`` (every statistic + intervals) on synthetic scores for M models x T targets x
   K metrics.

    OMP_NUM_THREADS=1 python benchmarks/evaluate_cost.py [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from emms.evaluate.correlations import bootstrap_draws, weighted_tau, weighted_tau_batch
from emms.evaluate.summary import evaluate_scores

from _timing import median_seconds, median_seconds_and_result


def tables(n_models: int, n_targets: int, n_metrics: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    truth_rows, score_rows = [], []
    for t in range(n_targets):
        truth = rng.uniform(0.7, 0.9, size=n_models)
        truth_rows += [{"target": f"t{t}", "model": f"m{i}", "value": v} for i, v in enumerate(truth)]
        for k in range(n_metrics):
            noisy = truth + rng.normal(0, 0.05 * (k + 1), size=n_models)
            score_rows += [{"target": f"t{t}", "model": f"m{i}", "metric": f"k{k}", "score": v} for i, v in enumerate(noisy)]
    return pd.DataFrame(score_rows), pd.DataFrame(truth_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| models | variant | scipy loop s | batched s | speed-up | max abs diff |")
    print("|---:|---|---:|---:|---:|---:|")
    rng = np.random.default_rng(1)
    for n_models in (10, 20):
        truth = rng.uniform(0.7, 0.9, size=n_models)
        scores = truth + rng.normal(0, 0.05, size=n_models)
        for variant in ("symmetric", "truth_weighted"):
            def one(s, t, variant=variant):
                return weighted_tau(s, t, variant=variant)

            def many(s, t, variant=variant):
                return weighted_tau_batch(s, t, variant=variant)

            loop_s, loop = median_seconds_and_result(lambda: bootstrap_draws(one, scores, truth, n_resamples=1000), args.repeats)
            fast_s, fast = median_seconds_and_result(lambda: bootstrap_draws(one, scores, truth, n_resamples=1000, batched=many),
                                          args.repeats)
            diff = float(np.nanmax(np.abs(loop - fast)))
            print(f"| {n_models} | {variant} | {loop_s:.3f} | {fast_s:.4f} | {loop_s / fast_s:.0f}x | {diff:.1e} |")
    print()
    print("| models | targets | metrics | resamples | evaluate_scores median s |")
    print("|---:|---:|---:|---:|---:|")
    for n_models, n_targets, n_metrics in ((10, 3, 20), (10, 1, 20), (20, 3, 20)):
        scores, truth = tables(n_models, n_targets, n_metrics)
        full = median_seconds(lambda: evaluate_scores(scores, truth, n_resamples=1000), args.repeats)
        print(f"| {n_models} | {n_targets} | {n_metrics} | 1000 | {full:.2f} |")


if __name__ == "__main__":
    main()
