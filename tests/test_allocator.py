"""emms._allocator: freed memory is kept between extraction batches, and given back afterwards.

glibc's settings are process-wide and cannot be read back, so each scenario runs in a fresh Python
process and observes them through minor page faults: touching a 64 MiB block that the allocator
had to fetch from the kernel faults once per page (4 KiB, or a larger folio on kernels that map
anonymous memory in bigger pieces: 544 faults here; 33 when it maps 2 MiB huge pages), a block
reused from the heap faults none.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from emms._allocator import _USER_SETTINGS, retain_freed_memory

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the allocator settings apply to glibc only")

SCENARIOS = r"""
import json, resource, sys
import numpy as np
from emms._allocator import retain_freed_memory
from emms.models import from_callable

def faults_touching_64mib():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = np.empty(64 << 20, dtype=np.uint8)
    block.fill(1)
    del block
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

out = {}
with retain_freed_memory() as applied:
    out["applied"] = applied
    with retain_freed_memory():
        out["inside"] = [faults_touching_64mib() for _ in range(3)]
    out["after_inner_exit"] = faults_touching_64mib()
out["after_exit"] = [faults_touching_64mib() for _ in range(2)]

per_batch = []
def features(batch):
    per_batch.append(faults_touching_64mib())
    return np.zeros((len(batch), 2), dtype=np.float32)
extractor = from_callable(features, identity="touches-64MiB", modality="any")
extractor.extract(list(range(8)), batch_size=2)
out["extract_batches"] = per_batch[:]

import tempfile
import pandas as pd
from emms.data.taskdata import TaskData
from emms.compute.extract import extract_features
from emms.compute.store import Store
per_batch.clear()
texts = [f"text {i}" for i in range(8)]
data = TaskData("texts", "text", texts, "classification", pd.DataFrame({"label": [0, 1] * 4}))
with tempfile.TemporaryDirectory() as cache:
    extract_features(extractor, data, Store(cache), batch_size=2, chunk_rows=2)  # 4 chunks of one batch
out["store_chunks"] = per_batch[:]
print(json.dumps(out))
"""


def _run(**env: str) -> dict:
    opt_outs = {"EMMS_TUNE_MALLOC", "GLIBC_TUNABLES", *_USER_SETTINGS}
    environ = {k: v for k, v in os.environ.items() if k not in opt_outs}
    done = subprocess.run([sys.executable, "-c", SCENARIOS], env={**environ, **env}, capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fresh(faults: int) -> bool:
    """Whether a touch faulted like a block newly fetched from the kernel: 64 MiB cannot map in fewer
    than 32 pages, even when the kernel backs it with 2 MiB huge pages (which it does for some blocks
    and not others, so the count varies between 32 and 16,384)."""
    return faults >= 32


def _reused(faults: int) -> bool:
    """Whether a touch found the block already in the heap (a handful of faults at most)."""
    return faults < 8


def test_freed_blocks_are_reused_inside_and_returned_after():
    out = _run(EMMS_TUNE_MALLOC="1")
    assert out["applied"] is True
    fresh, *again = out["inside"]
    assert _fresh(fresh)
    assert all(map(_reused, again))                       # later blocks reuse the freed one
    assert _reused(out["after_inner_exit"])               # a nested exit keeps the setting
    assert all(map(_fresh, out["after_exit"]))            # the last exit gave the memory back
    for batches in (out["extract_batches"], out["store_chunks"]):  # one extract call; four cached chunks
        first, *later = batches
        assert len(batches) == 4 and _fresh(first) and all(map(_reused, later))


@pytest.mark.parametrize("env", [{}, {"EMMS_TUNE_MALLOC": "0"}])
def test_a_library_process_keeps_glibc_behaviour_unless_it_opts_in(env):
    out = _run(**env)
    assert out["applied"] is False
    assert all(map(_fresh, out["inside"] + out["extract_batches"] + out["store_chunks"]))


def test_the_command_line_opts_its_own_process_in():
    code = ("import os, sys; sys.argv = ['emms', 'metrics', '--json']; from emms.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint(os.environ.get('EMMS_TUNE_MALLOC'))")
    opt_outs = {"EMMS_TUNE_MALLOC", "GLIBC_TUNABLES", *_USER_SETTINGS}
    environ = {k: v for k, v in os.environ.items() if k not in opt_outs}
    done = subprocess.run([sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "1"


@pytest.mark.parametrize("env", [{"EMMS_TUNE_MALLOC": "0"}, {"MALLOC_MMAP_THRESHOLD_": "65536"},
                                 {"MALLOC_TRIM_THRESHOLD_": "131072"}, {"MALLOC_TOP_PAD_": "0"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}])
def test_user_settings_are_respected_in_process(monkeypatch, env):
    monkeypatch.setenv("EMMS_TUNE_MALLOC", "1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with retain_freed_memory() as applied:
        assert applied is False
