"""emms.select beyond image classification: a real (tiny) race on GENERATED VQA and text-QA tasks and on
text classification (image backbones with the VQA head; text candidates with the text-QA and
classification heads), prepared by the fine-tuning
harness's own split helper, recalled by frozen scores on the kind's F-labels, replayed on a rerun;
bad input per kind. Nothing is downloaded: the data and models are the package's own."""

from __future__ import annotations

import numpy as np
import pytest

from emms.errors import InputError

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

from emms.data import load_dataset  # noqa: E402
from emms.data.multitask import multitask_task  # noqa: E402
from emms.finetune import FinetuneProtocol  # noqa: E402

#: kind -> (generated task, candidates, lr, val_fraction); 40 canvases / 60 texts, 2 epochs
CASES = {
    "vqa": (lambda: multitask_task("vqa", "train", 40), ["onet_mtcnn", "onet_mtcnn_random"], 3e-3, 0.5),
    "captioning": (lambda: multitask_task("captioning", "train", 40), ["onet_mtcnn", "onet_mtcnn_random"], 3e-3, 0.5),
    "text_qa": (lambda: multitask_task("text_qa", "train").take(np.random.default_rng(0).permutation(480)[:60]),
                ["minilm_l6_layer1", "minilm_l6_layer1_random"], 3e-4, 1 / 3),
    "classification": (lambda: load_dataset("builtin:text-topics", max_samples=60, seed=0),  # texts, 6 topics
                       ["minilm_l6_layer1", "minilm_l6_layer1_random"], 3e-4, 1 / 3),
}


BUDGET = 2.0  # at this size the timing probes cost about half of the full grid, and on a shared CPU an
# epoch's wall time can differ from its probe's estimate by a fifth: the whole ladder fits with room
# (the tight budget arithmetic is tested on exact costs in test_select.py)


def _select(kind: str, out_dir, cache, budget: float = BUDGET):  # noqa: ANN001, ANN202
    import emms

    make, models, lr, val_fraction = CASES[kind]
    return emms.select(make(), models, kind, budget=budget, val_fraction=val_fraction, score_samples=None, lr=lr,
                       out_dir=out_dir, cache=cache, protocol=FinetuneProtocol(epochs=2, batch_size=16, image_size=48))


@pytest.fixture(scope="module", params=sorted(CASES))
def raced(request, tmp_path_factory):
    out_dir, cache = tmp_path_factory.mktemp(f"select-{request.param}"), tmp_path_factory.mktemp("cache")
    first = _select(request.param, out_dir, cache)
    again = _select(request.param, out_dir, cache)
    return request.param, first, again


def test_select_ranks_the_kind_with_predictions_within_budget(raced):
    from emms.finetune.heads import head_class

    kind, first, _ = raced
    _, models, _, _ = CASES[kind]
    table = first.table
    assert first.meta["task"] == kind and first.meta["primary"] == head_class(kind).primary
    assert set(table["model"]) == set(models) and list(table["model"])[0] == first.recommended
    raced_rows = table[table["status"] != "not raced"]
    assert len(raced_rows) == 2 and (raced_rows["epochs_done"] >= 1).all()
    assert (raced_rows["low"] <= raced_rows["predicted"]).all() and (raced_rows["predicted"] <= raced_rows["high"]).all()
    assert np.isfinite(table["frozen:emms"]).all() and np.isfinite(table["frozen:params"]).all()
    assert first.frozen.meta["task"] == kind  # the recall scored the kind's own targets (F-labels)
    cost = first.cost
    assert cost["trained_seconds"] > 0 and cost["budget_seconds"] == pytest.approx(BUDGET * cost["full_grid_seconds"])
    assert cost["spent_seconds"] <= cost["budget_seconds"]
    assert first.curves and all(len(c) == r for c, r in ((first.curves[m], int(e)) for m, e in
                                                         zip(raced_rows["model"], raced_rows["epochs_done"])))


def test_a_rerun_resumes_from_the_records_without_training(raced):
    _, first, again = raced
    assert again.cost["trained_seconds"] == 0 and again.cost["replayed_seconds"] > 0
    assert again.cost["spent_seconds"] == pytest.approx(first.cost["spent_seconds"])
    assert again.recommended == first.recommended
    assert list(again.table["predicted"].fillna(-1)) == list(first.table["predicted"].fillna(-1))


def test_the_race_trains_on_the_harness_split(raced):
    from emms.finetune.heads._prepare import finetune_data, split_rows

    kind, first, _ = raced
    make, _, _, val_fraction = CASES[kind]
    data = make()
    split = finetune_data(data, val_fraction=val_fraction, test_fraction=0, seed=0)
    train, val, test = split_rows(data, val_fraction=val_fraction, test_fraction=0, seed=0)
    assert test is None and not set(train) & set(val) and len(train) + len(val) == len(data.labels)
    assert first.meta["n_val"] == len(split.val[1]) and first.meta["n_scored"] == len(train) and split.test is None
    if "image" in data.labels:  # the captions / questions of one image stay in one split
        images = data.labels["image"].astype(str).to_numpy()
        assert not set(images[train]) & set(images[val])
        assert len(split.val[1]) == (len(set(images[val])) if kind == "captioning" else len(val))


@pytest.mark.parametrize(("data", "models", "kwargs", "match"), [
    ("builtin:fashion-detection", ["onet_mtcnn", "onet_mtcnn_random"], {}, "task: fine-tuning has no head for 'detection'"),
    ("builtin:fortunes-qa", ["onet_mtcnn", "minilm_l6_layer1"], {}, "models: 'onet_mtcnn' is an image model; the data"),
    ("builtin:fashion-vqa", ["onet_mtcnn", "minilm_l6"], {}, "models: 'minilm_l6' is a text model; the data holds image"),
    ("builtin:fortunes-qa", ["minilm_l6_layer1"], {}, "models: select needs at least 2"),
    ("builtin:fortunes-qa", ["minilm_l6_layer1", "file:feats.npy"], {}, "cannot be fine-tuned"),
    ("builtin:fashion-vqa", ["onet_mtcnn", "onet_mtcnn_random"], {"max_samples": 40, "val_fraction": 0.2},
     "val_fraction: the validation split has"),
])
def test_bad_input_per_kind_is_one_input_error(data, models, kwargs, match, tmp_path):
    import emms

    with pytest.raises(InputError, match=match):
        emms.select(data, models, out_dir=tmp_path / "o", cache=tmp_path / "c", **kwargs)
    assert not (tmp_path / "o" / "runs").exists()


def test_cli_select_checks_the_task_kind(tmp_path):
    from typer.testing import CliRunner

    from emms.cli import app

    args = ["select", "--data", "builtin:fashion-vqa", "--models", "onet_mtcnn,onet_mtcnn_random", "--out-dir",
            str(tmp_path / "o"), "--cache", str(tmp_path / "c")]
    wrong = CliRunner().invoke(app, [*args, "--task", "captioning"])
    assert wrong.exit_code == 2 and "task:" in wrong.output
    no_head = CliRunner().invoke(app, [*args[:2], "builtin:fashion-detection", *args[3:]])
    assert no_head.exit_code == 2 and "no head for 'detection'" in no_head.output


@pytest.mark.parametrize("kind", sorted(CASES))
def test_the_screen_runs_for_every_kind_with_its_own_records(kind, tmp_path):
    # no fraction limit, so the screen is not skipped: every candidate is screened, then raced
    import json

    import emms

    make, models, lr, val_fraction = CASES[kind]
    out_dir = tmp_path / "o"
    sel = emms.select(make(), models, kind, budget=None, max_seconds=600, screen=0.5, val_fraction=val_fraction,
                      score_samples=None, lr=lr, out_dir=out_dir, cache=tmp_path / "c",
                      protocol=FinetuneProtocol(epochs=1, batch_size=16, image_size=48))
    records = [json.loads(p.read_text()) for p in (out_dir / "screen" / "runs").rglob("*.json")]
    assert len(records) == 2 and all(r["task"] == kind and r["complete"] and r["target"].endswith("@screen0.5")
                                     for r in records)
    assert sel.table["screen"].notna().all() and sel.cost["screen_seconds"] > 0
    assert sel.meta["screen"]["fractions"] == [0.5] and sel.meta["screen"]["n_train"][0] < sel.meta["n_train"]
