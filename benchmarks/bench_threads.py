"""Where do extra BLAS threads start to pay for scoring? (issue 19: the thread cap in emms.score)

For feature matrices (N, D) of growing size N·D², times ``emms.score`` for H-score and LogME on
class labels with BLAS limited to 1 thread and with the default thread count, in alternating rounds
(median of ``--repeats``), with the load average printed. The cap inside ``emms.score`` is switched
off here (``EMMS_BLAS_CAP=0`` is not needed: the limits are set around the call and the cap only
lowers them, so the 'default' column sets ``threadpool_limits(None)`` inside the capped region is
avoided by calling the metric functions directly).

    python benchmarks/bench_threads.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from emms.metrics import get_metric


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", default="500x64,900x384,2000x256,2000x512,5000x512,5000x1024,10000x1024")
    args = parser.parse_args()
    threads = max(i["num_threads"] for i in threadpool_info()) if threadpool_info() else 1
    print(f"load average {os.getloadavg()[0]:.2f}; default BLAS threads {threads}; cpus {os.cpu_count()}")
    print("| N | D | N·D² | metric | 1 thread s | default s | default / 1 thread |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for size in args.sizes.split(","):
        n, d = map(int, size.split("x"))
        x = rng.normal(size=(n, d))
        y = rng.integers(0, 10, size=n)
        for metric in ("hscore", "logme"):
            fn = get_metric(metric).function
            fn(x, y)  # warm-up (imports, first-call allocations)
            one, default = [], []
            for _ in range(args.repeats):  # alternate to share the machine's load fairly
                with threadpool_limits(limits=1):
                    one.append(timed(lambda: fn(x, y), 1))
                default.append(timed(lambda: fn(x, y), 1))
            a, b = float(np.median(one)), float(np.median(default))
            print(f"| {n} | {d} | {n * d * d:.1e} | {metric} | {a:.4f} | {b:.4f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
