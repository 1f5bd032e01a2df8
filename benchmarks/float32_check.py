"""float32 vs float64 features: same ranking on the offline benchmark (fm10 probe features, cached).

Needs the full Fashion-MNIST images (see ``emms.data.fashion.GET_FASHION_MNIST``) and the offline
benchmark's feature cache (``/tmp/emms-benchmark-cache``, filled by ``offline_benchmark.py``).
"""

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import offline_benchmark as ob  # noqa: E402

import emms  # noqa: E402
from emms.flabels import embed_f_labels  # noqa: E402
from emms.data.fashion_targets import benchmark_targets  # noqa: E402
from emms.models import load_extractor  # noqa: E402
from emms.compute.store import Store  # noqa: E402

METRICS = ("emms", "logme", "logme_flabels", "hscore", "hscore_reg", "gbc", "transrate", "sfda", "knn", "nleep")


def main() -> None:
    warnings.simplefilter("ignore")
    store = Store("/tmp/emms-benchmark-cache")  # the offline benchmark's default cache
    target = benchmark_targets(["fm10"], n_train=4000, n_val=500, n_probe=2000, n_test=2000, seed=0)["fm10"]
    _, y = target.arrays("probe")
    data = target.task_data("probe")
    feats = {name: ob.probe_features(load_extractor(spec), data, store, 64)[0] for name, spec in ob.CANDIDATES.items()}
    f_labels = embed_f_labels(data.task, data.labels, data.class_names, encoders="offline", store=store).arrays
    same = 0
    for metric in METRICS:
        labels = f_labels if metric in ("emms", "logme_flabels") else y
        r32 = {m: emms.score(f.astype(np.float32), labels, metric) for m, f in feats.items()}
        r64 = {m: emms.score(f.astype(np.float64), labels, metric) for m, f in feats.items()}
        agree = sorted(r32, key=r32.get) == sorted(r64, key=r64.get)
        same += agree
        worst = max(abs(r32[m] - r64[m]) / max(abs(r64[m]), 1e-12) for m in feats)
        print(metric, "same ranking" if agree else "DIFFERENT", worst)
    print(f"{same}/{len(METRICS)} metrics give the same ranking")


if __name__ == "__main__":
    main()
