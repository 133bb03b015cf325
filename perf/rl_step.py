"""One two-stage RL step on the tiny model, split into rollout / reward / log-probs / update, against a
plain baseline: ``generate`` + forward/backward of exactly the same token sequences (issue 7).

    .venv/bin/python perf/rl_step.py [--pairs 4] [--steps 3] [--old-logprobs both|rollout|recompute]
    PYTHONPATH=src VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python perf/rl_step.py --engine vllm

The tiny model is the test suite's random ~3.3M-parameter Qwen3 with SmolLM2's tokenizer (built once under
.cache/test-models; for vLLM the same shape with head dim 32, which its CPU attention needs). It never emits a
stop token, so every turn runs to its max_new_tokens: the shapes are fixed and the two sides generate the
same number of tokens. The overhead ratio is cerm's step time over the baseline's; what cerm adds is the
template layout, parsing and rewards, the reference (KL) pass and, with ``old_logprobs=recompute``, the old
log-prob pass of mini-batches 2..4 (``rollout`` takes them from the engine). ``both`` alternates the two modes
step by step on one trainer and engine, each step followed by its own baseline, so the ratios of one run
are measured under the same machine load.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from support import build_tiny_qwen3, tiny_qwen3_dir  # noqa: E402

from cerm.train.rl.config import RLConfig  # noqa: E402
from cerm.train.rl.logprobs import collate  # noqa: E402
from cerm.train.rl.trainer import RLTrainer  # noqa: E402
from cerm.types import SamplingParams  # noqa: E402

PHASES = ("time/rollout_s", "time/reward_s", "time/logprobs_s", "time/update_s", "time/step_s")


def set_old_logprobs(trainer: RLTrainer, mode: str) -> None:
    """Switch one trainer between the modes (the engine computes log-probs only when they are used)."""
    trainer.cfg = dataclasses.replace(trainer.cfg, old_logprobs=mode)
    trainer.engine.logprobs = mode == "rollout"  # type: ignore[attr-defined]


def baseline(trainer: RLTrainer) -> dict[str, float]:
    """Plain generate of the step's criteria and judgment prompts, then CE forward/backward of the same tokens."""
    cfg, scored = trainer.cfg, trainer.last_scored
    crit = [t for t in scored.trajectories if t.role == "criteria"]
    judg = [t for t in scored.trajectories if t.role != "criteria"]
    engine, keep = trainer.engine, trainer.engine.logprobs  # type: ignore[attr-defined]
    engine.logprobs = False  # a plain generate
    t0 = time.perf_counter()
    engine.generate([t.prompt_ids for t in crit], SamplingParams(cfg.temperature, cfg.top_p,
                                                                 cfg.criteria_max_new_tokens))
    engine.generate([t.prompt_ids for t in judg], SamplingParams(cfg.temperature, cfg.top_p, cfg.eval_max_new_tokens))
    t1 = time.perf_counter()
    engine.logprobs = keep
    model, opt = trainer.model, trainer.optimizer
    model.train()
    for update in trainer._minibatches(scored):
        for micro in update:
            batch = collate([scored.trajectories[i] for i in micro], trainer.pad_id)
            width = batch.completion_ids.shape[1]
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           position_ids=batch.position_ids, logits_to_keep=width + 1, use_cache=False).logits
            logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, batch.completion_ids.unsqueeze(-1))
            loss = -(logp.squeeze(-1) * batch.completion_mask).sum() / batch.completion_mask.sum()
            loss.backward()
        opt.step()
        opt.zero_grad()
    return {"generate_s": t1 - t0, "backward_s": time.perf_counter() - t1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4, help="pairs per RL step (x20 trajectories)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per mode (after one warm-up each)")
    ap.add_argument("--criteria-tokens", type=int, default=32)
    ap.add_argument("--eval-tokens", type=int, default=32)
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="vllm: run under the vLLM venv's python")
    ap.add_argument("--old-logprobs", choices=("both", "rollout", "recompute"), default="both")
    args = ap.parse_args()
    modes = ("rollout", "recompute") if args.old_logprobs == "both" else (args.old_logprobs,)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.engine == "hf":
        model, extra = tiny_qwen3_dir(), {}
    else:  # the same shape with head dim 32: vLLM's CPU attention has no kernel for 16
        model = build_tiny_qwen3("tiny-qwen3-hd32-perf", num_attention_heads=2, num_key_value_heads=1, head_dim=32)
        extra = {"engine": "vllm", "use_cpu": True, "vllm_max_model_length": 1024}
    ours: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    base: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {i}?", "chosen": str(2 * i),
                                            "rejected": str(2 * i + 1)}) + "\n" for i in range(64)))
        cfg = RLConfig(model=str(model), train_data=str(data), output_dir=str(Path(tmp) / "run"),
                       pairs_per_step=args.pairs, num_mini_batches=next(m for m in (4, 2, 1) if args.pairs % m == 0),
                       micro_batch_size=20, criteria_max_new_tokens=args.criteria_tokens,
                       eval_max_new_tokens=args.eval_tokens, max_steps=(args.steps + 1) * len(modes),
                       learning_rate=1e-4, old_logprobs=modes[0], **extra)  # type: ignore[arg-type]
        trainer = RLTrainer(cfg)
        for step in range(args.steps + 1):  # the modes alternate step by step; step 0 is the warm-up
            for mode in modes:
                set_old_logprobs(trainer, mode)
                m = trainer.step()
                b = baseline(trainer)
                if step:
                    ours[mode].append(m)
                    base[mode].append(b)
    tokens = sum(len(t.completion_ids) for t in trainer.last_scored.trajectories)
    print(f"tiny Qwen3, engine {args.engine}, {args.pairs} pairs x 20 trajectories, {tokens} generated tokens/step, "
          f"torch threads {torch.get_num_threads()}, median of {args.steps} steps per mode")
    print(f"{'old_logprobs':<12} {'rollout':>8} {'reward':>8} {'logprobs':>9} {'update':>8} {'total':>8} | "
          f"{'generate':>9} {'fwd+bwd':>8} {'total':>8} | ratio (target <= 1.25x)")
    for mode in modes:
        med = {k: statistics.median(m[k] for m in ours[mode]) for k in PHASES}
        b_gen = statistics.median(b["generate_s"] for b in base[mode])
        b_bwd = statistics.median(b["backward_s"] for b in base[mode])
        ratio = med["time/step_s"] / (b_gen + b_bwd)
        print(f"{mode:<12} {med['time/rollout_s']:>7.3f}s {med['time/reward_s'] * 1000:>6.1f}ms "
              f"{med['time/logprobs_s']:>8.3f}s {med['time/update_s']:>7.3f}s {med['time/step_s']:>7.3f}s | "
              f"{b_gen:>8.3f}s {b_bwd:>7.3f}s {b_gen + b_bwd:>7.3f}s | {ratio:.3f}x"
              + ("" if math.isfinite(ratio) and ratio <= 1.25 else "  ** above target **"))


if __name__ == "__main__":
    main()
