"""What every candidate extractor shares: the batch loop, output pooling, cache digests and the
base classes (:class:`TorchExtractor` runs a torch module; the hooked ones also give inner layers).
The families build on these: packaged, callable and file extractors in :mod:`emms.models.extractors`,
Hugging Face, sentence-transformers and timm models in :mod:`emms.models.hub`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from emms._allocator import retain_freed_memory
from emms._validation import as_torch_device, check_positive_int
from emms.errors import InputError
from emms.models.layers import captured_outputs, layer_index


# Bump when preprocessing or pooling code changes in a way that alters features (invalidates caches).
# 2: fused normalisation and resize-before-replication (features move by float32 rounding, <= 5e-6 rel.).
EXTRACTOR_VERSION = 2
Progress = Callable[[int], None]


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
