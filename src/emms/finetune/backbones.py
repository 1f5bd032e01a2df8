"""Candidates that can be fine-tuned: a model name -> a trainable feature network and its input encoding.

Names: a packaged backbone ``NAME`` or ``builtin:NAME[?image_size=..&pretrained=false&seed=..]``;
``NAME_random`` is ``NAME`` randomly initialised (seed 0). Precomputed features (``file:``), ONNX
encoders and hub models have no fine-tuning path here: :func:`load_backbone` refuses them with an
InputError naming the model. Text candidates for text QA (``minilm_l6``, ``minilm_l6_layer3``,
``minilm_l6_layer1``, each also ``_random``) come from :mod:`emms.finetune.text_backbones`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from emms.errors import InputError
from emms.finetune.text_backbones import TEXT_BACKBONES, text_backbone

if TYPE_CHECKING:
    import torch
    from torch import nn

RANDOM_SUFFIX = "_random"


@dataclass
class Backbone:
    """A trainable feature network: ``module(encode(inputs)) -> (n, feature_dim)``.

    ``encode`` turns a split's raw inputs into one tensor on the CPU (rows first), done once per run;
    ``is_image`` says whether left-right flips apply; ``n_params`` counts the module's parameters.
    """

    module: nn.Module
    feature_dim: int
    encode: Callable[[object], torch.Tensor]
    is_image: bool
    image_size_used: int | None
    n_params: int


def parse_model(name: str) -> tuple[str, bool, dict]:
    """``"NAME"`` / ``"builtin:NAME?..."`` -> (packaged NAME, pretrained, spec options); ``NAME_random``
    -> pretrained False. Anything that cannot be fine-tuned is an InputError naming it."""
    from emms.models.backbones import BACKBONES, get_backbone_spec

    if not isinstance(name, str) or not name:
        raise InputError(f"models: expected model names, got {name!r}")
    options: dict = {}
    if ":" in name:
        from emms.models.specs import parse_spec

        spec = parse_spec(name)
        if spec.scheme != "builtin":
            raise InputError(f"models: {name!r} cannot be fine-tuned: only the packaged backbones (builtin:NAME) "
                             f"have a fine-tuning path ({spec.scheme}: models are scored on frozen features only)")
        name, options = spec.target, dict(spec.options)
    pretrained = bool(options.pop("pretrained", True))
    if name not in BACKBONES and name.endswith(RANDOM_SUFFIX):
        name, pretrained = name[: -len(RANDOM_SUFFIX)], False
    if name in TEXT_BACKBONES:
        return name, pretrained, options
    try:
        get_backbone_spec(name)
    except InputError as exc:
        raise InputError(f"models: {name!r} cannot be fine-tuned: {exc}") from None
    return name, pretrained, options


def load_backbone(model: str, image_size: int, bn_momentum: float) -> Backbone:
    """Build ``model`` for training at ``image_size`` (fixed-size networks use their own) with
    every BatchNorm at ``bn_momentum``. Uses torch's global RNG only through the caller's seed."""
    from emms.models.architectures import set_bn_momentum
    from emms.models.backbones import build_backbone, get_backbone_spec, preprocess_images

    name, pretrained, options = parse_model(model)
    if name in TEXT_BACKBONES:
        return text_backbone(name, pretrained, seed=int(options.get("seed", 0)))
    spec = get_backbone_spec(name)
    size = spec.native_size if spec.fixed_size else int(options.get("image_size", image_size))
    module = build_backbone(name, pretrained=pretrained, seed=int(options.get("seed", 0)))
    set_bn_momentum(module, bn_momentum)
    return Backbone(module=module, feature_dim=spec.feature_dim, encode=lambda images: preprocess_images(images, spec, size),
                    is_image=True, image_size_used=size, n_params=sum(p.numel() for p in module.parameters()))
