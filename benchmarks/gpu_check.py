"""GPU check: EMMS scores and timings, numpy (CPU) vs the torch backend on CUDA (float64 and float32).

Run on a machine with a CUDA GPU:  python benchmarks/gpu_check.py [--n 200000] [--d 1024] [--repeats 3]

Prints a markdown table: per path, the median time of ``--repeats`` runs (statistics pass + solve,
data already in host memory), the speed-up over numpy, the score and its relative difference from
numpy. Exits with status 1 if float64 on CUDA differs from numpy by more than 1e-9 relative or
float32 by more than 1e-3, so it doubles as a smoke test. Without CUDA it runs the CPU-torch rows
only and says so.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import numpy as np

from _timing import median_seconds_and_result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import torch

    from emms.compute.backend import emms_fit_torch
    from emms.metrics.emms import EMMS
    from emms.compute.streaming import stream_fit

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, args.n)
    x = (rng.standard_normal((args.n, args.d), dtype=np.float32)
         + rng.standard_normal((100, args.d), dtype=np.float32)[labels] * 0.3)
    z = [rng.normal(size=(100, args.width))[labels] + rng.normal(size=(args.n, args.width)) * 0.5 for _ in range(args.k)]

    sync = torch.cuda.synchronize if torch.cuda.is_available() else None

    def timed(fn):
        return median_seconds_and_result(fn, args.repeats, sync=sync)

    rows = [("numpy, in memory (EMMS().fit)", *timed(lambda: EMMS().fit(x, z).score_)),
            ("numpy, streamed chunks", *timed(lambda: stream_fit(x, z, chunk_rows=args.chunk_rows).score)),
            ("torch cpu float64", *timed(lambda: emms_fit_torch(x, z, chunk_rows=args.chunk_rows).score_))]
    if torch.cuda.is_available():
        for dtype in ("float64", "float32"):
            rows.append((f"torch cuda {dtype}", *timed(lambda d=dtype: emms_fit_torch(
                x, z, device="cuda", dtype=d, chunk_rows=args.chunk_rows).score_)))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device (CPU rows only)"
    print(f"### EMMS numpy vs torch: N = {args.n:,}, D = {args.d}, K = {args.k}, L = {args.width}; {device}; "
          f"torch {torch.__version__}\n")
    print("| path | median time (s) | speed-up vs numpy in memory | score | relative difference |")
    print("|---|---:|---:|---:|---:|")
    base_time, base_score = rows[0][1], rows[0][2]
    failed = False
    for name, seconds, value in rows:
        rel = abs(value - base_score) / abs(base_score)
        limit = 1e-3 if "float32" in name else 1e-9
        failed |= rel > limit
        print(f"| {name} | {seconds:.3f} | {base_time / seconds:.2f}x | {value:.12f} | {rel:.1e} |")
    if failed:
        print("\nFAIL: a torch score differs from numpy by more than its tolerance (1e-9 float64, 1e-3 float32)")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
