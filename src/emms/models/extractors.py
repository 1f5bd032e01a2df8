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
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pickle
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emms._allocator import retain_freed_memory
from emms._io import cached_file_sha256
from emms._validation import as_torch_device, check_positive_int
from emms.errors import EmmsWarning, InputError, ResourceError
from emms.models.backbones import (BackboneSpec, as_uint8_images, build_backbone, get_backbone_spec,
                                   preprocess_images, weights_path)
from emms.models.layers import captured_outputs, layer_index
from emms.models.specs import parse_spec

# Bump when preprocessing or pooling code changes in a way that alters features (invalidates caches).
# 2: fused normalisation and resize-before-replication (features move by float32 rounding, <= 5e-6 rel.).
EXTRACTOR_VERSION = 2
Progress = Callable[[int], None]
TOKEN_POOLINGS = ("mean", "cls", "mean_nospecial")
_HF_POOLINGS = ("pooler", *TOKEN_POOLINGS)


def module_digest(module: nn.Module) -> str:
    """sha256 (hex) over a module's state dict: names, dtypes, shapes and raw tensor bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def _text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _n_inputs(inputs: object) -> int:
    try:
        n = len(inputs)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(f"inputs: expected a sequence or array of inputs, got {type(inputs).__name__}") from None
    if n == 0:
        raise InputError("inputs: expected at least one input, got none")
    return n


_FLUSH_ROWS = 8192


def _run_batches(inputs: Sequence, batch_size: int, progress: Progress | None,
                 run: Callable[[Sequence], tuple[np.ndarray | torch.Tensor, ...]]) -> tuple[np.ndarray, ...]:
    """Apply ``run`` to consecutive slices of ``inputs`` and stack each of its outputs row-wise.

    Outputs may be numpy arrays or tensors (on any device); tensors are gathered and copied to
    float32 numpy every ~8k rows, so an accelerator is not stalled by a host sync after each batch.
    The batches run inside :func:`emms._allocator.retain_freed_memory`: glibc keeps one batch's
    freed activations for the next instead of returning them and faulting them in again.
    """
    n, step = _n_inputs(inputs), check_positive_int(batch_size, "batch_size")
    outputs: list[np.ndarray] = []
    pending: list[tuple[int, int, tuple]] = []

    def flush() -> None:
        if not pending:
            return
        first, last = pending[0][0], pending[-1][1]
        for k, out in enumerate(outputs):
            parts = [results[k] for _, _, results in pending]
            if isinstance(parts[0], torch.Tensor):
                out[first:last] = torch.cat(parts).float().cpu().numpy()
            else:
                out[first:last] = np.concatenate(parts)
        pending.clear()

    with retain_freed_memory():
        for start in range(0, n, step):
            stop = min(start + step, n)
            results = run(inputs[start:stop])
            if not outputs:
                outputs = [np.empty((n,) + tuple(r.shape[1:]), dtype=np.float32) for r in results]
            pending.append((start, stop, results))
            if stop - pending[0][0] >= _FLUSH_ROWS:
                flush()
            if progress is not None:
                progress(stop - start)
        flush()
    return tuple(outputs)


def _pool_output(output: object, name: str) -> torch.Tensor:
    """A module's output -> (B, D): 2-D kept, (B, C, H, W) averaged over H, W, (B, T, D) over T."""
    if not isinstance(output, torch.Tensor):
        output = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
    if not isinstance(output, torch.Tensor):
        raise InputError(f"{name}: expected the module to return a tensor, got {type(output).__name__}")
    if output.ndim == 2:
        return output
    if output.ndim == 4:
        return output.mean((2, 3))
    if output.ndim == 3:
        return output.mean(1)
    raise InputError(f"{name}: expected module output (B, D), (B, T, D) or (B, C, H, W), got shape {tuple(output.shape)}")


def _as_texts(inputs: object) -> list[str]:
    items = list(inputs) if isinstance(inputs, (list, tuple, np.ndarray)) else None
    if items is None or not all(isinstance(t, str) for t in items):
        raise InputError("inputs: a text model expects a list of strings")
    return items


def _as_rgb_list(inputs: object) -> list[np.ndarray]:
    """Images as a list of uint8 (H, W, 3) arrays, the form Hugging Face processors accept."""
    batch = as_uint8_images(inputs, "inputs")
    out = []
    for img in batch:
        img = img[..., :3]
        out.append(np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img)
    return out


def _check_image_size(image_size: object) -> None:
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise InputError(f"image_size: expected an integer >= 8, got {image_size!r}")


def parameter_count(extractor: object) -> int | None:
    """Parameters of a candidate's torch module as loaded (None when it has none: features files, ONNX)."""
    module = getattr(extractor, "module", None) or getattr(extractor, "model", None)
    parameters = getattr(module, "parameters", None)
    return int(sum(p.numel() for p in parameters())) if callable(parameters) else None


class _Extractor:
    """Shared batching; subclasses implement ``_features(batch) -> (b, D)``."""

    identity: str
    modality: str

    def extract(self, inputs: Sequence, batch_size: int = 64, progress: Progress | None = None) -> np.ndarray:
        """Features (n, D) float32 for ``inputs``, computed ``batch_size`` at a time."""
        return _run_batches(inputs, batch_size, progress, lambda batch: (self._features(batch),))[0]

    def _features(self, batch: Sequence) -> np.ndarray | torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r})"


class _LayeredExtractor(_Extractor):
    """An extractor that sees inside its model: ``layer_names`` and ``extract_layers`` (one pass, many layers).

    Subclasses implement ``_layers(batch, indices) -> tuple`` of pooled (B, D_k) features, one per index.
    """

    layer_names: tuple[str, ...]

    def extract_layers(self, inputs: Sequence, layers: Sequence[int], batch_size: int = 64,
                       progress: Progress | None = None) -> tuple[np.ndarray, ...]:
        """Pooled features (n, D_k) float32 of each of ``layers`` (indices into ``layer_names``), from one pass per batch."""
        index = self._indices(layers)
        return _run_batches(inputs, batch_size, progress, lambda batch: self._layers(batch, index))

    def _indices(self, layers: Sequence[int]) -> tuple[int, ...]:
        """``layers`` as non-negative indices into ``layer_names``; InputError when out of range or none."""
        index = tuple(layer_index(int(k), len(self.layer_names), self.identity) for k in layers)
        if not index:
            raise InputError("layers: expected at least one layer index")
        return index

    def _layers(self, batch: Sequence, indices: tuple[int, ...]) -> tuple[torch.Tensor, ...]:  # pragma: no cover
        raise NotImplementedError


class TorchExtractor(_Extractor):
    """A torch module plus a preprocessing function: batch of inputs -> tensor -> (B, D)."""

    def __init__(self, module: nn.Module, preprocess: Callable[[Sequence], torch.Tensor], *, identity: str,
                 modality: str = "image", device: str | torch.device = "cpu") -> None:
        self.device = as_torch_device(device)
        self.module = module.to(self.device).eval()
        self.preprocess = preprocess
        self.identity = identity
        self.modality = modality

    def _forward(self, batch: Sequence) -> torch.Tensor:
        with torch.inference_mode():  # preprocessing too: no autograd bookkeeping on any op of a batch
            x = self.preprocess(batch)
            if not isinstance(x, torch.Tensor):
                raise InputError(f"preprocess: expected it to return a torch.Tensor, got {type(x).__name__}")
            return _pool_output(self.module(x.to(self.device, non_blocking=True)), "module output")

    def _features(self, batch: Sequence) -> torch.Tensor:
        return self._forward(batch)


class _HookedExtractor(TorchExtractor, _LayeredExtractor):
    """A torch module whose layers are submodules (``layer_names``, "output" = the module's own
    pooled output), read by forward hooks during one forward pass."""

    layer_names: tuple[str, ...]

    def _outputs(self, batch: Sequence, paths: Sequence[str], probs: bool = False) -> tuple[torch.Tensor, ...]:
        """One forward pass: the pooled output of each module in ``paths`` ("output": the model's), then
        the source-head probabilities of the model's output when ``probs``."""
        with torch.inference_mode():
            x = self.preprocess(batch).to(self.device, non_blocking=True)
            with captured_outputs(self.module, [p for p in paths if p != "output"], _pool_output) as inside:
                output = _pool_output(self.module(x), "module output")
            found = tuple(output if p == "output" else inside[p] for p in paths)
            return (*found, self.module.source_probs(output)) if probs else found

    def _forward(self, batch: Sequence) -> torch.Tensor:
        return self._outputs(batch, self.layer_names[-1:])[0]

    def _layers(self, batch: Sequence, indices: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        return self._outputs(batch, [self.layer_names[k] for k in indices])


def _chosen_layers(names: tuple[str, ...], layer: int | None, model: str) -> tuple[tuple[str, ...], str]:
    """``names`` up to ``layer`` (all without one) and the identity part naming the chosen layer."""
    if layer is not None:
        names = names[:layer_index(layer, len(names), model) + 1]
    return names, ("" if names[-1] == "output" else f"|layer={names[-1]}")


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


class _HFExtractor(TorchExtractor, _LayeredExtractor):
    """Shared by the Hugging Face extractors: hidden states as layers (``hidden_states.0`` = embeddings).

    Layer features pool each hidden state with ``pooling`` when it is a token pooling, else with
    ``mean`` (a model's pooler/projection output exists for its last layer only). With ``layer=k`` the
    layers after k are dropped from ``layer_names``.
    """

    layer: int | None
    pooling: str

    @property
    def layer_names(self) -> tuple[str, ...]:
        if self._n_hidden is None:  # counted once, from one tiny input
            self._n_hidden = len(self._hidden(self._probe_input)[0])
        names = tuple(f"hidden_states.{k}" for k in range(self._n_hidden))
        return names if self.layer is None else names[:layer_index(self.layer, len(names), self.identity) + 1]

    @property
    def layer_pooling(self) -> str:
        """How each hidden state is pooled into layer features."""
        return self.pooling if self.pooling in TOKEN_POOLINGS else "mean"

    def _hidden(self, batch: Sequence) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None, torch.Tensor | None]:
        """(hidden states, attention mask or None, special-token mask or None) of one forward pass."""
        raise NotImplementedError  # pragma: no cover

    def _layers(self, batch: Sequence, indices: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode():
            hidden, mask, special = self._hidden(batch)
            return tuple(_pool_tokens(hidden[k], mask, self.layer_pooling, None, special) for k in indices)


class HFVisionExtractor(_HFExtractor):
    """A Hugging Face vision model; preprocessing from its own image processor config.

    Features: the model's ``pooler_output`` (default when its pooler weights were loaded), the
    first token (``cls``, default for ViT-like models without loaded pooler weights) or the mean
    over tokens/positions (``mean``, default for a chosen ``layer`` = index into hidden_states).
    Models with ``get_image_features`` (CLIP, SigLIP) give the projected image embedding.
    """

    _probe_input = np.zeros((1, 32, 32, 3), dtype=np.uint8)

    def __init__(self, model: nn.Module, processor, *, identity: str, layer: int | None, pooling: str,
                 device: str | torch.device) -> None:
        self.processor = processor
        self.layer = layer
        self.pooling = pooling
        self.joint = hasattr(model, "get_image_features")
        self._n_hidden: int | None = None
        super().__init__(model, self._pixels, identity=identity, modality="image", device=device)

    def _pixels(self, batch: Sequence) -> torch.Tensor:
        return self.processor(images=_as_rgb_list(batch), return_tensors="pt")["pixel_values"]

    def _hidden(self, batch: Sequence) -> tuple[tuple[torch.Tensor, ...], None, None]:
        tower = self.module.vision_model if self.joint else self.module
        with torch.inference_mode():
            return tower(pixel_values=self._pixels(batch).to(self.device), output_hidden_states=True).hidden_states, None, None

    def _forward(self, batch: Sequence) -> torch.Tensor:
        pixels = self._pixels(batch).to(self.device)
        with torch.inference_mode():
            if self.joint and self.layer is None:
                out = self.module.get_image_features(pixel_values=pixels)
                return out if isinstance(out, torch.Tensor) else out.pooler_output
            tower = self.module.vision_model if self.joint else self.module
            out = tower(pixel_values=pixels, output_hidden_states=self.layer is not None)
            hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
            return _pool_tokens(hidden, None, self.pooling, getattr(out, "pooler_output", None))


class HFTextExtractor(_HFExtractor):
    """A Hugging Face text encoder: masked mean of token states (or CLS / pooler output, or the mean
    without special tokens, ``mean_nospecial``)."""

    _probe_input = ["a"]

    def __init__(self, model: nn.Module, tokenizer, *, identity: str, layer: int | None, pooling: str,
                 max_length: int, device: str | torch.device) -> None:
        self.tokenizer = tokenizer
        self.layer = layer
        self.pooling = pooling
        self.max_length = max_length
        self.joint = hasattr(model, "get_text_features")
        self._n_hidden: int | None = None
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        super().__init__(model, self._tokens, identity=identity, modality="text", device=device)

    def _tokens(self, batch: Sequence):
        return self.tokenizer(_as_texts(batch), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def _run(self, batch: Sequence, hidden_states: bool):
        """(model output, token dict, special-token mask) of one forward pass."""
        tokens = {k: v.to(self.device) for k, v in self._tokens(batch).items()}
        special = _special_tokens(tokens["input_ids"], self.tokenizer)
        tower = self.module.text_model if self.joint else self.module
        return tower(**tokens, output_hidden_states=hidden_states), tokens, special

    def _hidden(self, batch: Sequence) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None, torch.Tensor]:
        with torch.inference_mode():
            out, tokens, special = self._run(batch, True)
            return out.hidden_states, tokens.get("attention_mask"), special

    def _forward(self, batch: Sequence) -> torch.Tensor:
        with torch.inference_mode():
            if self.joint and self.layer is None:
                tokens = {k: v.to(self.device) for k, v in self._tokens(batch).items()}
                out = self.module.get_text_features(input_ids=tokens["input_ids"],
                                                    attention_mask=tokens.get("attention_mask"))
                return out if isinstance(out, torch.Tensor) else out.pooler_output
            out, tokens, special = self._run(batch, self.layer is not None)
            hidden = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
            return _pool_tokens(hidden, tokens.get("attention_mask"), self.pooling,
                                getattr(out, "pooler_output", None), special)


def _special_tokens(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """True where ``input_ids`` holds one of the tokenizer's special tokens ([CLS], [SEP], <s>, padding, ...)."""
    ids = torch.tensor(sorted(set(getattr(tokenizer, "all_special_ids", []) or [])), dtype=input_ids.dtype,
                       device=input_ids.device)
    return torch.isin(input_ids, ids)


def _pool_tokens(hidden: torch.Tensor, mask: torch.Tensor | None, pooling: str,
                 pooler_output: torch.Tensor | None, special: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) tokens or (B, C, H, W) maps -> (B, D) by ``pooler``, ``cls``, (masked) ``mean`` or
    ``mean_nospecial`` (masked mean without the ``special`` tokens, as transformer-ranker pools)."""
    if pooling == "pooler":
        return pooler_output.flatten(1)
    if hidden.ndim == 4:  # convolutional maps: CLS is meaningless, average over positions
        return hidden.mean((2, 3))
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "mean_nospecial" and special is not None:
        mask = ~special if mask is None else mask.bool() & ~special
    if mask is None:
        return hidden.mean(1)
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class SentenceTransformerExtractor(_LayeredExtractor):
    """A sentence-transformers model (its own pooling and normalisation).

    Layers: the hidden states of its transformer module (``hidden_states.0`` = embeddings), each
    passed through the model's own modules after the transformer (pooling, dense, normalisation),
    so the last layer equals ``encode``. ``pooling`` (``mean``, ``cls``, ``mean_nospecial``) replaces
    the model's pooling module; ``layer=k`` makes hidden state k the feature.
    """

    modality = "text"

    def __init__(self, target: str, *, max_length: int | None, layer: int | None = None, pooling: str | None = None,
                 device: str | torch.device) -> None:
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ResourceError("st: models need sentence-transformers: pip install sentence-transformers") from None
        if pooling not in (None, *TOKEN_POOLINGS):
            raise InputError(f"pooling: expected one of {', '.join(TOKEN_POOLINGS)} for st: models, got {pooling!r}")
        self.device = as_torch_device(device)
        try:
            self.model = SentenceTransformer(target, device=str(self.device))
        except (OSError, ValueError) as exc:
            raise ResourceError(f"spec: cannot load sentence-transformers model {target!r} ({exc})") from exc
        self.model.eval()
        if max_length is not None:
            self.model.max_seq_length = max_length
        self.layer, self.pooling = layer, pooling
        tokenizer = getattr(self.model, "tokenizer", None)
        chosen = "" if layer is None and pooling is None else f"|layer={layer}|pool={pooling or 'model'}"
        self.identity = (f"st:{_display_name(target)}|weights=sha256:{module_digest(self.model)[:16]}"
                         f"|modules={_text_digest(repr(self.model))}|tokenizer={_tokenizer_digest(tokenizer)}"
                         f"{chosen}|v{EXTRACTOR_VERSION}")
        modules = list(self.model)
        transformer = modules[0]
        if not hasattr(transformer, "auto_model"):
            self._layered = False
            names = ("output",)
        else:
            self._layered = True
            names = tuple(f"hidden_states.{k}" for k in range(transformer.auto_model.config.num_hidden_layers + 1))
        if not self._layered and (layer is not None or pooling is not None):
            raise InputError(f"layer/pooling: {target!r} has no Hugging Face transformer module to take them from")
        if layer is not None:
            names = names[:layer_index(layer, len(names), self.identity) + 1]
        self.layer_names = names
        # after the transformer: the model's pooling and what follows it, or ours and what follows the pooling
        after = modules[1:]
        if pooling is not None:
            after = after[next((i + 1 for i, m in enumerate(after) if type(m).__name__ == "Pooling"), 0):]
        self._after = after

    def _features(self, batch: Sequence) -> np.ndarray | torch.Tensor:
        if self.layer is None and self.pooling is None:
            texts = _as_texts(batch)
            out = self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True, show_progress_bar=False)
            return np.asarray(out, dtype=np.float32)
        return self._layers(batch, (len(self.layer_names) - 1,))[0]

    def _layers(self, batch: Sequence, indices: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        if not self._layered:
            return (torch.from_numpy(self._features(batch)),)
        texts = _as_texts(batch)
        tokenize = getattr(self.model, "preprocess", None) or self.model.tokenize
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in tokenize(texts).items()}
        tokenizer = self.model.tokenizer
        with torch.inference_mode():
            inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in features}
            hidden = self.model[0].auto_model(**inputs, output_hidden_states=True, return_dict=True).hidden_states
            special = _special_tokens(features["input_ids"], tokenizer)
            out = []
            for k in indices:
                step = {**features, "token_embeddings": hidden[k]}
                if self.pooling is not None:
                    step["sentence_embedding"] = _pool_tokens(hidden[k], features["attention_mask"], self.pooling,
                                                              None, special)
                for module in self._after:
                    step = module(step)
                out.append(step["sentence_embedding"])
            return tuple(out)


def _display_name(target: str) -> str:
    """A model id as given, or a local directory by its name (the digest pins the content)."""
    path = Path(target).expanduser()
    return path.name if path.exists() else target


def _tokenizer_digest(tokenizer) -> str:
    if tokenizer is None:
        return "none"
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return _text_digest(text)


def _load_hf(target: str, options: dict, layer: int | None, pooling: str | None, device) -> TorchExtractor:
    try:
        import transformers
    except ImportError:
        raise ResourceError("hf: models need transformers: pip install transformers") from None
    revision = options.get("revision")
    try:
        model, info = transformers.AutoModel.from_pretrained(target, revision=revision, output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ResourceError(f"spec: cannot load Hugging Face model {target!r} ({exc})") from exc
    missing = sorted(info.get("missing_keys", []))
    pooler_missing = any(k.startswith("pooler.") or ".pooler." in k for k in missing)
    other_missing = [k for k in missing if not (k.startswith("pooler.") or ".pooler." in k)]
    if other_missing:
        warnings.warn(f"hf:{target}: {len(other_missing)} weight(s) were not in the checkpoint and are randomly "
                      f"initialised (e.g. {other_missing[0]})", EmmsWarning, stacklevel=3)
    modality = options.get("modality")
    if modality not in (None, "image", "text"):
        raise InputError(f"spec: option 'modality' expects image or text, got {modality!r}")
    processor = None
    if modality in (None, "image"):
        try:
            processor = transformers.AutoImageProcessor.from_pretrained(target, revision=revision)
            modality = "image"
        except (OSError, ValueError, KeyError) as exc:
            if modality == "image":
                raise ResourceError(f"spec: {target!r} has no image processor config ({exc})") from exc
            modality = "text"
    if layer is not None:
        default_pooling = "mean"
    elif hasattr(model, "get_image_features") or hasattr(model, "get_text_features"):
        default_pooling = "pooler"
    elif modality == "text":
        default_pooling = "mean"
    else:
        has_pooler = getattr(model, "pooler", None) is not None and not pooler_missing
        default_pooling = "pooler" if has_pooler else "cls"
    pooling = pooling or default_pooling
    if pooling not in _HF_POOLINGS:
        raise InputError(f"pooling: expected one of {', '.join(_HF_POOLINGS)} for hf: models, got {pooling!r}")
    if pooling == "mean_nospecial" and modality == "image":
        raise InputError("pooling: 'mean_nospecial' leaves out a tokenizer's special tokens; it is for text models")
    if pooling == "pooler" and layer is not None:
        raise InputError("pooling: 'pooler' uses the model's final pooled output; with a layer use 'mean' or 'cls'")
    weights = f"sha256:{module_digest(model)[:16]}"
    common = f"hf:{_display_name(target)}|weights={weights}|layer={layer}|pool={pooling}"
    if modality == "image":
        identity = f"{common}|image|processor={_text_digest(processor.to_json_string())}|v{EXTRACTOR_VERSION}"
        return HFVisionExtractor(model, processor, identity=identity, layer=layer, pooling=pooling, device=device)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(target, revision=revision)
    except (OSError, ValueError, KeyError) as exc:
        raise ResourceError(f"spec: {target!r} has neither an image processor nor a tokenizer ({exc})") from exc
    limit = getattr(tokenizer, "model_max_length", 512)
    max_length = int(options.get("max_length") or min(limit if isinstance(limit, int) else 512, 512))
    identity = (f"{common}|text|tokenizer={_tokenizer_digest(tokenizer)}|max_length={max_length}"
                f"|v{EXTRACTOR_VERSION}")
    return HFTextExtractor(model, tokenizer, identity=identity, layer=layer, pooling=pooling, max_length=max_length,
                           device=device)


class TimmExtractor(_HookedExtractor):
    """A timm model without its classifier (``num_classes=0``: the pooled pre-logits features).

    Built by ``load_extractor("timm:NAME")``. Weights: timm's pretrained ones (from its Hugging Face
    hub cache; timm downloads them when the network allows), ``pretrained=false`` (random init
    drawn from ``seed``) or ``checkpoint=PATH`` (a state dict of the same architecture, ``.pth``,
    ``.pt``, ``.bin`` or ``.safetensors``; a classifier in it is dropped). Preprocessing follows
    ``timm.data.resolve_data_config``: input size, mean, std and interpolation (bilinear or
    bicubic). Images are squashed to the size, not cropped (timm's ``crop_pct`` is not applied), as
    for every other candidate. Models with a fixed input size (ViTs) keep their native size.
    ``layer_names``: the modules timm lists in the model's ``feature_info`` (stages or blocks; token
    outputs are averaged over tokens, maps over positions), then ``"output"``; ``layer=k`` makes
    layer k the feature.
    """

    def __init__(self, target: str, *, image_size: int | None = None, pretrained: bool | None = None, seed: int = 0,
                 checkpoint: str | Path | None = None, layer: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        if importlib.util.find_spec("timm") is None:
            raise ResourceError("timm: models need the optional packages timm and torchvision: "
                                "pip install timm torchvision")
        import timm
        from timm.data import resolve_data_config

        _check_image_size(image_size)
        if checkpoint is not None and pretrained is not None:
            raise InputError("spec: give either 'checkpoint' or 'pretrained' for a timm: model, not both")
        if ":" not in target and not timm.is_model(target):  # hf-hub:ID and local-dir:PATH go to timm as they are
            raise InputError(f"spec: unknown timm model {target!r} (timm.list_models() lists the known names)")
        from_hub = checkpoint is None and pretrained is not False
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                model = timm.create_model(target, pretrained=from_hub, num_classes=0)
            except (RuntimeError, OSError, ValueError) as exc:  # offline: huggingface_hub's LocalEntryNotFoundError
                raise ResourceError(f"spec: cannot create timm model {target!r} with pretrained weights "
                                    f"({type(exc).__name__}: {exc}); offline, use pretrained=false or "
                                    "checkpoint=PATH") from exc
        if checkpoint is not None:
            _load_timm_checkpoint(model, Path(checkpoint).expanduser(), target)
        config = resolve_data_config(model=model)
        channels, native = int(config["input_size"][0]), int(config["input_size"][-1])
        interpolation = "bicubic" if config.get("interpolation") == "bicubic" else "bilinear"
        fixed = bool(model.pretrained_cfg.get("fixed_input_size", False))
        self.spec = BackboneSpec(name=f"timm:{target}", architecture=target, feature_dim=model.num_features,
                                 native_size=native, in_channels=channels, mean=tuple(config["mean"]),
                                 std=tuple(config["std"]), source_task=str(model.pretrained_cfg.get("tag", "")),
                                 package="timm", weights_module="timm", weights_file="", fixed_size=fixed,
                                 interpolation=interpolation)
        self.image_size = native if image_size is None or fixed else image_size
        stages = tuple(info["module"] for info in getattr(model, "feature_info", None) or ()
                       if isinstance(info, dict) and info.get("module"))
        self.layer_names, chosen = _chosen_layers((*stages, "output"), layer, f"timm:{target}")
        identity = (f"timm:{target}|weights=sha256:{module_digest(model)[:16]}|size={self.image_size}|ch={channels}"
                    f"|mean={self.spec.mean}|std={self.spec.std}|resize={interpolation}-antialias|pool=model{chosen}"
                    f"|v{EXTRACTOR_VERSION}")
        dev = as_torch_device(device)
        super().__init__(model, lambda batch: preprocess_images(batch, self.spec, self.image_size, dev),
                         identity=identity, modality="image", device=dev)


def _load_timm_checkpoint(model: nn.Module, path: Path, target: str) -> None:
    """Load a state dict file into a timm model built with ``num_classes=0``; every model weight must be in it."""
    from timm.models import load_state_dict

    if not path.is_file():
        raise InputError(f"spec: option 'checkpoint': file not found: {path}")
    try:
        state = load_state_dict(str(path))  # safetensors or torch (weights_only), EMA / 'state_dict' unwrapped
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as exc:
        raise ResourceError(f"spec: cannot read timm checkpoint {path} ({type(exc).__name__}: {exc})") from exc
    heads = model.pretrained_cfg.get("classifier") or ()
    heads = (heads,) if isinstance(heads, str) else tuple(heads)
    state = {k: v for k, v in state.items() if not any(k.startswith(f"{h}.") for h in heads)}
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ResourceError(f"spec: checkpoint {path.name} does not fit timm model {target!r} ({exc})") from exc
    if result.missing_keys or result.unexpected_keys:
        missing, unexpected = result.missing_keys, result.unexpected_keys
        raise ResourceError(f"spec: checkpoint {path.name} does not fit timm model {target!r}: "
                            f"{len(missing)} weight(s) missing (e.g. {missing[:2]}), "
                            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]})")


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
