#!/usr/bin/env bash
# The main job on the embedded model: Best-of-N on a few Arena-Hard prompts, printing the chosen answer,
# the scores and the criteria. SmolLM2-135M judges at chance: this proves the plumbing, not quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh "hf"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/cerm demo --backend hf --model embedded --cache .cache/demo-cache.sqlite \
  --criteria-max-new-tokens 192 --eval-max-new-tokens 160 --prompts 2 --n 4 "$@"
