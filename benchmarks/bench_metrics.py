"""Benchmark: wall-clock and peak memory of every registered metric on one synthetic task.

Defaults: N = 10000 samples, D = 1024 features, C = 100 classes; LEEP/NCE get source
probabilities over 1000 source classes; F-label metrics get K = 3 encoders of width 256;
pool-relative metrics (ETran, NCTI) score a pool of 2 models (the time is for the whole pool).
Every metric runs with its default options in its own fresh subprocess (so one metric's memory
cannot inflate another's); the time is the median of ``--repeats`` runs when the first run is
short (< 20 s), else the single run. Peak memory is the process's peak resident set size during
the call (Linux VmHWM, reset just before the call) minus the resident size before it, i.e. what
the metric itself allocates on top of its inputs. Prints a markdown table.

    OMP_NUM_THREADS=1 python benchmarks/bench_metrics.py [--n 10000 --d 1024 --c 100 --timeout 240]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from _timing import timed_runs

_SOURCE_CLASSES = 1000
_ENCODERS, _LABEL_WIDTH = 3, 256


def make_task(n: int, d: int, c: int, seed: int = 0) -> dict:
    """Synthetic features with class structure, labels, source probabilities and F-labels."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.arange(c), rng.integers(0, c, size=n - c)])
    rng.shuffle(labels)
    codes = rng.normal(size=(c, 64))
    mixing = rng.normal(size=(64, d)) / 8.0
    features = (codes[labels] @ mixing + rng.normal(size=(n, d))).astype(np.float32)
    other = (codes[labels] @ rng.normal(size=(64, d)) / 16.0 + rng.normal(size=(n, d))).astype(np.float32)
    logits = features @ (rng.normal(size=(d, _SOURCE_CLASSES)) / np.sqrt(d)) * 3.0
    source_probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    source_probs /= source_probs.sum(axis=1, keepdims=True)
    f_labels = [(codes @ rng.normal(size=(64, _LABEL_WIDTH)))[labels] + rng.normal(size=(n, _LABEL_WIDTH))
                for _ in range(_ENCODERS)]
    return {"features": features, "other": other, "labels": labels, "source_probs": source_probs,
            "f_labels": f_labels}


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_one(name: str, n: int, d: int, c: int, repeats: int) -> dict:
    """Child process: time one metric and measure its peak memory."""
    from emms.metrics import get_metric

    task = make_task(n, d, c)
    info = get_metric(name)
    target = task["labels"] if "classes" in info.targets else task["f_labels"]
    if info.pool_relative:
        call = lambda: info.function({"model_a": task["features"], "model_b": task["other"]}, target)  # noqa: E731
    elif info.needs_source_probs:
        call = lambda: info.function(task["features"], target, source_probs=task["source_probs"])  # noqa: E731
    else:
        call = lambda: info.function(task["features"], target)  # noqa: E731
    before = _rss_mib("VmRSS")
    _reset_peak()
    times, _ = timed_runs(call, repeats, stop_after_s=20.0)
    return {"seconds": float(np.median(times)), "runs": len(times), "extra_peak_mib": _rss_mib("VmHWM") - before,
            "input_mib": before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--c", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per metric (all its repeats)")
    parser.add_argument("--metrics", nargs="*", help="only these (default: every registered metric)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.n, args.d, args.c, args.repeats)))
        return

    from emms.metrics import available_metrics

    infos = [m for m in available_metrics() if not args.metrics or m.name in args.metrics]
    print(f"Every registered metric, default options: N={args.n}, D={args.d}, C={args.c} (float32 features); "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; timeout {args.timeout:.0f} s per metric\n")
    print("| metric | target | wall-clock (s) | runs | extra peak RSS (MiB) |")
    print("|---|---|---:|---:|---:|")
    for info in infos:
        kind = "classes" if "classes" in info.targets else "flabels"
        extra = " + source probs" if info.needs_source_probs else (" (pool of 2)" if info.pool_relative else "")
        cmd = [sys.executable, __file__, "--one", info.name, "--n", str(args.n), "--d", str(args.d),
               "--c", str(args.c), "--repeats", str(args.repeats)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired:
            print(f"| {info.name} | {kind}{extra} | > {args.timeout:.0f} (timed out) | 0 | - |", flush=True)
            continue
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:80].replace("|", "/")
            print(f"| {info.name} | {kind}{extra} | failed: {reason} | 0 | - |", flush=True)
            continue
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {info.name} | {kind}{extra} | {result['seconds']:.2f} | {result['runs']} | "
              f"{result['extra_peak_mib']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
