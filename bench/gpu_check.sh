#!/usr/bin/env bash
# The GPU check in one command (see bench/gpu_check.py and docs/performance.md):
#   bash bench/gpu_check.sh              # one CUDA GPU, no internet: writes bench/results/gpu_check.json
#   bash bench/gpu_check.sh --cpu-tiny   # its CPU twin (tiny models), as the tests run it
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
exec python bench/gpu_check.py "$@"
