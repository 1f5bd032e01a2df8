#!/usr/bin/env bash
# Install (if needed) and run the whole test suite on 2 processes, then the timm tests in .venv-timm.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
. .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -n 2 "$@"
# timm imports torchvision, which does not load beside .venv's torch: its tests run in a venv of their
# own (scripts/test_timm.sh). A run limited by pytest arguments skips them.
if [ $# -eq 0 ]; then ./scripts/test_timm.sh; fi
