"""Candidate models: feature extractors behind one spec syntax.

``load_extractor("builtin:mnv2_imagenet?image_size=64")``, ``load_extractor("hf:PATH_OR_ID")``,
``load_extractor("st:PATH_OR_ID")``, ``load_extractor("timm:resnet50")``,
``load_extractor("file:feats.npy")``, or wrap your own model with :func:`from_module` /
:func:`from_callable`. Every extractor has ``identity``, ``modality`` and
``extract(inputs, batch_size=64, progress=None) -> (n, D) float32``; those that see inside their
model also ``layer_names`` and ``extract_layers`` (:mod:`emms.models.layers`). A new packaged
backbone: a ``BackboneSpec`` in ``backbones.py``; a new model family: an extractor in ``extractors.py``
(``hub.py`` for hub families) and its scheme in ``specs.py``. Extraction over a whole dataset,
cached: :mod:`emms.compute.extract`.
"""

from __future__ import annotations

from emms.models.backbones import BACKBONES, BackboneSpec, build_backbone, preprocess_images
from emms.models.base import TorchExtractor, parameter_count
from emms.models.extractors import (BuiltinExtractor, BuiltinHeadExtractor, CallableExtractor, FileExtractor,
                                    from_callable, from_module, load_extractor)
from emms.models.hub import HFTextExtractor, HFVisionExtractor, SentenceTransformerExtractor, TimmExtractor
from emms.models.layers import parse_layers
from emms.models.specs import KNOWN_SCHEMES, ModelSpec, parse_spec

__all__ = ["BACKBONES", "BackboneSpec", "BuiltinExtractor", "BuiltinHeadExtractor", "CallableExtractor", "FileExtractor",
           "HFTextExtractor", "HFVisionExtractor", "KNOWN_SCHEMES", "ModelSpec", "SentenceTransformerExtractor",
           "TimmExtractor", "TorchExtractor", "build_backbone", "from_callable", "from_module", "load_extractor",
           "parameter_count", "parse_layers", "parse_spec", "preprocess_images"]
