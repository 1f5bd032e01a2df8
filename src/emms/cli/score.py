"""``emms score``: score one model's features with any registered per-model metric."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from emms.cli._common import app, console, errors_as_exit, load_array, print_json, split_list
from emms.errors import InputError
from emms.metrics import get_metric, score as score_with_metric
from emms.metrics.emms import EMMS


@app.command("score")
def score_command(
    features: Annotated[str, typer.Option("--features", help="Features (N, D): file.npy, file.npz or file.npz:key.")],
    f_labels: Annotated[list[str] | None, typer.Option(
        "--f-labels", help="F-label embeddings (N, L_k), one per encoder; repeat or comma-separate. "
                           "One (N, L, K) array also works.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Native target: class ids (N,), multilabel (N, C) or "
                                                                 "real (N, T).")] = None,
    metric: Annotated[str, typer.Option("--metric", help="Registered metric name (see `emms metrics`).")] = "emms",
    solver: Annotated[str | None, typer.Option("--solver", help="EMMS only: exact | alternating | official.")] = None,
    score_kind: Annotated[str | None, typer.Option("--score", help="EMMS only: gcv (default) | in_sample.")] = None,
    mixture: Annotated[str | None, typer.Option("--mixture", help="EMMS only: per_encoder (default) | columns "
                                                                  "(the paper's column-wise mixture).")] = None,
    source_probs: Annotated[str | None, typer.Option("--source-probs", help="Source-head probabilities (N, C_source) "
                                                                             "for LEEP/NCE.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="EMMS only: compute the statistics and the eigen-solve "
                                                                "with torch on cpu, cuda or mps (default: numpy).")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="With --device: float64 (default) or float32 chunk moments.")] = "float64",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score features against F-labels or native labels with one metric (higher = better)."""
    with errors_as_exit():
        info = get_metric(metric)
        if info.pool_relative:
            raise InputError(f"--metric: {metric!r} is pool-relative (each score depends on the other candidates); "
                             "it needs a pool of models: use `emms rank` or emms.score_pool")
        if (f_labels is None) == (labels is None):
            raise InputError("--f-labels/--labels: pass exactly one of them")
        if labels is not None and info.targets == frozenset({"flabels"}):
            raise InputError(f"--labels: metric {metric!r} needs F-label embeddings; pass them with --f-labels")
        if f_labels is not None and "flabels" not in info.targets:
            raise InputError(f"--f-labels: metric {metric!r} accepts {', '.join(sorted(info.targets))} targets; "
                             "pass them with --labels")
        emms_options = {k: v for k, v in (("solver", solver), ("score", score_kind), ("mixture", mixture)) if v is not None}
        if emms_options and metric != "emms":
            raise InputError(f"--solver/--score: only apply to metric 'emms' (--mixture too), not {metric!r}")
        if device is not None and metric != "emms":
            raise InputError(f"--device: the torch backend computes metric 'emms' only, not {metric!r}")
        if device is not None and solver == "official":
            raise InputError("--device: the official solver runs on numpy only; drop --device or use --solver exact")
        if dtype != "float64" and device is None:
            raise InputError("--dtype: applies to the torch backend only; pass --device as well")
        x = load_array(features, "--features")
        if f_labels is not None:
            paths = split_list(",".join(f_labels), "--f-labels", "at least one file")
            if len(paths) == 1 and _is_embed_output(paths[0]):  # the .npz that `emms embed` writes
                from emms.flabels import load_f_labels

                target = load_f_labels(paths[0]).arrays
            else:
                arrays = [load_array(p, "--f-labels") for p in paths]
                target = arrays[0] if len(arrays) == 1 and arrays[0].ndim == 3 else arrays
        else:
            target = load_array(labels, "--labels")
        probs = load_array(source_probs, "--source-probs") if source_probs is not None else None

        start = time.perf_counter()
        weights = None
        details: dict[str, object] = {}
        if metric == "emms":
            if probs is not None:
                raise InputError("--source-probs: metric 'emms' does not use source probabilities")
            if device is None:
                estimator = EMMS(**emms_options).fit(x, target)
            else:
                from emms.compute.backend import emms_fit_torch

                estimator = emms_fit_torch(x, target, device=device, dtype=dtype, **emms_options)
            value, weights = estimator.score_, [float(w) for w in estimator.weights_]
            details = {"solver": estimator.solver, "score_kind": estimator.score, "mixture": estimator.mixture,
                       "ridge": estimator.ridge_,
                       "regime": estimator.regime_, "n_iter": estimator.n_iter_}
        else:
            value = score_with_metric(x, target, metric, source_probs=probs)
        seconds = time.perf_counter() - start

        shape = np.shape(x)
        result = {"metric": metric, "score": float(value), "weights": weights,
                  "n_samples": int(shape[0]), "n_features": int(shape[1]) if len(shape) > 1 else None,
                  "seconds": seconds, **details}
        if as_json:
            print_json(result)
        else:
            console.print(f"{metric}: [bold]{value:.6g}[/] (N={result['n_samples']}, D={result['n_features']}, "
                          f"{seconds:.3f} s)", highlight=False)
            if weights is not None:
                console.print("encoder weights t: " + ", ".join(f"{w:.4f}" for w in weights), highlight=False)


def _is_embed_output(path: str) -> bool:
    """True for an ``emms embed`` file: an .npz holding ``metadata`` and ``flabel_0``."""
    if not path.endswith(".npz") or not Path(path).is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return {"metadata", "flabel_0"} <= set(data.files)
    except (ValueError, OSError):
        return False
