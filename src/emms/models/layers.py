"""Layer-wise features: which layers to score, and how per-layer scores become one per model.

Extractors that can see inside their model (packaged backbones: the output of each stage and the
pooled output; Hugging Face and sentence-transformers models: every hidden state; timm models: the
stages timm lists in ``feature_info``) have ``layer_names`` (shallow to deep; the last is the
model's own feature) and ``extract_layers(inputs, layers)``, which returns the pooled features of
several layers from ONE forward pass per batch. Other extractors (files, callables, wrapped
modules) have a single layer, their output.

A layer choice (``rank(..., layers=)``, ``emms rank --layers``) is one of:

* ``"best"`` (default, :data:`DEFAULT_LAYERS`): score every layer, keep the best per model and
  metric, and say which layer. On the offline image benchmark it lifted EMMS from weighted τ
  +0.29 to +0.55 and its top-1 hits from 1/3 to 3/3 (BENCHMARKS.md §12), at about the cost of
  a last-layer run (one forward pass; the intermediate layers are narrower);
* ``"last"``: the model's own features, as without layers;
* ``"mean"``: the element-wise mean of the pooled layers (as transformer-ranker's ``layermean``);
  for a model whose layers differ in width (CNN stages) the mean of its per-layer scores instead;
* ``"all"``: every layer of every model scored as its own candidate, named ``MODEL#layerK``;
* indices ``"i,j,..."`` (negative from the end): those layers, each its own candidate; a single
  index replaces the model's features by that layer's, under the model's own name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from emms.errors import InputError

LayerChoice = str | tuple[int, ...]
MODES = ("last", "best", "mean", "all")
DEFAULT_LAYERS = "best"
LAYER_SEPARATOR = "#layer"


def parse_layers(value: object) -> LayerChoice:
    """``last``, ``best``, ``mean``, ``all`` or a tuple of layer indices (from ``"0,-1"``, an int or ints)."""
    if value is None:
        return DEFAULT_LAYERS
    if isinstance(value, str):
        text = value.strip().lower()
        if text in MODES:
            return text
        items = [item.strip() for item in text.split(",")]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items = [str(int(value))]
    elif isinstance(value, Sequence) and value and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                                       for v in value):
        items = [str(int(v)) for v in value]
    else:
        items = []
    if not items or not all(item.lstrip("-").isdigit() for item in items):
        raise InputError(f"layers: expected last, best, mean, all or comma-separated layer indices (e.g. 3,-2), "
                         f"got {value!r}")
    indices = tuple(dict.fromkeys(int(item) for item in items))
    return indices


def layer_index(layer: int, n_layers: int, model: str) -> int:
    """``layer`` (negative: from the end) as an index into ``n_layers`` layers; InputError when out of range."""
    k = layer + n_layers if layer < 0 else layer
    if not 0 <= k < n_layers:
        raise InputError(f"layers: {model} has {n_layers} layer(s) (indices 0..{n_layers - 1} or "
                         f"-1..-{n_layers}), got {layer}")
    return k


def layer_names(extractor) -> tuple[str, ...]:
    """The extractor's layers, shallow to deep (``("output",)`` for one without layer access)."""
    return tuple(getattr(extractor, "layer_names", ("output",)))


def pick_layers(choice: LayerChoice, n_layers: int, model: str) -> tuple[int, ...]:
    """The layer indices (0..n_layers-1, unique, in the order asked) a ``choice`` extracts from a model."""
    if isinstance(choice, tuple):
        return tuple(dict.fromkeys(layer_index(k, n_layers, model) for k in choice))
    if choice not in MODES:
        raise InputError(f"layers: expected one of {', '.join(MODES)} or layer indices, got {choice!r}")
    return (n_layers - 1,) if choice == "last" else tuple(range(n_layers))


@dataclass(frozen=True)
class LayerPlan:
    """What is scored for a layer ``choice``: ``scored[name] = (model, layer index or "mean")``.

    A scored name is the model's own for one entry per model (``last``, one index, ``mean`` over
    same-width layers) and ``MODEL#layerK`` otherwise.
    """

    choice: LayerChoice
    scored: dict[str, tuple[str, int | str]]


def plan_layers(choice: LayerChoice, widths: Mapping[str, Mapping[int, int]]) -> LayerPlan:
    """The entries to score, given the extracted layers of each model and their widths ``{model: {index: D}}``."""
    scored: dict[str, tuple[str, int | str]] = {}
    for model, by_layer in widths.items():
        picked = list(by_layer)
        if choice == "mean" and len(set(by_layer.values())) == 1:
            scored[model] = (model, "mean")
        elif len(picked) == 1 and choice != "all":
            scored[model] = (model, picked[0])
        else:
            scored.update({f"{model}{LAYER_SEPARATOR}{k}": (model, k) for k in picked})
    return LayerPlan(choice, scored)


def mean_features(features: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise mean of same-width pooled layer features, float32 (accumulated in float64)."""
    total = np.zeros(features[0].shape, dtype=np.float64)
    for f in features:
        total += f
    return (total / len(features)).astype(np.float32)


def check_layer_choice(layers: object, with_truth: bool = False) -> LayerChoice:
    """:func:`parse_layers`, refusing choices that give a model several rows when a ground truth is given."""
    choice = parse_layers(layers)
    if with_truth and (choice == "all" or (isinstance(choice, tuple) and len(choice) > 1)):
        raise InputError(f"layers: {layers!r} scores several layers of each model as separate candidates, but a "
                         "ground truth compares models; use last, best, mean or one layer index")
    return choice


def collapse_rows(rows: list[dict], plan: LayerPlan) -> tuple[list[dict], list[dict]]:
    """Score rows of the scored entries -> (rows of the ranking, per-layer records).

    ``best`` keeps each model's best layer per metric (NaN scores lose unless every layer's is NaN;
    ties go to the deeper layer, e.g. for LEEP, whose source-head input is the same for every layer),
    ``mean`` over several entries averages their scores; seconds are summed over the entries a row
    stands for. Other choices keep their rows. Every row gets ``layer`` (an index or ``"mean"``); the
    per-layer records (``model, layer, metric, score``) list what was scored, before collapsing.
    """
    per_layer = [{"model": plan.scored[r["model"]][0], "layer": plan.scored[r["model"]][1], "metric": r["metric"],
                  "score": float(r["score"])} for r in rows]
    if plan.choice not in ("best", "mean"):
        return [{**row, "layer": plan.scored[row["model"]][1]} for row in rows], per_layer
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        model, layer = plan.scored[row["model"]]
        groups.setdefault((model, row["metric"]), []).append({**row, "model": model, "layer": layer})
    out = []
    for group in groups.values():
        seconds = float(sum(r["seconds"] for r in group))
        if plan.choice == "best":
            finite = [r for r in group if np.isfinite(r["score"])] or group
            out.append({**max(reversed(finite), key=lambda r: r["score"]), "seconds": seconds})  # ties: deepest
        else:
            out.append({**group[0], "score": float(np.mean([r["score"] for r in group])), "seconds": seconds,
                        "layer": "mean", "weights": None if len(group) > 1 else group[0]["weights"]})
    return out, per_layer


def layer_meta(plan: LayerPlan, rows: list[dict], per_layer: list[dict]) -> dict:
    """Meta of a ranking with a layer choice: the choice, the models in order, the layer each
    (model, metric) row stands for, and every scored layer's score."""
    models = list(dict.fromkeys(row["model"] for row in rows))
    return {"layers": plan.choice if isinstance(plan.choice, str) else list(plan.choice), "models": models,
            "layer_chosen": [{"model": r["model"], "metric": r["metric"], "layer": r["layer"]} for r in rows],
            "layer_scores": per_layer}


def collapse_resampled(resampled, plan: LayerPlan):
    """Resampled scores (``resample, model, score``) of scored entries -> one per model, as :func:`collapse_rows` does."""
    if plan.choice not in ("best", "mean"):
        return resampled
    table = resampled.assign(model=[plan.scored[m][0] for m in resampled["model"]])
    reduce = "max" if plan.choice == "best" else "mean"
    return table.groupby(["resample", "model"], sort=False, as_index=False)["score"].agg(reduce)


@contextlib.contextmanager
def captured_outputs(module: nn.Module, paths: Sequence[str], pool) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks on ``module``'s submodules ``paths``: their outputs, pooled by ``pool``, land in the dict."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    try:
        for path in paths:
            def hook(_module, _inputs, output, path=path) -> None:
                outputs[path] = pool(output, path)
            handles.append(module.get_submodule(path).register_forward_hook(hook))
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
