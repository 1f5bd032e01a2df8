"""Importing and calling the library leaves the host process alone: cheap import, lazy metric
registration that stays complete, no matplotlib backend switch. Each check runs in a fresh process."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

from emms.metrics import registry


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_emms_loads_no_heavy_dependency():
    out = _run("import sys, emms; print(' '.join(m for m in ('sklearn', 'scipy', 'torch', 'pandas', 'matplotlib') "
               "if m in sys.modules))")
    assert out == ""


def test_metrics_register_on_first_use_and_the_list_is_complete():
    out = _run("import emms, sys; from emms.metrics import registry as r; before = len(r._REGISTRY); "
               "emms.get_metric('logme'); print(before, 'emms.metrics.logme' in sys.modules, "
               "'emms.metrics.sfda' in sys.modules, len(emms.available_metrics()))")
    before, logme_loaded, sfda_loaded, total = out.split()
    assert (before, logme_loaded, sfda_loaded) == ("0", "True", "False")
    assert int(total) == len(registry.builtin_modules()) == 20


def test_builtin_index_names_each_metric_of_its_module():
    for name, module in registry.builtin_modules().items():
        mod = importlib.import_module(f"emms.metrics.{module}")
        assert registry.get_metric(name).function.__module__ == mod.__name__, name
    assert set(m.name for m in registry.available_metrics()) >= set(registry.builtin_modules())


def test_a_bytecode_only_install_finds_every_metric(tmp_path):
    # a copy of the package compiled to .pyc with its .py sources removed: the @register lines cannot be read
    import compileall
    import shutil
    from pathlib import Path

    import emms

    copy = tmp_path / "emms"
    shutil.copytree(Path(emms.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert compileall.compile_dir(copy, legacy=True, quiet=1)
    for source in copy.rglob("*.py"):
        source.unlink()
    code = ("import emms, json; from emms.metrics import registry as r; "
            "print(json.dumps([emms.__file__, r.builtin_modules(), sorted(m.name for m in emms.available_metrics())]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    where, index, names = json.loads(done.stdout)
    assert where.startswith(str(tmp_path)) and where.endswith(".pyc")  # the copy, not the installed sources
    assert index == registry.builtin_modules() and len(names) == 20


def test_report_keeps_the_host_matplotlib_backend(tmp_path):
    code = f"""
import matplotlib
matplotlib.use("svg")
import numpy as np, pandas as pd
from emms.pipeline import Ranking
table = pd.DataFrame({{"model": ["a", "b"], "metric": ["logme", "logme"], "score": [1.0, 2.0], "rank": [2, 1],
                      "seconds": [0.1, 0.1], "weights": [None, None]}})
timings = pd.DataFrame({{"stage": ["load data"], "model": [""], "seconds": [0.1]}})
meta = {{"data": "x", "task": "classification", "n_samples": 2}}
Ranking(table=table, timings=timings, meta=meta).to_html(r"{tmp_path / 'r.html'}")
print(matplotlib.get_backend())
"""
    assert _run(code) == "svg"
    assert (tmp_path / "r.html").stat().st_size > 1000
