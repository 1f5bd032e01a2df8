"""Model spec strings: ``SCHEME:TARGET[?key=value&key=value]``.

Schemes: ``builtin:NAME`` (packaged backbones), ``hf:ID_OR_PATH`` (Hugging Face transformers),
``st:ID_OR_PATH`` (sentence-transformers), ``timm:NAME`` (optional extra) and ``file:PATH.npy``
(precomputed features). Options after ``?`` are per scheme, e.g.
``builtin:mnv2_imagenet?image_size=64&pretrained=false``, ``hf:bert-base-uncased?max_length=128&layer=-2``,
``st:all-MiniLM-L6-v2?pooling=mean_nospecial`` or ``timm:resnet18?checkpoint=/path/weights.safetensors``.
``layer`` (an index into the extractor's ``layer_names``) and ``pooling`` are checked by the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emms.errors import InputError

KNOWN_SCHEMES = {
    "builtin": "a packaged offline backbone, e.g. builtin:mnv2_imagenet",
    "hf": "a Hugging Face model id or local directory, e.g. hf:google/vit-base-patch16-224",
    "st": "a sentence-transformers model id or directory, e.g. st:sentence-transformers/all-MiniLM-L6-v2",
    "timm": "a timm model name (needs timm and torchvision), e.g. timm:resnet50",
    "file": "precomputed features in a .npy file with one row per input, e.g. file:feats.npy",
}

# option name -> type, per scheme
SCHEME_OPTIONS: dict[str, dict[str, type]] = {
    "builtin": {"image_size": int, "pretrained": bool, "seed": int, "layer": int, "pooling": str},
    "hf": {"modality": str, "max_length": int, "revision": str, "layer": int, "pooling": str},
    "st": {"max_length": int, "layer": int, "pooling": str},
    "timm": {"image_size": int, "pretrained": bool, "seed": int, "checkpoint": str, "layer": int, "pooling": str},
    "file": {"modality": str},
}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed spec: ``scheme``, ``target`` (name, id or path) and typed ``options``."""

    scheme: str
    target: str
    options: dict[str, object] = field(default_factory=dict)


def _known() -> str:
    return "; ".join(f"{scheme}: ({text})" for scheme, text in KNOWN_SCHEMES.items())


def _coerce(scheme: str, key: str, value: object) -> object:
    allowed = SCHEME_OPTIONS[scheme]
    if key not in allowed:
        names = ", ".join(allowed) or "none"
        raise InputError(f"spec: option {key!r} is not known for {scheme}: models (known options: {names})")
    kind = allowed[key]
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise InputError(f"spec: option {key!r} expects true or false, got {value!r}")
    if kind is int:
        if isinstance(value, bool):
            raise InputError(f"spec: option {key!r} expects an integer, got {value!r}")
        try:
            return int(str(value))
        except ValueError:
            raise InputError(f"spec: option {key!r} expects an integer, got {value!r}") from None
    return str(value)


def parse_spec(spec: str, **options: object) -> ModelSpec:
    """Parse ``spec`` and merge keyword ``options`` (they override options in the string)."""
    if not isinstance(spec, str) or ":" not in spec:
        raise InputError(f"spec: expected SCHEME:TARGET, got {spec!r}; known schemes: {_known()}")
    scheme, rest = spec.split(":", 1)
    scheme = scheme.strip().lower()
    if scheme not in KNOWN_SCHEMES:
        raise InputError(f"spec: unknown scheme {scheme!r} in {spec!r}; known schemes: {_known()}")
    target, _, query = rest.partition("?")
    target = target.strip()
    if not target:
        raise InputError(f"spec: {spec!r} names no model after '{scheme}:'")
    parsed: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"spec: option {item!r} in {spec!r} is not of the form key=value")
        parsed[key.strip()] = _coerce(scheme, key.strip(), value.strip())
    for key, value in options.items():
        if value is not None:
            parsed[key] = _coerce(scheme, key, value)
    return ModelSpec(scheme, target, parsed)
