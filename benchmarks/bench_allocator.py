"""Benchmark: extraction with emms's glibc allocator settings vs glibc's defaults, in fresh processes.

``emms`` runs its extraction batches inside ``emms._allocator.retain_freed_memory`` (freed
activations stay in the heap for the next batch). The settings are process-wide and glibc cannot
return to its adaptive defaults once they are set, so each variant runs in its own fresh child
process: ``EMMS_TUNE_MALLOC=0`` (glibc defaults) or ``=1`` (emms's settings, the command line's default). The two alternate, the
order flipping every round, and each child loads the model, warms up on one batch, then times
``extract`` over the same images ``--passes`` times. Prints a markdown table: images/s from the median
pass over all rounds, the speed-up (default time / tuned time) and its range over the rounds (each
round's two children ran one after the other), the median minor page faults per pass and each
child's peak resident memory (``ru_maxrss``, model and torch included; the largest over the rounds),
and the load average before and after.

    OMP_NUM_THREADS=1 python benchmarks/bench_allocator.py [--models mnv2_imagenet --sizes 64,160,224 --n 256 --batch-size 64 --passes 3 --rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

from bench_extract import make_images


def child(model: str, size: int, n: int, batch_size: int, passes: int) -> None:
    """Time ``extract`` in this process and print one JSON line."""
    import torch

    from emms.models import load_extractor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = make_images(n)
    extractor = load_extractor(f"builtin:{model}", image_size=size)
    extractor.extract(images[:batch_size], batch_size=batch_size)
    rows = []
    for _ in range(passes):
        faults, wall = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        extractor.extract(images, batch_size=batch_size)
        rows.append((time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    print(json.dumps({"size": extractor.image_size, "rows": rows,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_child(args: argparse.Namespace, model: str, size: int, tuned: bool) -> dict:
    env = {**os.environ, "EMMS_TUNE_MALLOC": "1" if tuned else "0"}
    command = [sys.executable, __file__, "--child", model, str(size), "--n", str(args.n),
               "--batch-size", str(args.batch_size), "--passes", str(args.passes)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnv2_imagenet")
    parser.add_argument("--sizes", default="64,160,224")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.n, args.batch_size, args.passes)
        return

    print(f"n={args.n} images (8x8 gray digits resized), batch {args.batch_size}, {args.passes} passes per "
          f"child, {args.rounds} rounds of alternating fresh processes, OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, load average {_load()} at start\n")
    print("| model | input px | glibc defaults (img/s) | emms settings (img/s) | speed-up | per-round speed-ups "
          "| minor page faults per pass (defaults / emms) | peak RSS MB (defaults / emms) |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            runs: dict[bool, list[dict]] = {False: [], True: []}
            for r in range(args.rounds):
                for tuned in ((False, True) if r % 2 == 0 else (True, False)):
                    runs[tuned].append(run_child(args, model, size, tuned))
            rows = {k: np.array([row for run in v for row in run["rows"]]) for k, v in runs.items()}
            time_default, time_tuned = (float(np.median(rows[k][:, 0])) for k in (False, True))
            rss = {k: max(run["peak_rss_mb"] for run in v) for k, v in runs.items()}
            per_round = [np.median([t for t, _ in d["rows"]]) / np.median([t for t, _ in e["rows"]])
                         for d, e in zip(runs[False], runs[True])]
            print(f"| {model} | {runs[True][0]['size']} | {args.n / time_default:.0f} | {args.n / time_tuned:.0f} | "
                  f"{time_default / time_tuned:.2f} | {min(per_round):.2f}–{max(per_round):.2f} | "
                  f"{np.median(rows[False][:, 1]):,.0f} / "
                  f"{np.median(rows[True][:, 1]):,.0f} | {rss[False]:.0f} / {rss[True]:.0f} |", flush=True)
    print(f"\nload average {_load()} at the end")


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
