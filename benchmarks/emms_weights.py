"""EMMS's encoder weights t on the offline benchmark's pool (issue 19): does t differ between models?

For every target of ``benchmarks/offline_benchmark.py`` (cached features and F-labels from its store)
prints, per candidate, the default score, t, the R² of each encoder, and the column mixture's t.

    EMMS_FASHION_MNIST_DIR=... OMP_NUM_THREADS=1 python benchmarks/emms_weights.py [--cache /tmp/emms-benchmark-cache]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from emms import EMMS, EmmsWarning
from emms.flabels import embed_f_labels
from emms.data.fashion_targets import benchmark_targets
from emms.models import load_extractor
from emms.compute.store import Store
from offline_benchmark import CANDIDATES, SPLIT_SIZES, probe_features


def _vector(values) -> str:
    return "(" + ", ".join(f"{v:.3f}" for v in values) + ")"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/emms-benchmark-cache"))
    args = parser.parse_args()
    warnings.simplefilter("ignore", EmmsWarning)
    store = Store(args.cache)
    extractors = {name: load_extractor(spec) for name, spec in CANDIDATES.items()}
    for target_name, target in benchmark_targets(**SPLIT_SIZES).items():
        data = target.task_data("probe")
        flabels = embed_f_labels(data.task, data.labels, data.class_names, encoders="offline", store=store).arrays
        print(f"\n{target_name} (N = {len(data.labels)}; encoders MiniLM-L6, paraphrase-MiniLM-L3, e5-small)\n")
        print("| model | D | score | t | R² per encoder | column mixture's t |")
        print("|---|---|---|---|---|---|")
        for name, extractor in extractors.items():
            features, _ = probe_features(extractor, data, store, 64)
            model, columns = EMMS().fit(features, flabels), EMMS(mixture="columns").fit(features, flabels)
            print(f"| {name} | {features.shape[1]} | {model.score_:.4f} | {_vector(model.weights_)} "
                  f"| {_vector(model.encoder_scores_)} | {_vector(columns.weights_)} |", flush=True)


if __name__ == "__main__":
    main()
