#!/usr/bin/env bash
# Create or update .venv-timm and run tests/test_timm.py there (the timm: model path, on real timm models
# built locally; nothing is downloaded at test time).
# A venv of its own: timm imports torchvision, and PyPI's torchvision does not load beside the torch
# 2.13.0 CPU wheel of .venv. torch 2.14.1 + torchvision 0.29.1 is a pair that loads (a CUDA build,
# about 5.5 GB in the venv, that runs on the CPU); on this project's machines pip takes both from the
# local wheel store. The package itself is installed without its [torch] extra (transformers etc.):
# the timm tests need only torch, timm and the core dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-timm/bin/python ] || "$PY" -m venv .venv-timm
.venv-timm/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" timm
.venv-timm/bin/python -m pip install -q -e ".[test]"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} HF_HUB_OFFLINE=1
.venv-timm/bin/python -m pytest -q tests/test_timm.py "$@"
