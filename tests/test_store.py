"""emms.compute.store.Store: keys, verified reads, atomic writes, resumable chunked computation."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest

from emms.errors import EmmsWarning, InputError, ResourceError
from emms.compute.store import Store


def _entry_dir(store: Store, key: str):
    return store.root / "emms-store-v1" / "objects" / key


def test_key_is_canonical_and_sensitive_to_every_part():
    base = Store.key(model="m", data="d", preprocessing={"size": 64, "norm": "imagenet"}, layer=None)
    assert len(base) == 32 and all(c in "0123456789abcdef" for c in base)
    # same parts in another order (also inside nested dicts) -> same key
    assert Store.key(layer=None, preprocessing={"norm": "imagenet", "size": 64}, data="d", model="m") == base
    # any changed part -> another key
    assert Store.key(model="m", data="d", preprocessing={"size": 96, "norm": "imagenet"}, layer=None) != base
    assert Store.key(model="m", data="d2", preprocessing={"size": 64, "norm": "imagenet"}, layer=None) != base
    assert Store.key(model="m", data="d", preprocessing={"size": 64, "norm": "imagenet"}, layer=3) != base
    assert Store.key(model="m", data="d", size=np.int64(3)) == Store.key(model="m", data="d", size=3)


def test_key_rejects_unserialisable_parts():
    with pytest.raises(InputError, match="cannot serialise"):
        Store.key(model=object())
    with pytest.raises(InputError, match="at least one"):
        Store.key()


def test_miss_put_hit_roundtrip(tmp_path):
    store = Store(tmp_path)
    key = Store.key(model="a")
    assert store.get(key) is None
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    store.put(key, array, {"kind": "features", "model": "a"})
    got = store.get(key)
    assert got.dtype == np.float32 and np.array_equal(got, array)
    got[0, 0] = 99  # the returned array is the caller's own copy
    assert store.get(key)[0, 0] == 0
    [entry] = store.entries()
    assert entry["key"] == key and entry["kind"] == "features" and entry["shape"] == [3, 4]
    assert entry["complete"] and entry["meta"]["model"] == "a" and entry["bytes"] > array.nbytes


def test_put_replaces_an_existing_entry(tmp_path):
    store = Store(tmp_path)
    key = Store.key(x=1)
    store.put(key, np.zeros((2, 2)), {})
    store.put(key, np.ones((3, 2)), {})
    assert np.array_equal(store.get(key), np.ones((3, 2)))
    assert len(store.entries()) == 1


def test_default_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMMS_CACHE", str(tmp_path / "c"))
    assert Store().root == tmp_path / "c"
    monkeypatch.delenv("EMMS_CACHE")
    assert Store().root == Store(os.path.expanduser("~/.cache/emms")).root


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_manifest", "garble_manifest"])
def test_corrupt_entry_is_deleted_with_a_warning(tmp_path, damage):
    store = Store(tmp_path)
    key = Store.key(model="b")
    store.put(key, np.random.default_rng(0).normal(size=(50, 8)), {})
    data, manifest = _entry_dir(store, key) / "data.npy", _entry_dir(store, key) / "manifest.json"
    raw = data.read_bytes()
    if damage == "flip_byte":
        data.write_bytes(raw[:-5] + bytes([raw[-5] ^ 0xFF]) + raw[-4:])
    elif damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "delete_manifest":
        manifest.unlink()
    else:
        manifest.write_text("{not json")
    with pytest.warns(EmmsWarning, match="corrupt"):
        assert store.get(key) is None
    assert not _entry_dir(store, key).exists()


def test_manifest_shape_mismatch_is_detected(tmp_path):
    store = Store(tmp_path)
    key = Store.key(model="c")
    store.put(key, np.zeros((4, 3)), {})
    manifest_path = _entry_dir(store, key) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["shape"] = [3, 4]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.warns(EmmsWarning, match="shape"):
        assert store.get(key) is None


def test_bad_keys_and_arrays_are_rejected(tmp_path):
    store = Store(tmp_path)
    for bad in ["../escape", "a/b", "", 5]:
        with pytest.raises(InputError, match="key"):
            store.get(bad)
    with pytest.raises(InputError, match="numpy array"):
        store.put("k", [1, 2, 3], {})
    with pytest.raises(InputError, match="dtype"):
        store.put("k", np.array(["a", "b"]), {})
    with pytest.raises(InputError, match="meta"):
        store.put("k", np.zeros(2), {"x": object()})


def _counting(fn):
    calls = []

    def compute(start, stop):
        calls.append((start, stop))
        return fn(start, stop)

    return compute, calls


def _rows(start, stop):
    return np.arange(start, stop, dtype=np.float64)[:, None] * np.array([1.0, -2.0])


def test_get_or_compute_chunks_then_hits(tmp_path):
    store = Store(tmp_path)
    compute, calls = _counting(_rows)
    done = []
    out = store.get_or_compute("k1", 10, compute, chunk_rows=4, meta={"kind": "features"}, progress=done.append)
    assert calls == [(0, 4), (4, 8), (8, 10)] and done == [4, 4, 2]
    assert np.array_equal(out, _rows(0, 10))
    assert not (store.root / "emms-store-v1" / "partial" / "k1").exists()
    out2 = store.get_or_compute("k1", 10, compute, chunk_rows=4)
    assert len(calls) == 3 and np.array_equal(out2, out)


class _Crash(Exception):
    pass


def _interrupt(store, key, n_rows, chunk_rows, crash_at):
    """Run get_or_compute until the chunk starting at ``crash_at`` raises, like a crash midway."""
    def crashing(start, stop):
        if start >= crash_at:
            raise _Crash
        return _rows(start, stop)

    with pytest.raises(_Crash):
        store.get_or_compute(key, n_rows, crashing, chunk_rows=chunk_rows)


def test_get_or_compute_resumes_from_finished_chunks(tmp_path):
    store = Store(tmp_path)
    _interrupt(store, "k2", 12, 4, crash_at=8)
    [partial] = store.entries()
    assert partial["kind"] == "partial" and partial["meta"]["rows_done"] == 8
    compute, calls = _counting(_rows)
    out = store.get_or_compute("k2", 12, compute, chunk_rows=4)
    assert calls == [(8, 12)]
    assert np.array_equal(out, _rows(0, 12))


def test_corrupt_chunk_is_recomputed(tmp_path):
    store = Store(tmp_path)
    _interrupt(store, "k3", 8, 2, crash_at=4)
    chunk = store.root / "emms-store-v1" / "partial" / "k3" / f"{2:012d}-{4:012d}.npy"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    compute, calls = _counting(_rows)
    with pytest.warns(EmmsWarning, match="rows 2:4 is corrupt"):
        out = store.get_or_compute("k3", 8, compute, chunk_rows=2)
    assert calls == [(2, 4), (4, 6), (6, 8)]
    assert np.array_equal(out, _rows(0, 8))


def test_get_or_compute_checks_chunk_results(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(InputError, match="expected an array with 4 rows"):
        store.get_or_compute("k4", 8, lambda a, b: np.zeros((3, 2)), chunk_rows=4)
    with pytest.raises(InputError, match="trailing shape"):
        store.get_or_compute("k5", 8, lambda a, b: np.zeros((b - a, 2 if a == 0 else 3)), chunk_rows=4)
    with pytest.raises(InputError, match="n_rows"):
        store.get_or_compute("k6", 0, _rows)


_CHUNK_WRITER = """
import sys, time
import numpy as np
from emms.compute.store import Store
root, first, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
time.sleep(max(go - time.time(), 0))  # both writers start together
store = Store(root)
for start in range(first * 4, 40, 8):  # every other chunk of 4 rows
    store.chunk("shared", start, start + 4, lambda a, b: np.arange(a, b, dtype=np.float64)[:, None] * np.array([1.0, -2.0]))
"""


def test_two_processes_write_different_chunks_of_one_entry_then_join(tmp_path):
    import subprocess
    import sys
    import time

    go = str(time.time() + 2.0)
    writers = [subprocess.Popen([sys.executable, "-c", _CHUNK_WRITER, str(tmp_path), str(i), go]) for i in (0, 1)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    store = Store(tmp_path)
    [partial] = store.entries()
    assert partial["kind"] == "partial" and partial["meta"]["rows_done"] == 40
    compute, calls = _counting(_rows)
    assert np.array_equal(store.chunk("shared", 8, 12, compute), _rows(8, 12)) and calls == []  # read, not computed
    out = store.join_chunks("shared", 40, 4, {"kind": "features"})  # chunks read (verified) from disk
    assert np.array_equal(out, _rows(0, 40)) and np.array_equal(store.get("shared"), out)
    [entry] = store.entries()
    assert entry["complete"] and entry["meta"] == {"kind": "features"}


def test_join_chunks_reports_missing_and_inconsistent_chunks(tmp_path):
    store = Store(tmp_path)
    for start in (0, 8):
        store.chunk("k8", start, min(start + 4, 10), _rows)
    with pytest.raises(ResourceError, match="chunk rows 4:8 missing in .*share the cache directory"):
        store.join_chunks("k8", 10, 4)
    assert store.get("k8") is None
    store.chunk("k8", 4, 8, lambda a, b: np.zeros((b - a, 3)))  # another width
    with pytest.raises(InputError, match="trailing shape"):
        store.join_chunks("k8", 10, 4)
    assert store.entries() == []  # the unusable chunks are gone, so a rerun starts afresh
    with pytest.raises(InputError, match="chunks: expected 3 arrays"):
        store.join_chunks("k8", 10, 4, chunks=[_rows(0, 4)])


def test_entry_with_wrong_row_count_is_recomputed(tmp_path):
    store = Store(tmp_path)
    store.put("k7", np.zeros((5, 2)), {})
    with pytest.warns(EmmsWarning, match="expected 6"):
        out = store.get_or_compute("k7", 6, _rows)
    assert np.array_equal(out, _rows(0, 6))


def test_clear_removes_everything(tmp_path):
    store = Store(tmp_path)
    store.put("a1", np.zeros(3), {})
    store.put("a2", np.zeros(3), {})
    _interrupt(store, "a3", 4, 2, crash_at=2)
    (tmp_path / "unrelated.txt").write_text("keep me")
    assert store.clear() == 3
    assert store.entries() == [] and store.get("a1") is None
    assert (tmp_path / "unrelated.txt").read_text() == "keep me"


def test_listing_an_absent_cache_creates_nothing(tmp_path):
    store = Store(tmp_path / "nowhere")
    assert store.entries() == [] and store.get("abc") is None and store.clear() == 0
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("code, words", [(errno.EROFS, "not writable"), (errno.EACCES, "not writable"),
                                         (errno.ENOSPC, "is full")])
def test_unwritable_or_full_cache_gives_resource_error(tmp_path, monkeypatch, code, words):
    store = Store(tmp_path)

    def failing_save(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(ResourceError, match=words) as info:
        store.put("k", np.zeros(3), {})
    assert str(tmp_path) in str(info.value) and "--cache" in str(info.value)
    with pytest.raises(ResourceError, match=words):
        store.get_or_compute("k", 4, _rows, chunk_rows=2)
    assert not list((tmp_path / "emms-store-v1" / "tmp").iterdir())  # no half-written entry left behind


def test_cache_root_that_is_a_file_gives_resource_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResourceError, match="cache directory"):
        Store(blocker).put("k", np.zeros(2), {})
