"""Candidates that can be fine-tuned: a model name -> a trainable feature network and its input encoding.

Names: a packaged backbone ``NAME`` or ``builtin:NAME[?image_size=..&pretrained=false&seed=..]``;
``NAME_random`` is ``NAME`` randomly initialised (seed 0). Precomputed features (``file:``), ONNX
encoders and hub models have no fine-tuning path here: :func:`load_backbone` refuses them with an
InputError naming the model. Text candidates for text QA (``minilm_l6``, ``minilm_l6_layer3``,
``minilm_l6_layer1``, each also ``_random``) come from :mod:`emms.finetune.text_backbones`; both build a
:class:`~emms.finetune.trainable.Backbone`.

Heads that set ``needs_feature_map`` (the referring head) get the image backbone's last spatial map
instead of its pooled vector: ``load_backbone(..., feature_map=True)`` returns the same network cut
before its global pooling, ``(B, C, H, W)`` with ``feature_dim = C`` (:func:`feature_map_trunk`:
MobileNetV2, EfficientNet-B0, VGG16-BN and EasyOCR's CNN drop the final mean; EfficientNet-Lite
returns ``extract_features``; the MTCNN O-Net, whose pooled vector is a fully connected layer over its
flattened map, stops at ``prelu4``, 128 x 3 x 3 at 48 px). Text backbones have no such map.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from emms.errors import InputError
from emms.finetune.text_backbones import TEXT_BACKBONES, text_backbone
from emms.finetune.trainable import Backbone

if TYPE_CHECKING:
    import torch
    from torch import nn

RANDOM_SUFFIX = "_random"


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


def load_backbone(model: str, image_size: int, bn_momentum: float, feature_map: bool = False) -> Backbone:
    """Build ``model`` for training at ``image_size`` (fixed-size networks use their own) with
    every BatchNorm at ``bn_momentum``; ``feature_map`` gives the unpooled map (image backbones only).
    Uses torch's global RNG only through the caller's seed. ``n_params`` counts the whole candidate."""
    from emms.models.architectures import set_bn_momentum
    from emms.models.backbones import build_backbone, get_backbone_spec, preprocess_images

    name, pretrained, options = parse_model(model)
    if name in TEXT_BACKBONES:
        if feature_map:
            raise InputError(f"models: {model!r} is a text model; this task's head needs an image backbone's feature map")
        return text_backbone(name, pretrained, seed=int(options.get("seed", 0)))
    spec = get_backbone_spec(name)
    size = spec.native_size if spec.fixed_size else int(options.get("image_size", image_size))
    module = build_backbone(name, pretrained=pretrained, seed=int(options.get("seed", 0)))
    set_bn_momentum(module, bn_momentum)
    n_params = sum(p.numel() for p in module.parameters())
    feature_dim = spec.feature_dim
    if feature_map:
        module = feature_map_trunk(module)
        feature_dim = map_shape(module, spec.in_channels, size)[0]
    return Backbone(module=module, feature_dim=feature_dim, encode=lambda images: preprocess_images(images, spec, size),
                    is_image=True, image_size_used=size, n_params=n_params, feature_map=feature_map)


def feature_map_trunk(network: nn.Module) -> nn.Module:
    """The part of a packaged image backbone that ends at its last spatial map (B, C, H, W); it shares
    the backbone's parameters (pretrained or not)."""
    from emms.models import architectures as arch

    if isinstance(network, arch.ONet):
        names = list(network.features._modules)
        return network.features[: names.index("prelu4") + 1]
    if isinstance(network, arch.EfficientNetLite):
        return _extract_features_class()(network.net)
    if isinstance(network, (arch.MobileNetV2, arch.EfficientNetB0, arch.VGG16BNTrunk, arch.OCRVGG)):
        return network.features  # their forward is features(x).mean((2, 3))
    raise InputError(f"models: {type(network).__name__} has no known feature map")


def map_shape(trunk: nn.Module, in_channels: int, size: int) -> tuple[int, int, int]:
    """(C, H, W) of ``trunk``'s map for a ``size`` x ``size`` input (one zero image, eval mode, no grad, no RNG)."""
    import torch

    was_training = trunk.training
    trunk.eval()
    with torch.no_grad():
        shape = trunk(torch.zeros(1, in_channels, size, size)).shape
    trunk.train(was_training)
    if len(shape) != 4:
        raise InputError(f"models: expected a (B, C, H, W) feature map, got shape {tuple(shape)}")
    return int(shape[1]), int(shape[2]), int(shape[3])


@cache
def _extract_features_class() -> type:
    """A module class running ``net.extract_features`` (EfficientNet-Lite's map before pooling); built
    on first use because torch is optional at import time."""
    from torch import nn as torch_nn

    class ExtractFeatures(torch_nn.Module):
        def __init__(self, net: torch_nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):  # noqa: ANN001, ANN202
            return self.net.extract_features(x)

    return ExtractFeatures


def frozen_extractor(model: str):  # noqa: ANN201 - emms.models.extractors.CallableExtractor
    """Text candidate ``model`` (a name :func:`parse_model` accepts) as a frozen
    feature extractor for :func:`emms.rank`: the very network a run starts from, in eval mode, named
    ``model`` (its ``module`` is there, so the size prior ``params`` counts it)."""
    import torch

    from emms.models import from_callable

    name, pretrained, options = parse_model(model)
    seed = int(options.get("seed", 0))
    backbone = text_backbone(name, pretrained, seed=seed)
    backbone.module.eval()

    def features(batch: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return backbone.module(backbone.encode(batch))

    extractor = from_callable(features, modality="text",
                              identity=f"finetune-text:{name}" + ("" if pretrained else f"_random?seed={seed}"))
    extractor.name, extractor.module = model, backbone.module
    return extractor
