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
are measured under the same machine load. Each mode prints two rows: wall-clock seconds (the trainer's
``time/*`` metrics) and this process's CPU seconds of the same phases (steadier on a shared machine, where
other processes' load inflates wall time). The ratio is the median over steps of step / its own baseline.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from support import build_tiny_qwen3, tiny_qwen3_dir  # noqa: E402

from cerm.train.rl import trainer as trainer_module  # noqa: E402
from cerm.train.rl.config import RLConfig  # noqa: E402
from cerm.train.rl.logprobs import collate  # noqa: E402
from cerm.train.rl.trainer import RLTrainer  # noqa: E402
from cerm.types import SamplingParams  # noqa: E402

WALL = ("time/rollout_s", "time/logprobs_s", "time/update_s", "time/step_s")  # the trainer's metrics
CPU_PHASES = ("cpu_rollout_s", "cpu_logprobs_s", "cpu_update_s", "cpu_step_s")


def set_old_logprobs(trainer: RLTrainer, mode: str) -> None:
    """Switch one trainer between the modes (the engine computes log-probs only when they are used)."""
    trainer.cfg = dataclasses.replace(trainer.cfg, old_logprobs=mode)
    trainer.engine.logprobs = mode == "rollout"  # type: ignore[attr-defined]


CPU: dict[str, float] = {}  # this process's CPU seconds per phase of the current step


def cpu_timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            CPU[name] = CPU.get(name, 0.0) + time.process_time() - start
    return timed


def instrument(trainer: RLTrainer) -> None:
    """CPU time of the trainer's phases next to its wall-clock ``time/*`` metrics."""
    trainer_module.rollout_pairs = cpu_timed("rollout", trainer_module.rollout_pairs)  # type: ignore[assignment]
    trainer._reference_logprobs = cpu_timed("logprobs", trainer._reference_logprobs)  # type: ignore[method-assign]
    trainer._update = cpu_timed("update", trainer._update)  # type: ignore[method-assign]


def baseline(trainer: RLTrainer) -> dict[str, float]:
    """Plain generate of the step's criteria and judgment prompts, then CE forward/backward of the same tokens."""
    cfg, scored = trainer.cfg, trainer.last_scored
    crit = [t for t in scored.trajectories if t.role == "criteria"]
    judg = [t for t in scored.trajectories if t.role != "criteria"]
    engine, keep = trainer.engine, trainer.engine.logprobs  # type: ignore[attr-defined]
    engine.logprobs = False  # a plain generate
    t0, c0 = time.perf_counter(), time.process_time()
    engine.generate([t.prompt_ids for t in crit], SamplingParams(cfg.temperature, cfg.top_p,
                                                                 cfg.criteria_max_new_tokens))
    engine.generate([t.prompt_ids for t in judg], SamplingParams(cfg.temperature, cfg.top_p, cfg.eval_max_new_tokens))
    t1, c1 = time.perf_counter(), time.process_time()
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
    return {"generate_s": t1 - t0, "backward_s": time.perf_counter() - t1,
            "cpu_generate_s": c1 - c0, "cpu_backward_s": time.process_time() - c1}


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
        instrument(trainer)
        for step in range(args.steps + 1):  # the modes alternate step by step; step 0 is the warm-up
            for mode in modes:
                set_old_logprobs(trainer, mode)
                CPU.clear()
                c0 = time.process_time()
                m = trainer.step()
                cpu = {f"cpu_{k}_s": v for k, v in CPU.items()} | {"cpu_step_s": time.process_time() - c0}
                b = baseline(trainer)
                if step:
                    ours[mode].append(m | cpu)
                    base[mode].append(b)
    tokens = sum(len(t.completion_ids) for t in trainer.last_scored.trajectories)
    print(f"tiny Qwen3, engine {args.engine}, {args.pairs} pairs x 20 trajectories, {tokens} generated tokens/step, "
          f"torch threads {torch.get_num_threads()}, median of {args.steps} steps per mode")
    print(f"{'old_logprobs':<17} {'rollout':>8} {'logprobs':>9} {'update':>8} {'step':>8} | "
          f"{'generate':>9} {'fwd+bwd':>8} {'total':>8} | step/baseline (median of steps; target <= 1.25x)")
    for mode in modes:
        for clock, phases, base_keys in (("wall", WALL, ("generate_s", "backward_s")),
                                         ("cpu", CPU_PHASES, ("cpu_generate_s", "cpu_backward_s"))):
            med = [statistics.median(m[k] for m in ours[mode]) for k in phases]
            b_gen, b_bwd = (statistics.median(b[k] for b in base[mode]) for k in base_keys)
            # each step over the baseline run right after it, then the median: load drifts between steps
            ratio = statistics.median(m[phases[-1]] / (b[base_keys[0]] + b[base_keys[1]])
                                      for m, b in zip(ours[mode], base[mode], strict=True))
            print(f"{mode + ' (' + clock + ')':<17} " + " ".join(f"{v:>8.3f}s" for v in med) + " | "
                  f"{b_gen:>8.3f}s {b_bwd:>7.3f}s {b_gen + b_bwd:>7.3f}s | {ratio:.3f}x"
                  + ("" if math.isfinite(ratio) and ratio <= 1.25 else "  ** above target **"))


if __name__ == "__main__":
    main()
