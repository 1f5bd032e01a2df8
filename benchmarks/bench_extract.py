"""Benchmark: feature-extraction throughput of emms.models vs a bare torch forward loop.

Same model object, same batch size, same images, same process. The extractor starts from uint8
images (it resizes, converts channels, normalises, runs the model, copies features to a float32
numpy array). The bare loop gets the already-preprocessed float tensor and only runs
``model(x[i:i+b])`` under ``torch.inference_mode`` — a strict baseline that excludes
preprocessing. It runs under the same glibc allocator settings as extraction
(``emms._allocator.retain_freed_memory``, switched on here as the ``emms`` command line does), so
the ratio measures our overhead alone;
``bench_allocator.py`` measures what those settings gain over glibc's defaults. Timings alternate
between the two and report the median of the repeats.
Prints a markdown table; ratio = our images/s divided by the bare loop's (goal >= 0.9), from the
medians of wall-clock time, with the range of the per-repeat ratios (each repeat's two runs are
adjacent in time) and the ratio of process CPU time (on a shared machine CPU time is less
disturbed by other jobs than wall time), the median minor page faults per pass of each side
(``getrusage``; glibc re-faulting freed activation buffers), and the load average before and after.

    OMP_NUM_THREADS=1 python benchmarks/bench_extract.py [--n 512 --batch-size 64 --image-size 64 --repeats 9 --device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

from emms._allocator import retain_freed_memory
from emms.models import load_extractor

os.environ.setdefault("EMMS_TUNE_MALLOC", "1")  # the command line's setting (emms._allocator is opt-in)

DEFAULT_MODELS = "mnv2_imagenet,efflite0_imagenet,effb0_photo_vs_drawing,ocrvgg_easyocr,onet_mtcnn"


def make_images(n: int) -> np.ndarray:
    """(n, 8, 8) uint8 gray digits (sklearn), repeated to n rows."""
    digits = (load_digits().images * 16).clip(0, 255).astype(np.uint8)
    return np.resize(digits, (n, 8, 8))


def bare_loop(model: torch.nn.Module, x: torch.Tensor, batch_size: int) -> None:
    with retain_freed_memory(), torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            model(x[start:start + batch_size])
    if x.is_cuda:
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    images = make_images(args.n)

    print(f"n={args.n} images (8x8 gray digits -> {args.image_size} px), batch {args.batch_size}, "
          f"median of {args.repeats} alternating repeats, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), device {args.device}, {platform.processor() or platform.machine()}, "
          f"load average {_load()} at start\n")
    print("| model | input px | emms extract (img/s) | bare torch loop (img/s) | ratio | per-repeat ratios "
          "| CPU-time ratio | minor page faults per pass (emms / bare) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        extractor = load_extractor(f"builtin:{name}", image_size=args.image_size, device=args.device)
        x = extractor.preprocess(images).to(extractor.device)  # the bare loop gets this tensor for free
        extractor.extract(images[: args.batch_size], batch_size=args.batch_size)  # warm-up both paths
        bare_loop(extractor.module, x[: args.batch_size], args.batch_size)
        ours, bare = np.empty((args.repeats, 3)), np.empty((args.repeats, 3))  # columns: wall, CPU, page faults
        for r in range(args.repeats):
            ours[r] = _timed(lambda: extractor.extract(images, batch_size=args.batch_size))
            bare[r] = _timed(lambda: bare_loop(extractor.module, x, args.batch_size))
        wall_ratio = float(np.median(bare[:, 0]) / np.median(ours[:, 0]))
        paired = bare[:, 0] / ours[:, 0]
        cpu_ratio = float(np.median(bare[:, 1]) / np.median(ours[:, 1]))
        print(f"| {name} | {extractor.image_size} | {args.n / np.median(ours[:, 0]):.0f} | "
              f"{args.n / np.median(bare[:, 0]):.0f} | {wall_ratio:.2f} | {paired.min():.2f}–{paired.max():.2f} | "
              f"{cpu_ratio:.2f} | {np.median(ours[:, 2]):,.0f} / {np.median(bare[:, 2]):,.0f} |")
    print(f"\nload average {_load()} at the end")


def _timed(run) -> tuple[float, float, int]:
    """(wall seconds, process CPU seconds, minor page faults) of one call."""
    faults, wall, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), time.process_time()
    run()
    return (time.perf_counter() - wall, time.process_time() - cpu,
            resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)


def _load() -> str:
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
