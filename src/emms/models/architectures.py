"""Small CNN definitions for the packaged offline backbones (no torchvision/timm needed).

Every class maps a normalised image batch (B, C, H, W) to globally pooled features (B, D) in
``forward`` and names the modules that end its stages in ``STAGE_OUTPUTS`` (layer-wise features,
:mod:`emms.models.layers`); those with a source classification head also implement ``source_probs(features)``
-> (B, C_source). Parameter names follow the checkpoints they load, so each state dict loads
strictly:

* :class:`MobileNetV2` — torchvision key names (Sandler et al., CVPR 2018, arXiv 1801.04381);
  ``tf_padding=True`` reproduces Keras/TF "same" padding (pads bottom/right on stride 2).
* :class:`EfficientNetB0` — torchvision key names (Tan & Le, ICML 2019, arXiv 1905.11946):
  MBConv with squeeze-excitation and SiLU; stochastic depth only acts in training, so it is omitted.
* :class:`VGG16BNTrunk` — VGG16-BN ``features[0:40]`` (through conv5_2 + BN + ReLU): the part of
  the CRAFT text detector's backbone (Baek et al., CVPR 2019) that holds VGG layers.
* :class:`OCRVGG` — EasyOCR's CRNN feature extractor (7 convolutions, grayscale input).
* :class:`ONet` — the MTCNN output network (Zhang et al., 2016), 48x48 input, 256-d feature.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Conv2dTFSame(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding computed from the input size.

    For stride s and kernel k the total padding is max((ceil(i/s) - 1) s + k - i, 0); the odd pixel
    goes to the bottom/right, which differs from PyTorch's symmetric padding when s = 2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False,
          tf_padding: bool = False) -> nn.Conv2d:
    if tf_padding and stride > 1:
        return Conv2dTFSame(cin, cout, k, stride, groups=groups, bias=bias)
    return nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=bias)


def _conv_bn_act(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU6,
                 bn_eps: float = 1e-5, tf_padding: bool = False) -> nn.Sequential:
    """Conv (index 0), BatchNorm (1) and an optional activation (2), as torchvision names them."""
    layers: list[nn.Module] = [_conv(cin, cout, k, stride, groups, tf_padding=tf_padding),
                               nn.BatchNorm2d(cout, eps=bn_eps)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _softmax_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=1)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int, bn_eps: float, tf_padding: bool) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1, bn_eps=bn_eps))
        layers += [_conv_bn_act(hidden, hidden, 3, stride, groups=hidden, bn_eps=bn_eps, tf_padding=tf_padding),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=bn_eps)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0): (B, 3, H, W) -> (B, 1280) global-average-pooled features."""

    # the last block of each stage (after the stem), then the pooled output; see emms.models.layers
    STAGE_OUTPUTS = ("features.1", "features.3", "features.6", "features.10", "features.13", "features.16", "features.17")

    # expansion t, output channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 1000, *, bn_eps: float = 1e-5, tf_padding: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 32, 3, 2, bn_eps=bn_eps, tf_padding=tf_padding)]
        cin = 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t, bn_eps, tf_padding))
                cin = c
        layers.append(_conv_bn_act(cin, 1280, 1, bn_eps=bn_eps))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))

    def source_probs(self, features: torch.Tensor) -> torch.Tensor:
        return _softmax_probs(self.classifier(features))


class _SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(F.silu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(scale)


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_act(cin, hidden, 1, act=nn.SiLU))
        layers += [_conv_bn_act(hidden, hidden, kernel, stride, groups=hidden, act=nn.SiLU),
                   _SqueezeExcitation(hidden, max(1, cin // 4)),
                   _conv_bn_act(hidden, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.use_residual else self.block(x)


class EfficientNetB0(nn.Module):
    """EfficientNet-B0: (B, 3, H, W) -> (B, 1280) pooled features; ``num_classes=1`` is a binary logit."""

    STAGE_OUTPUTS = tuple(f"features.{i}" for i in range(1, 8))

    # expansion, kernel, stride, in, out, repeats
    STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_act(3, 32, 3, 2, act=nn.SiLU)]
        for expand, kernel, stride, cin, cout, repeats in self.STAGES:
            layers.append(nn.Sequential(*[_MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand)
                                          for i in range(repeats)]))
        layers.append(_conv_bn_act(320, 1280, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))

    def source_probs(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(features)
        if logits.shape[1] == 1:  # one sigmoid logit -> two-way probabilities [negative, positive]
            p = torch.sigmoid(logits)
            return torch.cat([1 - p, p], dim=1)
        return _softmax_probs(logits)


class VGG16BNTrunk(nn.Module):
    """VGG16-BN ``features[0:40]`` (conv1_1 ... conv5_2, BN, ReLU): (B, 3, H, W) -> (B, 512)."""

    STAGE_OUTPUTS = ("features.5", "features.12", "features.22", "features.32")  # ReLU before each max-pool

    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in self.CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU(inplace=True)]
                cin = int(item)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


class OCRVGG(nn.Module):
    """EasyOCR's recogniser CNN (``FeatureExtraction.ConvNet``): (B, 1, H, W) -> (B, 256)."""

    STAGE_OUTPUTS = ("features.1", "features.4", "features.9", "features.16")  # ReLU before each max-pool

    def __init__(self) -> None:
        super().__init__()
        c = (32, 64, 128, 256)
        self.features = nn.Sequential(
            nn.Conv2d(1, c[0], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[0], c[1], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d(2, 2),
            nn.Conv2d(c[1], c[2], 3, 1, 1), nn.ReLU(True),
            nn.Conv2d(c[2], c[2], 3, 1, 1), nn.ReLU(True), nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[2], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.Conv2d(c[3], c[3], 3, 1, 1, bias=False), nn.BatchNorm2d(c[3]), nn.ReLU(True),
            nn.MaxPool2d((2, 1), (2, 1)),
            nn.Conv2d(c[3], c[3], 2, 1, 0), nn.ReLU(True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean((2, 3))


class _CaffeFlatten(nn.Module):
    """Flatten in the (W, H) order of the Caffe/MATLAB MTCNN weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(3, 2).reshape(x.shape[0], -1)


class ONet(nn.Module):
    """MTCNN O-Net: (B, 3, 48, 48) -> (B, 256); ``source_probs`` = [p(non-face), p(face)]."""

    STAGE_OUTPUTS = ("features.prelu1", "features.prelu2", "features.prelu3", "features.prelu4")

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 32, 3)), ("prelu1", nn.PReLU(32)), ("pool1", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv2", nn.Conv2d(32, 64, 3)), ("prelu2", nn.PReLU(64)), ("pool2", nn.MaxPool2d(3, 2, ceil_mode=True)),
            ("conv3", nn.Conv2d(64, 64, 3)), ("prelu3", nn.PReLU(64)), ("pool3", nn.MaxPool2d(2, 2, ceil_mode=True)),
            ("conv4", nn.Conv2d(64, 128, 2)), ("prelu4", nn.PReLU(128)),
            ("flatten", _CaffeFlatten()), ("conv5", nn.Linear(1152, 256)), ("drop5", nn.Dropout(0.25)),
            ("prelu5", nn.PReLU(256)),
        ]))
        self.conv6_1 = nn.Linear(256, 2)   # face classification
        self.conv6_2 = nn.Linear(256, 4)   # bounding-box regression
        self.conv6_3 = nn.Linear(256, 10)  # five facial landmarks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def source_probs(self, features: torch.Tensor) -> torch.Tensor:
        return _softmax_probs(self.conv6_1(features))


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite from ``efficientnet_lite_pytorch`` with dynamic TF "same" padding.

    (B, 3, H, W) -> (B, 1280); ``source_probs`` = softmax of the 1000-way ImageNet head.
    """

    def __init__(self, variant: str) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size=None selects padding computed per input, so any resolution is padded as TF does.
        self.net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
        blocks = [b._block_args for b in self.net._blocks]
        # a stage ends where the next block changes the width (its first block) or there is none
        self.STAGE_OUTPUTS = tuple(f"net._blocks.{i}" for i in range(len(blocks))
                                   if i + 1 == len(blocks) or blocks[i + 1].input_filters != blocks[i + 1].output_filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean((2, 3))

    def source_probs(self, features: torch.Tensor) -> torch.Tensor:
        return _softmax_probs(self.net._fc(features))


def init_weights(module: nn.Module) -> None:
    """Random initialisation used for ``pretrained=False`` copies (He-normal fan-out, as torchvision)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def set_bn_momentum(module: nn.Module, momentum: float = 0.1) -> None:
    """Set every BatchNorm layer's momentum (PyTorch convention: weight of the new batch)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum
