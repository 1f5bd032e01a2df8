"""Multi-task fine-tuning (issue 18): every non-classification head trains on tiny GENERATED data and
beats its own untrained start; a multi-task grid resumes after SIGKILL; the benchmark tasks'
fingerprints are pinned, so committed truth stays tied to the code that built the data.

Everything is built from the package's shipped samples; nothing outside the repository is read."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emms.cli import app
from emms.data.multitask import KINDS, multitask_task, multitask_tasks
from _sigkill import sigkill_when
from emms.errors import InputError

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

from emms.finetune import FinetuneProtocol, finetune_run, run_grid  # noqa: E402
from emms.finetune.backbones import load_backbone  # noqa: E402
from emms.finetune.heads import head_class  # noqa: E402
from emms.finetune.heads._prepare import finetune_data, from_splits, prepare  # noqa: E402
from emms.finetune.heads.captioning import references  # noqa: E402
from emms.finetune.heads.referring import cell_centres, iou, target_cells  # noqa: E402
from emms.finetune.run import RunKey, load_record, write_record  # noqa: E402
from emms.finetune.heads.vqa import text_and_values  # noqa: E402

#: sha256[:16] of every split of the benchmark tasks (defaults of multitask_tasks: 300 / 100 / 200
#: canvases, seed 0). A change here invalidates benchmarks/data/multitask_runs and multitask_truth.csv.
FINGERPRINTS = {
    "captioning": {"train": "48fd3dd10cd2a817", "val": "0d9bcacb8efd34ad", "test": "775cf1f2b116b4e2"},
    "vqa": {"train": "342515d35c054af6", "val": "5b545bf3e068718a", "test": "8a1604a03a565177"},
    "referring": {"train": "d1e495116667e84d", "val": "c51611bfa097679d", "test": "c418901b2535d0e9"},
    "text_qa": {"train": "199ed783ab60ea22", "val": "86d62d39fe4f415b", "test": "44e11b45195888cf"},
}
IMAGE_MODEL = "onet_mtcnn"         # 0.39M parameters, 48x48: the cheapest packaged backbone
TEXT_MODEL = "minilm_l6_layer1"    # one transformer layer of the packaged all-MiniLM-L6-v2
# kind -> (model, lr, epochs, metric compared with the untrained head)
CASES = {"captioning": (IMAGE_MODEL, 3e-3, 6, "bleu4"), "vqa": (IMAGE_MODEL, 3e-3, 4, "accuracy"),
         "referring": (IMAGE_MODEL, 3e-3, 4, "mean_iou"), "text_qa": (TEXT_MODEL, 3e-4, 3, "accuracy")}


def tiny(kind: str, n_train: int = 128, n_val: int = 64):
    """A small FinetuneData of ``kind`` from the benchmark's generators (train / val only)."""
    if kind == "text_qa":  # every fortune of the split's pool: take a seeded subset
        train, val = multitask_task(kind, "train"), multitask_task(kind, "val")
        train = train.take(np.random.default_rng(0).permutation(len(train))[:n_train])
        val = val.take(np.random.default_rng(1).permutation(len(val))[:n_val])
    else:
        train, val = multitask_task(kind, "train", n_train), multitask_task(kind, "val", n_val)
    return from_splits(train, val, name=f"tiny-{kind}")


def untrained(data, model: str, seed: int, protocol: FinetuneProtocol) -> dict[str, float]:
    """Validation metrics of the network a run starts from (same seed, same build order)."""
    head = head_class(data.task)(data)
    torch.manual_seed(seed)
    backbone = load_backbone(model, protocol.image_size, protocol.bn_momentum, feature_map=head.needs_feature_map)
    module = head.build(backbone.feature_dim)
    backbone.module.eval()
    module.eval()
    with torch.no_grad():
        return head.evaluate(module, backbone.module(backbone.encode(data.val[0])), head.targets(data.val[1], "cpu"))


def test_benchmark_task_fingerprints_are_pinned():
    tasks = multitask_tasks()
    assert {kind: {split: data.fingerprint[:16] for split, data in splits.items()} for kind, splits in tasks.items()} \
        == FINGERPRINTS
    for kind in KINDS:
        assert all(data.name.endswith("(GENERATED)") and data.task == kind for data in tasks[kind].values())


def test_benchmark_splits_use_disjoint_real_images():
    tasks = multitask_tasks(["referring"], sizes={"train": 200, "val": 50, "test": 100})["referring"]
    crops = {split: {data.inputs[i, y1:y2, x1:x2].tobytes() for i, (x1, y1, x2, y2) in
                     enumerate(data.labels[["x1", "y1", "x2", "y2"]].to_numpy())} for split, data in tasks.items()}
    assert not crops["train"] & crops["test"] and not crops["train"] & crops["val"]
    labels = tasks["train"].labels
    assert ((labels.x2 > labels.x1) & (labels.y2 > labels.y1) & (labels.x2 <= 64) & (labels.y2 <= 64)).all()


@pytest.mark.parametrize("kind", ["captioning", "vqa", "referring", "text_qa"])
def test_head_trains_and_beats_its_untrained_start(kind):
    model, lr, epochs, metric = CASES[kind]
    data = tiny(kind)
    protocol = FinetuneProtocol(epochs=epochs, image_size=48, batch_size=16, hflip=False)
    before = untrained(data, model, 0, protocol)
    record = finetune_run(data, model, lr, 0, protocol)
    after = record["val_metrics"]
    assert record["task"] == kind and record["primary"] == head_class(kind).primary and record["complete"]
    assert len(record["curve"]) == epochs and np.isfinite(record["final_train_loss"])
    assert after[metric] > before[metric] + 0.05, (before, after)


def test_referring_head_trains_on_the_feature_map_and_beats_its_untrained_start():
    data = tiny("referring", n_train=128, n_val=64)
    protocol = FinetuneProtocol(epochs=6, image_size=48, batch_size=16, hflip=False)
    before = untrained(data, IMAGE_MODEL, 0, protocol)
    after = finetune_run(data, IMAGE_MODEL, 3e-3, 0, protocol)["val_metrics"]
    assert set(after) == {"acc_iou50", "mean_iou", "cell_accuracy", "loss"}
    assert after["acc_iou50"] > before["acc_iou50"] + 0.05 and after["mean_iou"] > before["mean_iou"] + 0.05, (before, after)
    assert after["cell_accuracy"] > before["cell_accuracy"], (before, after)


def test_feature_map_backbones_keep_the_map_and_the_candidate_size():
    pooled = load_backbone(IMAGE_MODEL, 48, 0.1)
    spatial = load_backbone(IMAGE_MODEL, 48, 0.1, feature_map=True)
    x = spatial.encode(multitask_task("referring", "val", 2).inputs)
    assert tuple(spatial.module(x).shape) == (2, spatial.feature_dim, 3, 3) == (2, 128, 3, 3)  # O-Net to prelu4
    assert spatial.feature_map and not pooled.feature_map and spatial.n_params == pooled.n_params
    mnv2 = load_backbone("mnv2_imagenet_random", 64, 0.1, feature_map=True)
    assert tuple(mnv2.module(mnv2.encode(multitask_task("referring", "val", 2).inputs)).shape) == (2, 1280, 2, 2)
    with pytest.raises(InputError, match="text model"):
        load_backbone(TEXT_MODEL, 64, 0.1, feature_map=True)


def test_referring_cells_and_centres():
    centres = cell_centres(2, 3)
    assert torch.allclose(centres[[0, 2, 3]], torch.tensor([[1 / 6, 0.25], [5 / 6, 0.25], [1 / 6, 0.75]]))
    boxes = torch.tensor([[0.0, 0.0, 0.2, 0.2], [0.6, 0.6, 1.0, 1.0], [0.4, 0.0, 0.6, 0.4]])
    assert target_cells(boxes, 2, 3).tolist() == [0, 5, 1]
    head = head_class("referring")(tiny("referring", 8, 8))
    module = head.build(16)
    predicted, logits = module(torch.randn(4, 16, 2, 3), torch.randn(4, 384))
    assert predicted.shape == (4, 4) and logits.shape == (4, 6)
    assert torch.all(predicted[:, 2:] >= predicted[:, :2])  # corners are ordered
    with pytest.raises(InputError, match="feature map"):
        module(torch.randn(4, 16), torch.randn(4, 384))


def test_records_of_another_head_revision_are_refused(tmp_path):
    protocol = FinetuneProtocol(epochs=1)
    key = RunKey("mt-referring", "onet_mtcnn", 1e-3, 0)
    old = {"version": 2, "task": "referring", "protocol": asdict(protocol),
           "data_fingerprint": "f"}
    write_record(key, tmp_path, old)  # revision 1: the pooled-feature head's records
    with pytest.raises(InputError, match="revision 1 of the referring head"):
        load_record(key, tmp_path, "f", protocol)
    write_record(key, tmp_path, {**old, "head_revision": head_class("referring").revision})
    assert load_record(key, tmp_path, "f", protocol)["head_revision"] == 2


def test_committed_referring_records_are_of_the_current_head():
    root = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
    for path in [*root.glob("multitask_*/runs/mt-referring/*.json")]:
        assert json.loads(path.read_text()).get("head_revision", 1) == head_class("referring").revision, path


def test_captioning_scores_perfect_and_empty_captions():
    data = tiny("captioning", n_train=8, n_val=8)
    head = head_class("captioning")(data)
    targets = head.targets(data.val[1], "cpu")
    assert targets["tokens"].shape[0] == 8 and int(targets["tokens"][0, 0, 0]) == 1  # <bos>
    assert references(["a bag", ("a coat", "a dark coat")]) == [["a bag"], ["a coat", "a dark coat"]]
    with pytest.raises(InputError, match=r"targets\[1\]"):
        references(["a bag", ""])


def test_iou_and_target_validation():
    a = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]])
    b = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.75, 0.5]])
    assert torch.allclose(iou(a, b), torch.tensor([1.0, 1 / 3]))
    assert float(iou(a, b, generalised=True)[1]) == pytest.approx(1 / 3 - (0.375 - 0.375) / 0.375)
    with pytest.raises(InputError, match="structured array"):
        text_and_values({"question": np.zeros((2, 3)), "answer": np.zeros(2)}, "question", "answer")
    detection = multitask_task("referring", "val", 4)
    detection.task = "detection"
    with pytest.raises(InputError, match="no head for 'detection'"):
        prepare(detection)


def test_val_answers_outside_the_training_vocabulary_count_as_wrong():
    train, val = multitask_task("vqa", "train", 20), multitask_task("vqa", "val", 20)
    no_yes = replace(train.take(np.flatnonzero(train.labels.answer != "yes")), class_names=None, fingerprint="")
    data = from_splits(no_yes, val, name="vqa-unseen")  # vocabulary: the training answers
    assert "yes" not in data.class_names
    answers = text_and_values(data.val[1], "question", "answer")[1]
    assert np.all(answers[val.labels.answer.to_numpy() == "yes"] == -100)


def test_finetune_data_keeps_every_image_in_one_split():
    data = multitask_task("vqa", "train", 50)  # 2 questions per canvas
    split = finetune_data(data, val_fraction=0.2, test_fraction=0.2, seed=0)
    sizes = [len(part[1]) for part in (split.train, split.val, split.test)]
    assert sum(sizes) == 100 and all(size % 2 == 0 for size in sizes)
    with pytest.raises(InputError, match="val_fraction"):
        finetune_data(data, val_fraction=0.0)


GRID_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_finetune_heads import tiny
from emms.finetune import FinetuneProtocol, run_grid
run_grid([tiny("vqa", 64, 32)], ["onet_mtcnn", "onet_mtcnn_random"], lrs=[1e-3], seeds=[0], out_dir={out!r},
         protocol=FinetuneProtocol(epochs=2, image_size=48, batch_size=16, hflip=False))
"""


def test_multitask_grid_resumes_after_sigkill(tmp_path):
    out = tmp_path / "grid"
    script = GRID_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    first = out / "runs" / "tiny-vqa" / "onet_mtcnn__lr0.001__seed0.json"
    sigkill_when(["-c", script], first.is_file, tmp_path / "child.err", timeout=240)
    kept = first.stat().st_mtime_ns
    result = run_grid([tiny("vqa", 64, 32)], ["onet_mtcnn", "onet_mtcnn_random"], lrs=[1e-3], seeds=[0], out_dir=out,
                      protocol=FinetuneProtocol(epochs=2, image_size=48, batch_size=16, hflip=False))
    second = out / "runs" / "tiny-vqa" / "onet_mtcnn_random__lr0.001__seed0.json"
    assert result.failures == [] and result.n_reused + result.n_trained == 2 and result.n_reused >= 1
    assert first.stat().st_mtime_ns == kept and second.is_file()
    assert json.loads(first.read_text())["task"] == "vqa"


def test_cli_finetune_task_option(tmp_path):
    out = tmp_path / "truth.csv"
    args = ["finetune", "--data", "builtin:fashion-captions", "--task", "captioning", "--models", IMAGE_MODEL,
            "--epochs", "1", "--seeds", "0", "--image-size", "48", "--max-samples", "60", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "truth_runs" / "runs").rglob("*.json")).read_text())
    assert record["task"] == "captioning" and record["primary"] == "bleu4" and record["complete"]
    wrong = CliRunner().invoke(app, ["finetune", "--data", "fm10", "--task", "vqa", "--out", str(out)])
    assert wrong.exit_code != 0 and "--task" in wrong.output
