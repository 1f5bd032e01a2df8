"""F-label embedding cost: per-sample encoding vs distinct texts + index expansion vs a cache hit.

Run: OMP_NUM_THREADS=1 python benchmarks/bench_flabels.py [--n 2000] [--repeats 3]
Prints a markdown table; times are medians of ``--repeats`` runs measured in the same process.
Encoder: the packaged paraphrase-MiniLM-L3-v2 ONNX model (CPU). Labels: Fashion-MNIST's 10 class
names, N samples drawn uniformly (seed 0).
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd

from emms.data.fashion import FASHION_CLASSES
from emms.flabels import embed_f_labels, load_encoder
from emms.compute.store import Store

from _timing import median_seconds

FASHION = list(FASHION_CLASSES)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    encoder = load_encoder("paraphrase-minilm-l3")
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(FASHION), size=args.n)
    labels = pd.DataFrame({"label": ids})
    per_sample_texts = [FASHION[i] for i in ids]

    naive = median_seconds(lambda: encoder.encode(per_sample_texts), args.repeats)
    distinct = median_seconds(lambda: embed_f_labels("classification", labels, FASHION, encoders=[encoder]), args.repeats)
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        embed_f_labels("classification", labels, FASHION, encoders=[encoder], store=store)
        cached = median_seconds(lambda: embed_f_labels("classification", labels, FASHION, encoders=[encoder],
                                                       store=store), args.repeats)
    # correctness of the fast path against the per-sample one
    fast = embed_f_labels("classification", labels, FASHION, encoders=[encoder]).arrays[0]
    slow = encoder.encode([" ".join(t.replace("/", " ").split()) for t in per_sample_texts])
    max_diff = float(np.abs(fast - slow).max())

    print(f"| classification, N={args.n}, 10 classes, paraphrase-MiniLM-L3 ONNX | median s | vs per-sample |")
    print("|---|---|---|")
    print(f"| encode every sample's text | {naive:.3f} | 1.00x |")
    print(f"| distinct texts once + expand by index | {distinct:.4f} | {naive / distinct:.0f}x faster |")
    print(f"| second call, cache hit (no encoder call) | {cached:.4f} | {naive / cached:.0f}x faster |")
    print(f"\nmax |distinct - per-sample| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
