#!/usr/bin/env bash
# Install (if needed) and run the main job on the embedded default: rank the nine packaged
# backbones on the bundled Fashion-MNIST sample with the offline text encoders.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
emms demo "$@"
