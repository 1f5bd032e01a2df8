"""Benchmark: image preprocessing of the packaged backbones, the current path vs the previous one.

``emms.models.preprocess_images`` (resize only the channels the image has, then one fused
multiply-add for /255, mean and std) against the method it replaced, written out here: convert to
float and divide by 255, replicate gray to three channels (or RGB to luma), resize, then subtract
the mean, divide by the std and make the tensor contiguous. Both run on the same uint8 batch in
turn; the figure is the median thread CPU time of ``--repeats`` rounds. Also prints the largest
difference between the two outputs, relative to the output's largest magnitude.

    OMP_NUM_THREADS=1 python benchmarks/bench_preprocess.py [--batch 64 --repeats 9]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from emms.models import BACKBONES, preprocess_images

CASES = [  # (label, image shape without the batch axis, backbone, output size)
    ("gray 8→64", (8, 8), "effb0_photo_vs_drawing", 64),
    ("gray 28→64", (28, 28), "effb0_photo_vs_drawing", 64),
    ("RGB 32→64", (32, 32, 3), "effb0_photo_vs_drawing", 64),
    ("RGB 256→224", (256, 256, 3), "effb0_photo_vs_drawing", 224),
    ("gray 8→64", (8, 8), "ocrvgg_easyocr", 64),
    ("RGB 256→224", (256, 256, 3), "ocrvgg_easyocr", 224),
]


def previous_preprocess(batch: np.ndarray, spec, size: int) -> torch.Tensor:
    """The preprocessing the packaged backbones used before the fused version (CPU)."""
    x = torch.from_numpy(np.ascontiguousarray(batch if batch.ndim == 4 else batch[..., None]))
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if spec.in_channels == 3 and x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif spec.in_channels == 1 and x.shape[1] == 3:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous()


def _cpu_ms(fn) -> float:
    start = time.thread_time()
    fn()
    return (time.thread_time() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, median thread CPU time of {args.repeats} interleaved rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.2f} at start\n")
    print("| input (batch) | model | previous (ms) | current (ms) | speed-up | current ms / image | max rel. difference |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, shape, name, size in CASES:
        spec = BACKBONES[name]
        batch = rng.integers(0, 256, size=(args.batch, *shape), dtype=np.uint8)
        with torch.inference_mode():
            old, new = previous_preprocess(batch, spec, size), preprocess_images(batch, spec, size)
            times = np.array([(_cpu_ms(lambda: previous_preprocess(batch, spec, size)),
                               _cpu_ms(lambda: preprocess_images(batch, spec, size))) for _ in range(args.repeats)])
        before, after = np.median(times, axis=0)
        difference = float((old - new).abs().max() / old.abs().max())
        print(f"| {label} | {name} | {before:.1f} | {after:.1f} | {before / after:.1f}× | {after / args.batch:.2f} | "
              f"{difference:.1e} |")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
