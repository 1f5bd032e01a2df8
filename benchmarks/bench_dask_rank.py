"""`emms rank` in-process vs `--scheduler local` (extraction and scoring on Dask), each from an empty cache.

Run:  python benchmarks/bench_dask_rank.py [--max-samples 1000] [--models mnv2_imagenet,efflite0_imagenet,onet_mtcnn]

Each run is the real CLI in a child process with its own empty ``--cache``: in-process with one
torch/BLAS thread (``OMP_NUM_THREADS=1``), in-process with two, and ``--scheduler local`` (a
LocalCluster: one worker process per core, one thread each; the calling process has one thread).
Reports the child's wall time (cluster start-up included) and the pipeline's own stage timings,
and checks that the cached features (same store keys) and the scores equal the one-thread in-process
run. Prints a markdown table.
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

from emms.compute.store import Store


def run(cache: Path, out: Path, threads: int, args: argparse.Namespace, scheduler: str | None) -> dict:
    models = ",".join(f"builtin:{m}" for m in args.models.split(","))
    command = [str(Path(sys.executable).with_name("emms")), "rank", "--data", "builtin:fashion-mnist", "--task", "classification",
               "--models", models, "--metrics", args.metrics, "--max-samples", str(args.max_samples),
               "--image-size", str(args.image_size), "--cache", str(cache), "--out", str(out), "--json"]
    if scheduler is not None:
        command += ["--scheduler", scheduler]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    result = json.loads(out.read_text())
    stages: dict[str, float] = {}
    for row in result["timings"]:
        stages[row["stage"]] = stages.get(row["stage"], 0.0) + row["seconds"]
    return {"wall": seconds, "stages": stages, "scoring": sum(r["seconds"] for r in result["results"]),
            "scores": {(r["metric"], r["model"]): r["score"] for r in result["results"]}}


def features(cache: Path) -> dict[str, np.ndarray]:
    store = Store(cache)
    return {e["key"]: store.get(e["key"]) for e in store.entries() if e["kind"] == "features"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-samples", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--models", default="mnv2_imagenet,efflite0_imagenet,onet_mtcnn")
    parser.add_argument("--metrics", default="emms,logme")
    args = parser.parse_args()
    rows = (("in-process, 1 thread", 1, None), ("in-process, 2 threads", 2, None),
            ("--scheduler local (2 workers x 1 thread)", 1, "local"))
    with tempfile.TemporaryDirectory(prefix="emms-bench-dask-rank-") as folder:
        results, cached = {}, {}
        for label, threads, scheduler in rows:
            cache = Path(folder) / f"cache-{len(results)}"
            load = os.getloadavg()[0]
            results[label] = {**run(cache, Path(folder) / f"out-{len(results)}.json", threads, args, scheduler),
                              "load": load}
            cached[label] = features(cache)
    reference = rows[0][0]
    print(f"### emms rank: {args.max_samples} Fashion-MNIST images at {args.image_size} px, models {args.models}, "
          f"metrics {args.metrics}; {os.cpu_count()} CPU cores, empty cache per run\n")
    print("| run | wall (s) | extract features (s) | scoring (s) | load average at start | features = 1-thread run | scores = 1-thread run |")
    print("|---|---:|---:|---:|---:|---|---|")
    for label, _, _ in rows:
        r = results[label]
        same_keys = cached[label].keys() == cached[reference].keys()
        same_features = same_keys and all(np.array_equal(cached[label][k], cached[reference][k]) for k in cached[label])
        ref_scores = results[reference]["scores"]
        exact = r["scores"] == ref_scores
        worst = max(abs(r["scores"][k] - v) / abs(v) for k, v in ref_scores.items())
        print(f"| {label} | {r['wall']:.1f} | {r['stages']['extract features']:.1f} | {r['scoring']:.2f} | {r['load']:.1f} | "
              f"{'bit-identical' if same_features else 'differ' if same_keys else 'other keys'} | "
              f"{'exact' if exact else f'max rel. diff {worst:.1e}'} |")


if __name__ == "__main__":
    main()
