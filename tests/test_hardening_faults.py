"""Faults: SIGKILL while embedding labels, a corrupt cache entry met by the CLI, output that cannot be written.

Covered elsewhere (not repeated here):
* SIGKILL during feature extraction, then resume: ``tests/test_extract.py::
  test_sigkill_midway_then_resume_without_recomputing_finished_chunks``.
* SIGKILL during a fine-tuning grid, then resume: ``tests/test_finetune.py::
  test_sigkill_loses_only_the_run_in_progress``.
* read-only / full cache through the API: ``tests/test_store.py::test_unwritable_or_full_cache_gives_resource_error``;
  through the CLI: ``tests/test_hardening_bad_inputs.py::test_cache_location_that_cannot_be_written``.
"""

from __future__ import annotations

import errno
import json
import os
import warnings

import numpy as np
import pytest
from typer.testing import CliRunner

from _sigkill import sigkill_after_chunks
from emms.cli import app
from emms.errors import EmmsWarning

RUNNER = CliRunner()

# A child process embedding texts with the packaged ONNX paraphrase encoder (a real forward pass),
# through the store in chunks of 4 texts, sleeping after each chunk so the parent can kill it midway.
SLOW_EMBEDDING = '''
import sys, time
from emms.flabels import embed_texts, load_encoder
from emms.compute.store import Store

class SlowEncoder:
    def __init__(self, inner, delay):
        self.inner, self.delay, self.identity = inner, delay, inner.identity

    @property
    def dim(self):
        return self.inner.dim

    def encode(self, texts, batch_size=64, progress=None):
        out = self.inner.encode(texts, batch_size=batch_size, progress=progress)
        time.sleep(self.delay)
        return out

texts = [f"label text number {i}" for i in range(int(sys.argv[2]))]
embed_texts(SlowEncoder(load_encoder("paraphrase-minilm-l3"), float(sys.argv[3])), texts, store=Store(sys.argv[1]),
            chunk_rows=4)
print("finished", flush=True)
'''


class CountingEncoder:
    """Wraps an encoder and records how many texts it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.identity, self.texts = inner, inner.identity, 0

    @property
    def dim(self):
        return self.inner.dim

    def encode(self, texts, batch_size=64, progress=None):
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


def test_sigkill_while_embedding_then_resume(tmp_path):
    from emms.flabels import embed_texts, load_encoder
    from emms.compute.store import Store

    n_texts, chunk_rows = 40, 4
    script = tmp_path / "slow_embedding.py"
    script.write_text(SLOW_EMBEDDING)
    cache = tmp_path / "cache"
    rows_done = sigkill_after_chunks([str(script), str(cache), str(n_texts), "0.2"], cache, min_chunks=3)
    assert 3 * chunk_rows <= rows_done < n_texts
    store = Store(cache)

    encoder = load_encoder("paraphrase-minilm-l3")
    counting = CountingEncoder(encoder)
    texts = [f"label text number {i}" for i in range(n_texts)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmmsWarning)  # no finished chunk may be reported corrupt
        resumed = embed_texts(counting, texts, store=store, chunk_rows=chunk_rows)
    assert counting.texts == n_texts - rows_done  # finished chunks were not embedded again
    np.testing.assert_allclose(resumed, encoder.encode(texts), atol=1e-5)
    [entry] = store.entries()
    assert entry["complete"] and entry["shape"] == [n_texts, encoder.dim]
    again = CountingEncoder(encoder)
    np.testing.assert_array_equal(embed_texts(again, texts, store=store, chunk_rows=chunk_rows), resumed)
    assert again.texts == 0


def test_torn_chunk_without_sidecar_is_recomputed_silently(tmp_path):
    """A kill between writing a chunk's .npy and its .json sidecar leaves a chunk that must not count."""
    from emms.compute.store import Store

    store = Store(tmp_path)
    calls = []

    def rows(start, stop):
        calls.append((start, stop))
        return np.arange(start * 3, stop * 3, dtype=np.float32).reshape(-1, 3)

    key = Store.key(kind="test", name="torn")
    partial = tmp_path / "emms-store-v1" / "partial" / key
    partial.mkdir(parents=True)
    np.save(partial / f"{0:012d}-{4:012d}.npy", np.full((4, 3), 99.0, dtype=np.float32))  # no sidecar: unfinished
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmmsWarning)
        result = store.get_or_compute(key, 8, rows, chunk_rows=4)
    assert calls == [(0, 4), (4, 8)]
    np.testing.assert_array_equal(result, np.arange(24, dtype=np.float32).reshape(8, 3))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_cli_meets_a_corrupt_cache_entry_warns_and_recomputes(tmp_path, damage):
    cache = tmp_path / "cache"
    args = ["extract", "--data", "builtin:digits", "--models", "builtin:onet_mtcnn", "--max-samples", "16",
            "--batch-size", "8", "--cache", str(cache), "--json", "--layers", "last"]  # one entry (per-layer: test_layers)
    first = RUNNER.invoke(app, args)
    assert first.exit_code == 0, first.output
    [row] = json.loads(first.stdout)["features"]
    original = np.load(row["path"])
    raw = bytearray(open(row["path"], "rb").read())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[-5] ^= 0xFF  # one flipped byte inside the array: the sha256 check must catch it
    with open(row["path"], "wb") as handle:
        handle.write(bytes(raw))

    second = RUNNER.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert "warning:" in second.stderr and "corrupt" in second.stderr and "Traceback" not in second.output
    np.testing.assert_array_equal(np.load(row["path"]), original)  # healed with a recomputed, equal entry
    third = RUNNER.invoke(app, args)
    assert third.exit_code == 0 and "corrupt" not in third.stderr


def test_rank_output_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    """--out under a file, or a full disk while writing --out: one error line, exit 2, no file left."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(20, 6)).astype(np.float32))
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    base = ["rank", "--data", "builtin:digits", "--max-samples", "20", "--metrics", "logme", "--cache",
            str(tmp_path / "c"), "--models", f"file:{tmp_path / 'a.npy'},file:{tmp_path / 'b.npy'}"]
    result = RUNNER.invoke(app, [*base, "--out", str(blocker / "result.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: --out: cannot write {blocker / 'result.json'} (File exists)"]

    import emms._io

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(emms._io.os, "fsync", full_disk)
    out = tmp_path / "result.json"
    result = RUNNER.invoke(app, [*base, "--out", str(out)])
    assert result.exit_code == 2 and "No space left on device" in result.stderr and "Traceback" not in result.output
    assert not out.exists() and not list(tmp_path.glob(".result.json.*"))  # no partial file
