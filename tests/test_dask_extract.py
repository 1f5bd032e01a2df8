"""Extraction on Dask (issue 8): one task per (model, chunk) writes the store's chunks; the features,
the store entries and the scores equal in-process extraction's.

The models are real packaged backbones at 32 px on 80 images of the bundled Fashion-MNIST sample,
in chunks of 32 rows (batch size 4 x ``CHUNK_BATCHES``), so each model has three chunks, the last
one short.
"""

from __future__ import annotations

import numpy as np
import pytest

import emms
from _counting import CountingExtractor
from emms.data import load_dataset
from emms.errors import ResourceError
from emms.compute.extract import extract_features, features_key, with_source_probs
from emms.models import load_extractor
from emms.compute.parallel import ExtractionJob, ExtractorSpec, extract_on_dask
from emms.compute.store import Store

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module", autouse=True)
def one_blas_thread():
    """Exact equality across schedulers needs the same BLAS summation order in every thread: a
    multi-threaded BLAS may split a product differently when a worker thread calls it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield

MODELS = ["builtin:mnv2_imagenet", "builtin:ocrvgg_easyocr"]  # with and without a source head
KWARGS = dict(task="classification", metrics=["emms", "logme", "leep", "knn"], max_samples=80, image_size=32,
              batch_size=4, encoders=["minilm-l6", "paraphrase-minilm-l3"])


@pytest.fixture(scope="module")
def cluster():
    # processes=False: two in-process workers (threads) start in about a second and share this
    # process's torch threads, so their float32 features are bit-identical to in-process ones.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as local:
        yield local


@pytest.fixture(scope="module")
def data():
    return load_dataset("builtin:fashion-mnist", task="classification", max_samples=80, seed=0)


def _features_entries(store: Store) -> dict[str, np.ndarray]:
    entries = store.entries()
    assert all(e["complete"] for e in entries)  # no partial chunks left behind
    return {e["key"]: store.get(e["key"]) for e in entries if e["kind"] == "features"}


def test_rank_extracts_on_a_local_cluster_and_matches_in_process(tmp_path, cluster, data):
    # with a scheduler the default layer choice is "last" (layer-wise extraction runs in the caller)
    in_process = emms.rank("builtin:fashion-mnist", MODELS, cache=tmp_path / "a", layers="last", **KWARGS)
    seen = []
    with distributed.Client(cluster) as client, distributed.get_task_stream(client) as stream:
        on_dask = emms.rank("builtin:fashion-mnist", MODELS, cache=tmp_path / "b", scheduler=client,
                            progress=lambda *args: seen.append(args), **KWARGS)
    chunk_tasks = [t for t in stream.data if t["key"].startswith("_extract_chunk")]
    assert len(chunk_tasks) == 2 * 3 and {t["worker"] for t in stream.data} <= set(cluster.scheduler_info["workers"])
    for model in MODELS:  # one report per finished chunk, in the order they finish
        done = [d for stage, item, d, total in seen if stage == "extract features" and item == model]
        assert done[-1] == 80 and sorted(np.diff([0, *done])) == [16, 32, 32]

    # the store holds the same entries (same keys) with bit-identical float32 features
    a, b = _features_entries(Store(tmp_path / "a")), _features_entries(Store(tmp_path / "b"))
    assert len(a) == 2 and a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == np.float32 and np.array_equal(a[key], b[key])
    mnv2 = load_extractor(MODELS[0], image_size=32)
    assert features_key(with_source_probs(mnv2), data) in b  # features and LEEP's source probabilities, one entry

    # scores: the streamed Dask plans equal the in-memory metrics to rounding, and equal a
    # single-process run of the very same plans exactly
    x, y = in_process.table.set_index(["metric", "model"]), on_dask.table.set_index(["metric", "model"])
    assert list(x.index) == list(y.index) and (x["rank"] == y["rank"]).all()
    np.testing.assert_allclose(y["score"], x["score"], rtol=1e-9)
    synchronous = emms.rank("builtin:fashion-mnist", MODELS, cache=tmp_path / "b", scheduler="synchronous", **KWARGS)
    assert synchronous.table["score"].tolist() == on_dask.table["score"].tolist()

    # what the workers wrote is an ordinary cache entry: an in-process call reads it, no forward pass
    counting = CountingExtractor(load_extractor(MODELS[1], image_size=32))
    again = extract_features(counting, data, store=Store(tmp_path / "b"), batch_size=4)
    assert counting.rows == 0 and np.array_equal(again, b[features_key(counting, data)])


def test_worker_processes_load_specs_and_unpickle_extractor_objects(tmp_path, data):
    """Separate worker processes: a spec is loaded on the worker, an object is pickled to it."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (one thread each), for bit-identical features
    try:
        onet = load_extractor("builtin:onet_mtcnn")
        easyocr = ExtractorSpec("builtin:ocrvgg_easyocr", options=(("image_size", 32),))
        jobs = {"easyocr": ExtractionJob(easyocr.load(), easyocr), "onet": ExtractionJob(onet)}
        store = Store(tmp_path)
        done: dict[str, int] = {}
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as local:
            with distributed.Client(local) as client:
                extracted = extract_on_dask(jobs, data, store, scheduler=client, batch_size=4,
                                            progress=lambda m, n: done.__setitem__(m, done.get(m, 0) + n))
                assert extract_on_dask(jobs, data, store, scheduler=client, batch_size=4) == []  # complete already
        assert extracted == ["easyocr", "onet"] and done == {"easyocr": 80, "onet": 80}
        for job in jobs.values():
            counting = CountingExtractor(job.extractor)
            cached = extract_features(counting, data, store=store, batch_size=4)
            assert counting.rows == 0  # the entry the workers wrote
            assert np.array_equal(cached, extract_features(job.extractor, data, batch_size=4))
    finally:
        torch.set_num_threads(threads)


def test_a_worker_loading_other_weights_fails_loudly(tmp_path, data):
    onet = load_extractor("builtin:onet_mtcnn")
    wrong = ExtractionJob(onet, ExtractorSpec("builtin:ocrvgg_easyocr", options=(("image_size", 32),)))
    with pytest.raises(ResourceError, match="loads as builtin:ocrvgg_easyocr.*on a Dask worker"):
        extract_on_dask({"onet": wrong}, data, Store(tmp_path), scheduler="synchronous", batch_size=32)
    assert not any(e["complete"] for e in Store(tmp_path).entries())
