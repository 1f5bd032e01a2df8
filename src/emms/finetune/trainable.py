"""The trainable network every fine-tuning run starts from (image or text): :class:`Backbone`.

Its own module so that the image and text candidate modules (:mod:`emms.finetune.backbones`,
:mod:`emms.finetune.text_backbones`) both build it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


@dataclass
class Backbone:
    """A trainable feature network: ``module(encode(inputs)) -> (n, feature_dim)``, or with
    ``feature_map`` the spatial map ``(n, feature_dim, H, W)``.

    ``encode`` turns a split's raw inputs into one tensor on the CPU (rows first), done once per run;
    ``is_image`` says whether left-right flips apply; ``n_params`` counts the module's parameters.
    """

    module: nn.Module
    feature_dim: int
    encode: Callable[[object], torch.Tensor]
    is_image: bool
    image_size_used: int | None
    n_params: int
    feature_map: bool = False
