"""Hub model families as candidates: Hugging Face vision and text models (``hf:``), sentence-transformers
(``st:``) and timm (``timm:``), with their pooling and weight digests. Built on :mod:`emms.models.base`.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emms._validation import as_torch_device
from emms.errors import EmmsWarning, InputError, ResourceError
from emms.models.backbones import BackboneSpec, as_uint8_images, preprocess_images
from emms.models.base import (EXTRACTOR_VERSION, TorchExtractor, _check_image_size, _chosen_layers, _HookedExtractor,
                              _LayeredExtractor,
                              _text_digest, module_digest)
from emms.models.layers import layer_index

TOKEN_POOLINGS = ("mean", "cls", "mean_nospecial")
_HF_POOLINGS = ("pooler", *TOKEN_POOLINGS)


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
