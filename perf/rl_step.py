"""One two-stage RL step on the tiny model, split into rollout / reward / log-probs / update, against a
plain baseline: ``generate`` + forward/backward of exactly the same token sequences (issue 7).

    .venv/bin/python perf/rl_step.py [--pairs 4] [--steps 3]

The tiny model is the test suite's random ~3.3M-parameter Qwen3 with SmolLM2's tokenizer (built once under
.cache/test-models). It never emits a stop token, so every turn runs to its max_new_tokens: the shapes are
fixed and the two sides generate the same number of tokens. The overhead ratio is cerm's step time over the
baseline's; what cerm adds is the template layout, parsing and rewards, the reference (KL) pass and the old
log-prob pass of mini-batches 2..4.
"""

from __future__ import annotations

import argparse
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
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
from conftest import tiny_qwen3_dir  # noqa: E402

from cerm.train.rl.config import RLConfig  # noqa: E402
from cerm.train.rl.logprobs import collate  # noqa: E402
from cerm.train.rl.trainer import RLTrainer  # noqa: E402
from cerm.types import SamplingParams  # noqa: E402


def baseline(trainer: RLTrainer) -> dict[str, float]:
    """Plain generate of the step's criteria and judgment prompts, then CE forward/backward of the same tokens."""
    cfg, scored = trainer.cfg, trainer.last_scored
    crit = [t for t in scored.trajectories if t.role == "criteria"]
    judg = [t for t in scored.trajectories if t.role != "criteria"]
    t0 = time.perf_counter()
    trainer.engine.generate([t.prompt_ids for t in crit], SamplingParams(cfg.temperature, cfg.top_p,
                                                                           cfg.criteria_max_new_tokens))
    trainer.engine.generate([t.prompt_ids for t in judg], SamplingParams(cfg.temperature, cfg.top_p,
                                                                           cfg.eval_max_new_tokens))
    t1 = time.perf_counter()
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
    ap.add_argument("--steps", type=int, default=3, help="measured steps (after one warm-up)")
    ap.add_argument("--criteria-tokens", type=int, default=32)
    ap.add_argument("--eval-tokens", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "pairs.jsonl"
        data.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"What is {i} + {i}?", "chosen": str(2 * i),
                                            "rejected": str(2 * i + 1)}) + "\n" for i in range(64)))
        cfg = RLConfig(model=str(tiny_qwen3_dir()), train_data=str(data), output_dir=str(Path(tmp) / "run"),
                       pairs_per_step=args.pairs, num_mini_batches=next(m for m in (4, 2, 1) if args.pairs % m == 0),
                       micro_batch_size=20, criteria_max_new_tokens=args.criteria_tokens,
                       eval_max_new_tokens=args.eval_tokens, max_steps=args.steps + 1, learning_rate=1e-4)
        trainer = RLTrainer(cfg)
        trainer.step()  # warm-up
        baseline(trainer)
        ours, base = [], []
        for _ in range(args.steps):
            m = trainer.step()
            ours.append(m)
            base.append(baseline(trainer))
    med = {k: statistics.median(m[k] for m in ours) for k in
           ("time/rollout_s", "time/reward_s", "time/logprobs_s", "time/update_s", "time/step_s")}
    b_gen = statistics.median(b["generate_s"] for b in base)
    b_bwd = statistics.median(b["backward_s"] for b in base)
    ratio = med["time/step_s"] / (b_gen + b_bwd)
    tokens = sum(len(t.completion_ids) for t in trainer.last_scored.trajectories)
    print(f"tiny Qwen3, {args.pairs} pairs x 20 trajectories, {tokens} generated tokens/step, "
          f"torch threads {torch.get_num_threads()}, median of {args.steps} steps")
    print(f"cerm step : rollout {med['time/rollout_s']:.3f}s  reward {med['time/reward_s']*1000:.1f}ms  "
          f"ref+old logprobs {med['time/logprobs_s']:.3f}s  update {med['time/update_s']:.3f}s  "
          f"total {med['time/step_s']:.3f}s")
    print(f"baseline  : generate {b_gen:.3f}s  forward+backward {b_bwd:.3f}s  total {b_gen + b_bwd:.3f}s")
    print(f"overhead ratio: {ratio:.3f}x (target <= 1.25x)"
          + ("" if math.isfinite(ratio) and ratio <= 1.25 else "  ** above target **"))


if __name__ == "__main__":
    main()
