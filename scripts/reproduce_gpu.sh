#!/usr/bin/env bash
# The paper's table for PKU-ONELab/CE-RM-4B on one GPU with vLLM, from a fresh clone (docs/gpu.md explains
# each step, the expected run time and numbers, and what to do when they differ).
#
# NOT RUN by the project: its machines have no GPU and no hub access. Every command below is parsed by
# tests/test_gpu_doc.py (cerm lines against the CLI, pip lines against pyproject.toml, python -c code
# compiled, data sources against cerm's own fixes), so the file cannot rot, but it has never run as a whole.
#
# Usage: bash scripts/reproduce_gpu.sh            (ROOT=runs/suite-ce-rm-4b by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="${ROOT:-runs/suite-ce-rm-4b}"

# 1. environment: vLLM brings its own CUDA torch, so cerm goes in without its dependencies, then the core ones
python3 -m venv .venv-gpu
. .venv-gpu/bin/activate
pip install vllm
pip install --no-deps -e .
pip install "pydantic>=2.6" "typer>=0.12" "click>=8.1" "rich>=13" "httpx>=0.27" "pyyaml>=6" "typing-extensions>=4.8" "tenacity==9.1.2" "matplotlib>=3.8" "numpy>=1.26" "pyarrow>=15" "jinja2==3.1.6" datasets
nvidia-smi

# 2. data, pinned: GitHub copies at the commits ../shared/data was taken from, HF datasets exported as parquet
git clone https://github.com/ScalerLab/JudgeBench data/src/JudgeBench && git -C data/src/JudgeBench checkout e2c52c284e735e139b3daa61c206ee208f36c461
mkdir -p data/judgebench && cp -r data/src/JudgeBench/data/*.jsonl data/judgebench/
git clone https://github.com/THU-KEG/RM-Bench data/src/RM-Bench && git -C data/src/RM-Bench checkout 73c52d7b27b361621361ec959ac6c0eb9bb7a689
mkdir -p data/rm-bench && cp -r data/src/RM-Bench/data/*_filtered.json data/rm-bench/
git clone https://github.com/Zhou-Zoey/RMB-Reward-Model-Benchmark data/src/RMB-Reward-Model-Benchmark && git -C data/src/RMB-Reward-Model-Benchmark checkout 2be3180857f2190b7ffa929d43190835627f1f4d
mkdir -p data/rmb && cp -r data/src/RMB-Reward-Model-Benchmark/RMB_dataset/* data/rmb/
mkdir -p data/reward-bench-2
python -c "import datasets; datasets.load_dataset('allenai/reward-bench-2', split='test').to_parquet('data/reward-bench-2/reward-bench-2.parquet')"
mkdir -p data/ppe
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-Human-Preference-V1', split='test').to_parquet('data/ppe/PPE-Human-Preference-V1.parquet')"
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-MMLU-Pro-Best-of-K', split='train').to_parquet('data/ppe/PPE-MMLU-Pro-Best-of-K.parquet')"
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-MATH-Best-of-K', split='train').to_parquet('data/ppe/PPE-MATH-Best-of-K.parquet')"
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-GPQA-Best-of-K', split='train').to_parquet('data/ppe/PPE-GPQA-Best-of-K.parquet')"
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-IFEval-Best-of-K', split='train').to_parquet('data/ppe/PPE-IFEval-Best-of-K.parquet')"
python -c "import datasets; datasets.load_dataset('lmarena-ai/PPE-MBPP-Plus-Best-of-K', split='train').to_parquet('data/ppe/PPE-MBPP-Plus-Best-of-K.parquet')"
mkdir -p data/reward-bench
python -c "import datasets; datasets.load_dataset('allenai/reward-bench', split='filtered').to_parquet('data/reward-bench/reward-bench.parquet')"

# 3. the plan and its cost (items, model calls, the token bound), no model loaded; names any data still missing
cerm bench suite --backend vllm --model PKU-ONELab/CE-RM-4B --data-root data --extras --chunk-size 512 --backend-arg max_model_len=32768 --out "$ROOT" --dry-run

# 4. the run: a measured ETA after the first chunk; if it stops (a kill, a reboot), rerun this same line
cerm bench suite --backend vllm --model PKU-ONELab/CE-RM-4B --data-root data --extras --chunk-size 512 --backend-arg max_model_len=32768 --out "$ROOT"

# 5. read it: ROOT/suite.md (the table beside the paper's values) and a browsable site
cerm view "$ROOT"
