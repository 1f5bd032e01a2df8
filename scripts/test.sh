#!/usr/bin/env bash
# Install (if needed) and run the whole test suite on 2 processes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
. .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -n 2 "$@"
