"""Dask execution: a 2-worker LocalCluster gives exactly the single-process scores."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import emms
from emms.cli import app
from emms.errors import InputError
from emms.metrics import score
from emms.compute.parallel import dask_client, score_models
from emms.compute.streaming import stream_fit, stream_score, stream_score_pool

N, D, C = 300, 8, 3
SIZES = [40, 1, 120, 139]


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    y = rng.integers(0, C, N)
    pool = {f"m{i}": (rng.normal(size=(N, D)) + (0.2 + i) * y[:, None]).astype(np.float32) for i in range(3)}
    z = [rng.normal(size=(N, 5)) + y[:, None], rng.normal(size=(N, 7))]
    return {"pool": pool, "y": y, "z": z, "probs": rng.dirichlet(np.ones(4), size=N)}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # processes=False: two in-process workers (threads) start in about a second; the graph, the
    # tree reduction and the (de)serialisation of results are the same as with worker processes.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as local:
        yield local


def test_local_cluster_gives_exactly_the_single_process_scores(data, cluster):
    pool, y = data["pool"], data["y"]
    for metric, target, extra in [("emms", data["z"], {}), ("hscore_reg", y, {}), ("transrate", y, {"variant": "official"})]:
        single = stream_score_pool(pool, target, metric, chunk_rows=SIZES, **extra)
        on_dask = stream_score_pool(pool, target, metric, chunk_rows=SIZES, scheduler=cluster.scheduler_address, **extra)
        assert on_dask == single  # bit-identical: same chunks, same reduction tree
        for m in pool:
            assert single[m] == pytest.approx(score(pool[m], target, metric, **extra), rel=1e-9)
    two_pass = stream_fit(pool["m0"], y, "leep", source_probs=data["probs"], chunk_rows=SIZES,
                          scheduler=cluster.scheduler_address)
    assert two_pass.score == stream_score(pool["m0"], y, "leep", source_probs=data["probs"], chunk_rows=SIZES)


def test_synchronous_scheduler_and_non_streamable_metric(data):
    pool, y = data["pool"], data["y"]
    results = score_models(pool, data["z"], "emms", scheduler="synchronous", chunk_rows=64)
    for m, r in results.items():
        expected = emms.EMMS().fit(pool[m], data["z"])
        assert r.score == pytest.approx(expected.score_, rel=1e-9)
        np.testing.assert_allclose(r.weights, expected.weights_, atol=1e-8)
    knn = score_models(pool, y, "knn", scheduler="threads")  # one in-memory task per model
    assert {m: r.score for m, r in knn.items()} == {m: score(f, y, "knn") for m, f in pool.items()}


def test_bad_scheduler_is_an_input_error(data):
    with pytest.raises(InputError, match="scheduler: expected 'local'"):
        with dask_client(42):
            pass
    with pytest.raises(InputError, match="pool-relative"):
        score_models(data["pool"], data["y"], "etran", scheduler="synchronous")


MODELS = ["builtin:onet_mtcnn", "builtin:ocrvgg_easyocr?image_size=32"]


def test_rank_and_cli_on_a_cluster_match_the_default(tmp_path, cluster):
    kwargs = dict(task="classification", metrics=["emms", "logme", "hscore_reg", "knn"],
                  encoders=["minilm-l6", "paraphrase-minilm-l3"], max_samples=120, cache=tmp_path)
    default = emms.rank("builtin:fashion-mnist", MODELS, layers="last", **kwargs)  # with a scheduler the default is last
    on_dask = emms.rank("builtin:fashion-mnist", MODELS, scheduler=cluster.scheduler_address, **kwargs)
    a, b = default.table.set_index(["metric", "model"]), on_dask.table.set_index(["metric", "model"])
    assert list(a.index) == list(b.index) and (a["rank"] == b["rank"]).all()
    np.testing.assert_allclose(b["score"], a["score"], rtol=1e-9)
    for wa, wb in zip(a["weights"], b["weights"]):
        if isinstance(wa, dict):
            assert wa.keys() == wb.keys() and np.allclose(list(wa.values()), list(wb.values()), atol=1e-8)
    result = CliRunner().invoke(app, ["rank", "--data", "builtin:fashion-mnist", "--task", "classification",
                                      "--models", ",".join(MODELS), "--encoders", "minilm-l6,paraphrase-minilm-l3",
                                      "--metrics", "emms", "--max-samples", "120", "--cache", str(tmp_path),
                                      "--json", "--scheduler", cluster.scheduler_address])
    assert result.exit_code == 0, result.output
    import json

    records = {r["model"]: r["score"] for r in json.loads(result.stdout)["results"]}
    expected = a.loc["emms", "score"].to_dict()
    assert records.keys() == expected.keys()
    assert all(records[m] == pytest.approx(expected[m], rel=1e-9) for m in records)


def test_warnings_of_worker_processes_reach_the_caller(data):
    # N <= D: EMMS warns about the small-N regime; raised in a worker process, it is re-raised here
    # (in the caller's format) instead of being printed raw on the worker's stderr
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(3)
    narrow = {"m": rng.normal(size=(30, 40))}
    z = [rng.normal(size=(30, 4)), rng.normal(size=(30, 3))]
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with pytest.warns(emms.EmmsWarning, match="small-N"):
            score_models(narrow, z, "emms", scheduler=local.scheduler_address)
        with pytest.warns(emms.EmmsWarning, match="n_samples"):
            score_models(narrow, np.arange(30) % 3, "hscore", scheduler=local.scheduler_address)
