"""The helpers that exist once and serve several modules: file hashes (emms._io), class-wise array
helpers (emms.metrics._common), device and list parsing, the Fashion-MNIST pick, benchmark timing."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emms import _io
from emms._io import cached_file_sha256, file_sha256, path_fingerprint
from emms._validation import as_torch_device
from emms.cli._common import split_list
from emms.data.fashion import FASHION_CLASSES, PACKAGED_LABELS_DIR, per_class_rows, read_idx
from emms.errors import InputError, ResourceError
from emms.metrics._common import class_means, one_hot, pool_minmax


# -- file hashes ---------------------------------------------------------------------------------

def test_file_sha256_reads_every_block(tmp_path, monkeypatch):
    data = np.random.default_rng(0).bytes(1000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    monkeypatch.setattr(_io, "_HASH_BLOCK", 7)  # many blocks, the last one short
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_file_sha256_rereads_but_the_cached_hash_is_keyed_by_size_and_mtime(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 64)
    first = cached_file_sha256(path)
    stat = os.stat(path)
    path.write_bytes(b"b" * 64)  # same size; put the old mtime back
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == hashlib.sha256(b"b" * 64).hexdigest()  # verification never trusts a memo
    assert cached_file_sha256(path) == first  # same (path, size, mtime): the memo answers
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cached_file_sha256(path) == file_sha256(path) != first


def _model_folder(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "config.json").write_text('{"dim": 4}')
    (root / "sub" / "weights.bin").write_bytes(b"\x00\x01" * 50)
    return root


def test_path_fingerprint_follows_names_and_contents_not_location(tmp_path):
    one, two = _model_folder(tmp_path / "one"), _model_folder(tmp_path / "two")
    base = path_fingerprint(one)
    assert len(base) == 16 and base == path_fingerprint(two)  # independent of where the model lives
    (two / ".cache").mkdir()
    (two / ".cache" / "lock").write_text("x")
    assert path_fingerprint(two) == base  # .cache folders are skipped
    (two / "sub" / "weights.bin").write_bytes(b"\x00\x02" * 50)
    assert path_fingerprint(two) != base
    (one / "config.json").rename(one / "config2.json")
    assert path_fingerprint(one) != base
    single = one / "sub" / "weights.bin"
    content = hashlib.sha256(b"\x00\x01" * 50).hexdigest()
    expected = hashlib.sha256(f"weights.bin\0{100}\0{content}\n".encode())
    assert path_fingerprint(single) == expected.hexdigest()[:16]


# -- class-wise helpers of the metrics -----------------------------------------------------------

def test_class_means_and_one_hot_match_pandas_and_numpy():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, 50)
    codes[:4] = np.arange(4)
    features = rng.normal(size=(50, 3))
    expected = pd.DataFrame(features).groupby(codes).mean().to_numpy()
    np.testing.assert_allclose(class_means(features, codes, 4), expected, rtol=1e-12)
    hot = one_hot(codes, 4)
    assert hot.shape == (50, 4) and hot.dtype == np.float64
    np.testing.assert_array_equal(hot.argmax(axis=1), codes)
    np.testing.assert_array_equal(hot.sum(axis=1), np.ones(50))


def test_pool_minmax_scales_each_term_over_the_pool():
    names, scaled = pool_minmax({"a": (1.0, 5.0, 2.0), "b": (3.0, 5.0, 0.0), "c": (2.0, 5.0, 1.0)}, "NCTI")
    assert names == ["a", "b", "c"]
    np.testing.assert_allclose(scaled, [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.5, 0.0, 0.5]])
    with pytest.raises(InputError, match="features_by_model: ETran is pool-relative.*got 1"):
        pool_minmax({"a": (1.0, 2.0)}, "ETran")


# -- option parsing ------------------------------------------------------------------------------

def test_split_list_strips_and_names_the_option():
    assert split_list(" a, b ,,c ", "--models") == ["a", "b", "c"]
    with pytest.raises(InputError, match=r"--models: expected a comma-separated list, got ' , '"):
        split_list(" , ", "--models")
    with pytest.raises(InputError, match="--f-labels: expected at least one file"):
        split_list("", "--f-labels", "at least one file")


def test_as_torch_device_checks_type_and_availability(monkeypatch):
    assert as_torch_device("cpu") == torch.device("cpu")
    assert as_torch_device(torch.device("cpu"), kinds=("cpu", "cuda")) == torch.device("cpu")
    for bad in ("tpu", "meta", 3, None):
        with pytest.raises(InputError, match="device: expected 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            as_torch_device(bad)
    with pytest.raises(InputError, match="device: expected 'cpu', 'cuda' or 'cuda:N', got 'mps'"):
        as_torch_device("mps", kinds=("cpu", "cuda"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ResourceError, match="'cuda:1' requested but no CUDA GPU"):
        as_torch_device("cuda:1")


# -- Fashion-MNIST -------------------------------------------------------------------------------

def test_per_class_rows_is_seeded_and_balanced():
    labels = np.random.default_rng(2).integers(0, 5, 400)
    rows = per_class_rows(labels, 7, seed=3, n_classes=5)
    assert np.all(np.diff(rows) > 0) and np.bincount(labels[rows]).tolist() == [7] * 5
    np.testing.assert_array_equal(rows, per_class_rows(labels, 7, seed=3, n_classes=5))
    assert not np.array_equal(rows, per_class_rows(labels, 7, seed=4, n_classes=5))


def test_per_class_rows_rebuilds_the_bundled_sample_from_the_source_labels():
    import emms
    from emms.data.fashion_targets import fashion_mnist_labels

    with np.load(Path(emms.__file__).parent / "resources" / "fashion_mnist_sample.npz") as npz:
        index, names = npz["source_index"], [str(n) for n in npz["class_names"]]
    assert names == list(FASHION_CLASSES)
    np.testing.assert_array_equal(per_class_rows(fashion_mnist_labels("test"), 500, seed=0, n_classes=10), index)


def test_the_packaged_labels_are_fashion_mnists():
    """The package's copy of the label files: 60k + 10k labels, 6k / 1k per class, as published."""
    for name, per_class in (("train-labels-idx1-ubyte.gz", 6000), ("t10k-labels-idx1-ubyte.gz", 1000)):
        labels = read_idx(PACKAGED_LABELS_DIR / name)
        assert np.bincount(labels).tolist() == [per_class] * 10


# -- benchmarks/_timing.py -----------------------------------------------------------------------

def _timing_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "_timing.py"
    spec = importlib.util.spec_from_file_location("_timing", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_timing_helpers_count_calls_sync_and_stop_early():
    timing = _timing_module()
    calls, syncs = [], []
    times, result = timing.timed_runs(lambda: calls.append(1) or len(calls), 4, sync=lambda: syncs.append(1))
    assert len(times) == 4 and all(t >= 0 for t in times) and result == 4 and len(syncs) == 8
    times, _ = timing.timed_runs(lambda: None, 5, stop_after_s=0.0)  # the first run is "long": stop
    assert len(times) == 1
    seconds, value = timing.median_seconds_and_result(lambda: "done", 3)
    assert seconds >= 0 and value == "done"
    assert timing.median_seconds(lambda: None, 3) >= 0
