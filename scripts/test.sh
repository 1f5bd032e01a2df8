#!/usr/bin/env bash
# Install (if needed), then lint (ruff), type-check the public API (mypy), run the whole test suite on
# 2 processes and the timm tests in .venv-timm. Every step runs whatever the others' outcome; the exit
# status is 0 only if all passed. Arguments go to pytest (and then the timm tests are left out).
set -uo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh || exit 1
. .venv/bin/activate
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
failed=()
ruff check src tests benchmarks || failed+=("ruff")
mypy || failed+=("mypy")
python -m pytest -n 2 -rs "$@" || failed+=("pytest")   # -rs: every skip with its reason
# timm imports torchvision, which does not load beside .venv's torch: its tests run in a venv of their
# own (scripts/test_timm.sh). A run limited by pytest arguments skips them.
if [ $# -eq 0 ]; then ./scripts/test_timm.sh || failed+=("timm tests"); fi
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}" >&2; exit 1; fi
echo "all checks passed"
