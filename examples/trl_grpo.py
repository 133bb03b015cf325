"""Train a policy with TRL's GRPOTrainer and cerm as the reward.

The CPU smoke version of the downstream recipe in ``examples/README.md``: a tiny random
Qwen3 policy (SmolLM2's real tokenizer and chat template, built from the packaged GGUF), a handful of
prompts, a few steps. The reward groups each generation batch by prompt, so every prompt's criteria are
generated once and its ``num_generations`` completions are judged against them.

    # seconds on a laptop CPU: scripted judge (plumbing only)
    python examples/trl_grpo.py --judge-backend fake --max-steps 3 --output runs/trl_grpo
    # the embedded SmolLM2 as judge (real model calls; its scores are at chance)
    # (token budgets default per model: 192/160 for embedded, 4096/8192 otherwise; see cerm.judge.MODEL_OVERRIDES)
    python examples/trl_grpo.py --judge-backend hf --judge-model embedded --max-steps 1
    # the paper's setup, on GPUs: Qwen3-8B policy, CE-RM-4B served by vLLM (see examples/README.md)
    python examples/trl_grpo.py --policy Qwen/Qwen3-8B --prompts tulu3_prompts.jsonl --num-generations 8 \
        --judge-backend openai --judge-base-url http://localhost:8001/v1 --max-steps 250 --no-use-cpu

Writes ``<output>/summary.json``: TRL's log history, the rewards each reward call returned, the judge's
counters and whether the policy weights changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from cerm import Judge, Store, get_backend
from cerm.backends.embedded import embedded_warning
from cerm.judge import config_for_model
from cerm.reward.scoring import RewardConfig
from cerm.reward.trl import CermReward

TINY_PROMPTS = [
    "Explain why the sky is blue in two sentences.",
    "Write a haiku about autumn rain.",
    "What is the difference between a list and a tuple in Python?",
    "Give three tips for a job interview.",
    "Summarise the plot of Romeo and Juliet in one paragraph.",
    "How do I reverse a string in JavaScript?",
    "Suggest a name for a bakery that sells only bread.",
    "Why do cats purr?",
]


def build_tiny_policy(out: Path) -> Path:
    """A random ~3.3M-parameter Qwen3 with SmolLM2's tokenizer and ChatML template (built once)."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from cerm.backends.embedded import embedded_gguf

    gguf = embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                      max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def load_prompts(path: Path | None, limit: int) -> list[list[dict[str, str]]]:
    """Conversational prompts from a JSONL with a ``prompt`` field (text or messages), or the tiny set."""
    if path is None:
        texts: list = TINY_PROMPTS
    else:
        texts = []
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if "prompt" not in row:
                    raise SystemExit(f"{path}:{lineno}: field 'prompt' is missing.")
                texts.append(row["prompt"])
    rows = [p if isinstance(p, list) else [{"role": "user", "content": p}] for p in texts]
    return rows[:limit] if limit else rows


class RecordingReward(CermReward):
    """CermReward that also keeps what it returned, so the summary can show it reached the trainer."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[dict] = []
        self.events: list[tuple[str, list[str]]] = []  # ("prefetch" | "reward", prompts), in order

    def prefetch(self, queries) -> None:
        """The judge's prefetch, recorded: what the trainer handed over, before which reward call."""
        self.events.append(("prefetch", sorted({str(q) for q in queries})))
        self.judge.prefetch(queries)

    def attach(self, trainer) -> None:
        from cerm.reward.trl import prefetch_rollout_prompts

        prefetch_rollout_prompts(trainer, self)

    def __call__(self, prompts, completions, completion_ids=None, **kwargs):
        from cerm.reward.trl import prompt_to_query

        self.events.append(("reward", sorted({str(prompt_to_query(p)) for p in prompts})))
        rewards = super().__call__(prompts, completions, completion_ids, **kwargs)
        groups: dict[str, list] = {}
        for p, r in zip(prompts, rewards):
            groups.setdefault(str(p), []).append(r)
        # a GRPO group whose rewards are all equal has zero advantage: no learning signal from it
        all_equal = sum(len(g) > 1 and len(set(g)) == 1 for g in groups.values())
        self.calls.append({"n": len(rewards), "rewards": rewards, "prompts": len(groups), "all_equal_groups": all_equal})
        return rewards


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="tiny", help="'tiny' (random Qwen3, built once) or an HF id / directory")
    ap.add_argument("--prompts", type=Path, help="JSONL with a 'prompt' field (default: 8 built-in prompts)")
    ap.add_argument("--max-prompts", type=int, default=0, help="use the first N prompts (0 = all)")
    ap.add_argument("--output", type=Path, default=Path("runs/trl_grpo"))
    ap.add_argument("--max-steps", type=int, default=3)
    ap.add_argument("--num-generations", type=int, default=4, help="GRPO group size (the paper: 8)")
    ap.add_argument("--prompts-per-step", type=int, default=2)
    ap.add_argument("--max-completion-length", type=int, default=16)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--use-cpu", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--judge-backend", default="fake", help="fake | hf | vllm | openai | llamacpp")
    ap.add_argument("--judge-model", default="PKU-ONELab/CE-RM-4B", help="'embedded' = packaged SmolLM2")
    ap.add_argument("--judge-base-url", action="append", help="openai backend: server URL(s)")
    ap.add_argument("--criteria-max-new-tokens", type=int, help="default: the judge model's (embedded: 192)")
    ap.add_argument("--eval-max-new-tokens", type=int, help="default: the judge model's (embedded: 160)")
    ap.add_argument("--cache", help="SQLite criteria/judgment cache (share it across processes) or "
                    "redis://HOST:PORT/DB (share it across hosts)")
    ap.add_argument("--failure-reward", type=float, default=0.0)
    ap.add_argument("--score", choices=["greedy", "expected"], default="greedy",
                    help="reward from the greedy boxed score (the paper's) or the expected score at the box [R]")
    ap.add_argument("--close-unfinished", action="store_true",
                    help="[R] close a truncated / box-less evaluation with our closing text and read it there")
    ap.add_argument("--prefetch", action=argparse.BooleanOptionalAction, default=True,
                    help="send each step's prompts to the judge before their rollouts are generated")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args.output.mkdir(parents=True, exist_ok=True)
    policy = str(build_tiny_policy(args.output / "tiny-policy")) if args.policy == "tiny" else args.policy
    kwargs = {"base_urls": args.judge_base_url} if args.judge_backend == "openai" else {}
    judge = Judge(get_backend(args.judge_backend, args.judge_model, **kwargs),
                  config_for_model(args.judge_model, criteria_max_new_tokens=args.criteria_max_new_tokens,
                                   eval_max_new_tokens=args.eval_max_new_tokens, seed=args.seed,
                                   expected_score=args.score == "expected",
                                   close_unfinished=args.close_unfinished),
                  Store(args.cache))
    if warning := embedded_warning(args.judge_model):
        print(warning)
    reward = RecordingReward(judge, RewardConfig(failure_reward=args.failure_reward, score=args.score))

    dataset = Dataset.from_dict({"prompt": load_prompts(args.prompts, args.max_prompts)})
    config = GRPOConfig(
        output_dir=str(args.output), max_steps=args.max_steps, seed=args.seed, learning_rate=args.learning_rate,
        per_device_train_batch_size=args.prompts_per_step * args.num_generations,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        use_cpu=args.use_cpu, bf16=not args.use_cpu, beta=0.0, logging_steps=1, report_to="none",
        save_strategy="no", temperature=1.0,
    )
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=config, train_dataset=dataset)
    if args.prefetch:  # the criteria of a step's prompts are written while the policy generates its rollouts
        reward.attach(trainer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    start = time.perf_counter()
    trainer.train()
    changed = any(not p.detach().equal(before[n]) for n, p in trainer.model.named_parameters())
    summary = {
        "policy": policy, "judge_model": judge.backend.model_id, "steps": trainer.state.global_step,
        "seconds": round(time.perf_counter() - start, 2), "weights_changed": changed,
        "log_history": trainer.state.log_history, "reward_calls": reward.calls, "judge": judge.stats.as_dict(),
        "events": reward.events,
        "warning": embedded_warning(args.judge_model), "score": args.score,
        "all_equal_group_share": (sum(c["all_equal_groups"] for c in reward.calls)
                                  / max(1, sum(c["prompts"] for c in reward.calls))),
        "judge_budgets": [judge.config.criteria_max_new_tokens, judge.config.eval_max_new_tokens],
    }
    (args.output / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"reward {args.score}: {summary['all_equal_group_share']:.0%} of GRPO groups had all-equal rewards")
    print(f"trained {summary['steps']} steps in {summary['seconds']} s; weights changed: {changed}; "
          f"criteria generated {judge.stats.criteria_generated}, evaluations {judge.stats.evaluations_generated}; "
          f"summary: {args.output / 'summary.json'}")


if __name__ == "__main__":
    main()
