"""emms.compute.extract.extract_features: store hits/misses/invalidation, progress, and resume after SIGKILL.

The extractor used here is a real (tiny, seeded) torch convolutional network behind the
FeatureExtractor protocol (identity, modality, extract); its outputs are real forward passes.
"""

from __future__ import annotations

import importlib.util
import os
import warnings

import numpy as np
import pandas as pd
import pytest

from _counting import CountingExtractor
from _sigkill import sigkill_after_chunks
from emms.data import TaskData, load_dataset
from emms.data.taskdata import inputs_fingerprint
from emms.errors import EmmsWarning, InputError
from emms.compute.extract import extract_features, features_key
from emms.models import load_extractor
from emms.compute.store import Store

TINY_EXTRACTOR = '''
import sys, time
import numpy as np
import torch

class TinyConvExtractor:
    """A seeded 2-layer CNN on gray images resized to ``size``; ``delay`` seconds of sleep per batch."""
    modality = "image"

    def __init__(self, size=16, seed=0, delay=0.0, log=None):
        torch.manual_seed(seed)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
        self.size, self.delay, self.calls, self.log = size, delay, [], log
        self.identity = f"tinyconv(seed={seed})|gray|size={size}"

    def extract(self, inputs, batch_size=64, progress=None):
        self.calls.append(len(inputs))
        out = []
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.asarray(inputs[start:start + batch_size], dtype=np.float32) / 255.0)[:, None]
            batch = torch.nn.functional.interpolate(batch, size=(self.size, self.size), mode="bilinear", align_corners=False)
            with torch.inference_mode():
                out.append(self.net(batch).numpy())
            time.sleep(self.delay)
            if progress is not None:
                progress(len(batch))
        return np.concatenate(out).astype(np.float32)

if __name__ == "__main__":
    from emms.data import load_dataset
    from emms.compute.extract import extract_features
    from emms.compute.store import Store
    torch.set_num_threads(1)
    data = load_dataset("builtin:fashion-mnist", max_samples=int(sys.argv[2]), seed=0)
    extract_features(TinyConvExtractor(delay=float(sys.argv[3])), data, store=Store(sys.argv[1]), batch_size=10,
                     chunk_rows=20)
    print("finished", flush=True)
'''


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny_extractor.py"
    path.write_text(TINY_EXTRACTOR)
    spec = importlib.util.spec_from_file_location("tiny_extractor", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.script = path
    return module


@pytest.fixture(scope="module")
def data():
    return load_dataset("builtin:fashion-mnist", max_samples=120, seed=0)


def test_without_store_equals_with_store_and_second_call_hits(tmp_path, tiny, data):
    reference = extract_features(tiny.TinyConvExtractor(), data, batch_size=32)
    assert reference.shape == (120, 8) and reference.dtype == np.float32 and reference.std() > 0
    store = Store(tmp_path)
    extractor = tiny.TinyConvExtractor()
    first = extract_features(extractor, data, store=store, batch_size=16)
    assert extractor.calls == [120]  # one chunk: 8 batches of 16 = 128 rows >= 120
    np.testing.assert_allclose(first, reference, rtol=1e-5, atol=1e-6)
    again = tiny.TinyConvExtractor()
    second = extract_features(again, data, store=store, batch_size=16)
    assert again.calls == [] and np.array_equal(second, first)
    [entry] = store.entries()
    assert entry["kind"] == "features" and entry["shape"] == [120, 8]
    assert entry["meta"]["model"] == extractor.identity and entry["meta"]["inputs_fingerprint"] == data.inputs_fingerprint


def test_preprocessing_or_data_change_misses(tmp_path, tiny, data):
    store = Store(tmp_path)
    base = extract_features(tiny.TinyConvExtractor(size=16), data, store=store)
    resized = tiny.TinyConvExtractor(size=20)
    out = extract_features(resized, data, store=store)
    assert resized.calls == [120] and not np.array_equal(out, base)
    other_data = load_dataset("builtin:fashion-mnist", max_samples=120, seed=1)
    fresh = tiny.TinyConvExtractor(size=16)
    extract_features(fresh, other_data, store=store)
    assert fresh.calls == [120]
    assert len({features_key(tiny.TinyConvExtractor(size=s), d) for s in (16, 20) for d in (data, other_data)}) == 4
    assert len(store.entries()) == 3


def test_features_are_keyed_on_the_inputs_not_the_labels(tmp_path, data):
    onet = load_extractor("builtin:onet_mtcnn")
    relabelled = TaskData("other labels", data.modality, data.inputs, "classification",
                          pd.DataFrame({"label": np.arange(len(data)) % 3}), class_names=None)
    assert relabelled.fingerprint != data.fingerprint and relabelled.inputs_fingerprint == data.inputs_fingerprint
    assert features_key(onet, relabelled) == features_key(onet, data)
    store = Store(tmp_path)
    counting = CountingExtractor(onet)
    first = extract_features(counting, data, store=store, batch_size=32)
    assert counting.rows == 120
    second = extract_features(counting, relabelled, store=store, batch_size=32)
    assert counting.rows == 120 and np.array_equal(second, first)  # a cache hit: no forward pass
    assert len(store.entries()) == 1
    # other inputs (one image changed, or the same bytes read as another modality) give other keys
    changed = data.inputs.copy()
    changed[0, 0, 0] ^= 1
    other = TaskData("changed", "image", changed, "classification", data.labels)
    assert features_key(onet, other) != features_key(onet, data)
    assert inputs_fingerprint("text", ["a b"]) != inputs_fingerprint("text", ["ab"])
    assert inputs_fingerprint("image", data.inputs) == data.inputs_fingerprint
    subset = data.take(np.arange(10))
    assert subset.inputs_fingerprint == inputs_fingerprint("image", data.inputs[:10]) != data.inputs_fingerprint


def test_progress_sums_to_n_for_computed_and_cached_rows(tmp_path, tiny, data):
    store = Store(tmp_path)
    for _ in range(2):
        seen = []
        extract_features(tiny.TinyConvExtractor(), data, store=store, batch_size=7, chunk_rows=28, progress=seen.append)
        assert sum(seen) == 120
    seen = []
    extract_features(tiny.TinyConvExtractor(), data, batch_size=50, progress=seen.append)
    assert seen == [50, 50, 20]


def test_bad_extractors_and_arguments(tiny, data):
    text = load_dataset("builtin:text-topics", max_samples=12)
    with pytest.raises(InputError, match="takes image inputs.*holds text"):
        extract_features(tiny.TinyConvExtractor(), text)
    with pytest.raises(InputError, match="FeatureExtractor"):
        extract_features(object(), data)
    with pytest.raises(InputError, match="batch_size"):
        extract_features(tiny.TinyConvExtractor(), data, batch_size=0)

    class WrongRows(tiny.TinyConvExtractor):
        def extract(self, inputs, batch_size=64, progress=None):
            return super().extract(inputs[:-1], batch_size)

    with pytest.raises(InputError, match="expected float features of shape"):
        extract_features(WrongRows(), data)


def test_corrupt_cached_features_are_recomputed(tmp_path, tiny, data):
    store = Store(tmp_path)
    first = extract_features(tiny.TinyConvExtractor(), data, store=store)
    path = store.root / "emms-store-v1" / "objects" / features_key(tiny.TinyConvExtractor(), data) / "data.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x55
    path.write_bytes(bytes(raw))
    extractor = tiny.TinyConvExtractor()
    with pytest.warns(EmmsWarning, match="corrupt"):
        again = extract_features(extractor, data, store=store)
    assert extractor.calls == [120] and np.array_equal(again, first)


def test_sigkill_midway_then_resume_without_recomputing_finished_chunks(tmp_path, tiny):
    n_rows, chunk_rows = 200, 20  # 10 chunks of 2 batches; the child sleeps 0.15 s per batch
    cache = tmp_path / "cache"
    rows_done = sigkill_after_chunks([str(tiny.script), str(cache), str(n_rows), "0.15"], cache, min_chunks=3)
    assert 3 * chunk_rows <= rows_done < n_rows
    store = Store(cache)

    data = load_dataset("builtin:fashion-mnist", max_samples=n_rows, seed=0)
    resumed = tiny.TinyConvExtractor()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmmsWarning)  # no chunk may be reported corrupt
        result = extract_features(resumed, data, store=store, batch_size=10, chunk_rows=chunk_rows)
    # finished chunks were not recomputed (this also shows the data fingerprint and the store key
    # computed in the child process equal the ones computed here)
    assert sum(resumed.calls) == n_rows - rows_done
    assert all(c == chunk_rows for c in resumed.calls)
    uninterrupted = extract_features(tiny.TinyConvExtractor(), data, batch_size=10)
    np.testing.assert_allclose(result, uninterrupted, rtol=1e-5, atol=1e-6)
    [entry] = store.entries()
    assert entry["complete"] and entry["shape"] == [n_rows, 8]
    assert store.get(features_key(resumed, data)) is not None


def test_cli_extract_then_cache_ls_and_clear(tmp_path):
    """`emms extract` with a real packaged backbone (O-Net, small), rerun from the cache, then `emms cache`."""
    import json

    from typer.testing import CliRunner

    from emms.cli import app

    runner = CliRunner()
    cache = tmp_path / "cache"
    args = ["extract", "--data", "builtin:digits", "--models", "builtin:onet_mtcnn", "--max-samples", "20",
            "--batch-size", "8", "--cache", str(cache), "--json", "--layers", "last"]  # one entry: the model's own
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    [row] = report["features"]
    assert report["n_samples"] == 20 and row["shape"] == [20, 256]
    cached = np.load(row["path"])  # O-Net has a source head: its probabilities are cached beside the features
    assert cached.shape == (20, 256 + row["source_classes"]) and np.isfinite(cached).all() and cached.std() > 0
    mtime = os.stat(row["path"]).st_mtime_ns
    second = runner.invoke(app, args)
    assert second.exit_code == 0 and json.loads(second.stdout)["features"] == report["features"]
    assert os.stat(row["path"]).st_mtime_ns == mtime  # served from the cache, not rewritten

    listing = runner.invoke(app, ["cache", "ls", "--cache", str(cache), "--json"])
    [entry] = json.loads(listing.stdout)["entries"]
    assert entry["key"] == row["key"] and entry["kind"] == "features" and entry["meta"]["model"] == row["identity"]
    table = runner.invoke(app, ["cache", "ls", "--cache", str(cache)])
    cells = "".join(ch for ch in table.stdout if ch.isalnum() or ch in ":_")  # the table wraps in narrow terminals
    assert table.exit_code == 0 and row["key"][:12] in cells and "builtin:onet_" in cells
    cleared = runner.invoke(app, ["cache", "clear", "--cache", str(cache)])
    assert cleared.exit_code == 0 and "removed 1 entries" in cleared.stdout
    assert json.loads(runner.invoke(app, ["cache", "ls", "--cache", str(cache), "--json"]).stdout)["entries"] == []


def test_cli_extract_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from emms.cli import app

    runner = CliRunner()
    for args, words in ((["--data", str(tmp_path / "absent"), "--models", "builtin:onet_mtcnn"], "does not exist"),
                        (["--data", "builtin:digits", "--models", ","], "--models"),
                        (["--data", "builtin:text-topics", "--models", "builtin:onet_mtcnn", "--max-samples", "12"],
                         "takes image inputs")):
        result = runner.invoke(app, ["extract", *args, "--cache", str(tmp_path / "c")])
        assert result.exit_code == 2 and words in result.stderr and "Traceback" not in result.output
