"""Candidate feature extractors: inputs -> (n, D) float32 features.

Every extractor has ``identity`` (a stable cache key part: spec + weights digest + preprocessing +
layer/pooling), ``modality`` ("image", "text", or "any" for precomputed files) and
``extract(inputs, batch_size=64, progress=None)``. Models run in eval mode under
``torch.inference_mode``, in float32, batch by batch; features are returned as float32 numpy arrays
(metrics upcast to float64 themselves). ``progress(k)`` is called after each batch with the number
of inputs that batch held.

Packaged backbones with a source classification head also offer ``source_probs(inputs)`` ->
(n, C_source) and ``extract_with_source_probs`` (one forward pass for both), the inputs of LEEP
and NCE.

Here: the packaged backbones, your own torch module or callable, precomputed files, and
:func:`load_extractor` (a spec -> its extractor). Hub families (``hf:``, ``st:``, ``timm:``):
:mod:`emms.models.hub`; the batch loop and base classes they share: :mod:`emms.models.base`.
"""


from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emms._io import cached_file_sha256
from emms._validation import as_torch_device, check_positive_int
from emms.errors import InputError
from emms.models.backbones import (build_backbone, get_backbone_spec,
                                   preprocess_images, weights_path)
from emms.models.base import (EXTRACTOR_VERSION, Progress, TorchExtractor, _check_image_size, _chosen_layers, _Extractor,
                              _HookedExtractor, _n_inputs, _run_batches, module_digest)
from emms.models.hub import SentenceTransformerExtractor, TimmExtractor, _load_hf
from emms.models.specs import parse_spec

class BuiltinExtractor(_HookedExtractor):
    """A packaged backbone (``builtin:NAME``); images are resized to ``image_size`` (default native).

    ``layer_names``: the module ending each stage (``STAGE_OUTPUTS`` of its architecture, globally
    average-pooled) and ``"output"`` (the model's own pooled feature). ``layer=k`` makes layer k the
    feature (the layers after it are dropped from ``layer_names``). Backbones with a source head are
    loaded as :class:`BuiltinHeadExtractor`.
    """

    def __init__(self, name: str, *, image_size: int | None = None, pretrained: bool = True, seed: int = 0,
                 layer: int | None = None, device: str | torch.device = "cpu") -> None:
        spec = get_backbone_spec(name)
        _check_image_size(image_size)
        size = spec.native_size if image_size is None or spec.fixed_size else image_size
        module = build_backbone(name, pretrained=pretrained, seed=seed)
        names, chosen = _chosen_layers((*module.STAGE_OUTPUTS, "output"), layer, f"builtin:{name}")
        weights = f"sha256:{cached_file_sha256(weights_path(spec))[:16]}" if pretrained else f"random-seed{seed}"
        identity = (f"builtin:{name}|weights={weights}|size={size}|ch={spec.in_channels}|mean={spec.mean}"
                    f"|std={spec.std}|resize=bilinear-antialias|pool={spec.pooling}{chosen}|v{EXTRACTOR_VERSION}")
        dev = as_torch_device(device)
        super().__init__(module, lambda batch: preprocess_images(batch, spec, size, dev), identity=identity,
                         modality="image", device=dev)
        self.spec = spec
        self.image_size = size
        self.pretrained = pretrained
        self.layer_names = names


class BuiltinHeadExtractor(BuiltinExtractor):
    """A packaged backbone with a source classification head: also gives its probabilities.

    Only backbones whose spec has ``source_classes`` get this class, so ``hasattr(extractor,
    "source_probs")`` tells whether LEEP/NCE can use a model.
    """

    @property
    def source_classes(self) -> int:
        """Width of the source head's probabilities."""
        return int(self.spec.source_classes)

    def _both(self, batch: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        return self._outputs(batch, self.layer_names[-1:], probs=True)

    def extract_layers_with_source_probs(self, inputs: Sequence, layers: Sequence[int], batch_size: int = 64,
                                         progress: Progress | None = None) -> tuple[np.ndarray, ...]:
        """:meth:`extract_layers` plus the source probabilities (n, source_classes) last, from one pass per batch."""
        paths = [self.layer_names[k] for k in self._indices(layers)]
        return _run_batches(inputs, batch_size, progress, lambda batch: self._outputs(batch, paths, probs=True))

    def source_probs(self, inputs: Sequence, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        """Source-head probabilities (n, source_classes) float32; rows sum to 1."""
        return self.extract_with_source_probs(inputs, batch_size, progress)[1]

    def extract_with_source_probs(self, inputs: Sequence, batch_size: int = 64,
                                  progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, D) and source probabilities (n, source_classes) from one forward pass."""
        feats, probs = _run_batches(inputs, batch_size, progress, self._both)
        return feats, probs


class CallableExtractor(_Extractor):
    """Any Python callable mapping a batch of inputs to an array (B, D)."""

    def __init__(self, function: Callable[[Sequence], object], *, identity: str, modality: str) -> None:
        self.function = function
        self.identity = f"callable:{identity}"
        self.modality = modality

    def _features(self, batch: Sequence) -> np.ndarray:
        out = self.function(batch)
        if isinstance(out, torch.Tensor):
            out = out.detach().float().cpu().numpy()
        arr = np.asarray(out)
        if arr.ndim != 2 or arr.shape[0] != len(batch) or arr.dtype.kind not in "fiu":
            raise InputError(f"function: expected a numeric array of shape ({len(batch)}, D) per batch, "
                             f"got {arr.dtype} {arr.shape}")
        return arr.astype(np.float32, copy=False)


class FileExtractor(_Extractor):
    """Precomputed features from a ``.npy`` file: row i belongs to input i (``extract`` needs all rows)."""

    cacheable = False  # the file already is the cache; extraction needs all rows at once

    def __init__(self, path: str | Path, *, modality: str = "any") -> None:
        if modality not in ("image", "text", "any"):
            raise InputError(f"spec: option 'modality' expects image, text or any, got {modality!r}")
        self.modality = modality
        path = Path(path).expanduser()
        if path.suffix != ".npy":
            raise InputError(f"spec: file: expects a .npy file of shape (n_inputs, D), got {path.name!r}")
        if not path.is_file():
            raise InputError(f"spec: feature file not found: {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise InputError(f"spec: cannot read {path} as a numeric .npy array ({exc})") from None
        if array.ndim != 2 or array.dtype.kind not in "fiu" or array.shape[0] < 1:
            raise InputError(f"spec: {path} must hold a numeric 2-D array (n_inputs, D), got {array.dtype} {array.shape}")
        self.path = path
        self._array = array
        self.identity = f"file:{path.name}|sha256:{cached_file_sha256(path)[:16]}"

    @property
    def n_rows(self) -> int:
        return int(self._array.shape[0])

    def features(self) -> np.ndarray:
        """All rows as a float32 (n_rows, D) array."""
        return np.asarray(self._array, dtype=np.float32)

    def extract(self, inputs: Sequence, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        n = _n_inputs(inputs)
        if n != self.n_rows:
            raise InputError(f"spec: {self.path} has {self.n_rows} rows but the dataset has {n} inputs; "
                             "precomputed features need one row per input, in the dataset's order")
        check_positive_int(batch_size, "batch_size")
        out = self.features()
        if progress is not None:
            progress(n)
        return out


def _as_layer(layer: int | str | None) -> int | None:
    if layer is None:
        return None
    if isinstance(layer, str) and layer.strip().lstrip("-").isdigit():
        return int(layer)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        return int(layer)
    raise InputError(f"layer: expected an integer index into the model's hidden states, got {layer!r}")


def load_extractor(spec: str, *, device: str = "cpu", layer: int | str | None = None, pooling: str | None = None,
                   **options: object):
    """Load the feature extractor named by ``spec`` (see :mod:`emms.models.specs`).

    ``layer`` (builtin:, hf:, st:, timm:; also ``?layer=`` in the spec) makes layer ``layer`` of
    the extractor's ``layer_names`` the feature (hf:/st:: ``hidden_states[layer]``, 0 = embeddings;
    negative from the end). ``pooling`` (also ``?pooling=``) is ``mean``, ``cls``, ``mean_nospecial``
    (token models: hf:, st:) or ``pooler`` (hf:). Keyword ``options`` override options written in the
    spec string, e.g. ``image_size=64`` for builtin: backbones or ``checkpoint=PATH`` (local weights)
    for timm: models.
    """
    parsed = parse_spec(spec, **options)
    opts = parsed.options
    layer_index = _as_layer(layer) if layer is not None else opts.get("layer")
    pooling = pooling if pooling is not None else opts.get("pooling")
    if parsed.scheme == "file" and layer_index is not None:
        raise InputError("layer: file: features are precomputed; they have no layers to choose from")
    if parsed.scheme in ("builtin", "timm", "file") and pooling not in (None, "mean"):
        raise InputError(f"pooling: {parsed.scheme}: models give their own pooled features (spatial mean); "
                         f"pooling choices are for token models (hf:, st:), got {pooling!r}")
    if parsed.scheme == "builtin":
        kind = BuiltinHeadExtractor if get_backbone_spec(parsed.target).source_classes else BuiltinExtractor
        return kind(parsed.target, image_size=opts.get("image_size"), pretrained=bool(opts.get("pretrained", True)),
                    seed=int(opts.get("seed", 0)), layer=layer_index, device=device)
    if parsed.scheme == "hf":
        return _load_hf(parsed.target, opts, layer_index, pooling, device)
    if parsed.scheme == "st":
        return SentenceTransformerExtractor(parsed.target, max_length=opts.get("max_length"), layer=layer_index,
                                            pooling=pooling, device=device)
    if parsed.scheme == "timm":
        return TimmExtractor(parsed.target, image_size=opts.get("image_size"), pretrained=opts.get("pretrained"),
                             seed=int(opts.get("seed", 0)), checkpoint=opts.get("checkpoint"), layer=layer_index,
                             device=device)
    return FileExtractor(parsed.target, modality=str(opts.get("modality", "any")))


def from_module(module: nn.Module, *, identity: str, preprocess: Callable[[Sequence], torch.Tensor] | None = None,
                modality: str = "image", device: str = "cpu") -> TorchExtractor:
    """Wrap any torch module: ``preprocess(batch) -> tensor``, then ``module`` -> (B, D) features.

    Without ``preprocess`` the batch must already be numeric (converted with ``torch.as_tensor``).
    Outputs of shape (B, C, H, W) or (B, T, D) are averaged to (B, D). The identity gets a digest of
    the module's state dict appended, so changed weights never reuse cached features.
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(identity, str) or not identity:
        raise InputError("identity: expected a non-empty string naming the model (used in cache keys)")

    def as_tensor(batch: Sequence) -> torch.Tensor:
        return torch.as_tensor(np.asarray(batch), dtype=torch.float32)

    full_identity = f"module:{identity}|weights=sha256:{module_digest(module)[:16]}|v{EXTRACTOR_VERSION}"
    return TorchExtractor(module, preprocess or as_tensor, identity=full_identity, modality=modality, device=device)


def from_callable(function: Callable[[Sequence], object], *, identity: str, modality: str = "image") -> CallableExtractor:
    """Wrap a callable ``batch -> (B, D) array``. ``identity`` must change whenever its output would."""
    if not callable(function):
        raise InputError(f"function: expected a callable, got {type(function).__name__}")
    if not isinstance(identity, str) or not identity:
        raise InputError("identity: expected a non-empty string naming the callable (used in cache keys)")
    return CallableExtractor(function, identity=identity, modality=modality)
