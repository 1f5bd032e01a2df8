"""float32 vs float64 features: same ranking on the offline benchmark (fm10 probe features, cached)."""
import sys, warnings, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
warnings.simplefilter("ignore")
import offline_benchmark as ob
from emms.evaluate.targets import benchmark_targets
from emms.models import load_extractor
from emms.store import Store
from emms.embedders import embed_f_labels
import emms
store = Store("/tmp/emms-benchmark-cache")  # the offline benchmark's default cache
t = benchmark_targets(["fm10"], n_train=4000, n_val=500, n_probe=2000, n_test=2000, seed=0)["fm10"]
images, y = t.arrays("probe")
data = t.task_data("probe")
feats = {}
for name, spec in ob.CANDIDATES.items():
    feats[name] = ob.probe_features(load_extractor(spec), data, store, 64)[0]
fl = embed_f_labels(data.task, data.labels, data.class_names, encoders="offline", store=store).arrays
same = 0; total = 0
for metric in ["emms", "logme", "logme_flabels", "hscore", "hscore_reg", "gbc", "transrate", "sfda", "knn", "nleep"]:
    target = fl if metric in ("emms", "logme_flabels") else y
    r32 = {m: emms.score(f.astype(np.float32), target, metric) for m, f in feats.items()}
    r64 = {m: emms.score(f.astype(np.float64), target, metric) for m, f in feats.items()}
    o32 = sorted(r32, key=r32.get); o64 = sorted(r64, key=r64.get)
    total += 1; same += o32 == o64
    print(metric, "same ranking" if o32 == o64 else "DIFFERENT", max(abs(r32[m]-r64[m])/max(abs(r64[m]),1e-12) for m in feats))
print(f"{same}/{total} metrics give the same ranking")
