"""The learnability task of the RL trainer (issue 7): a synthetic preference set, a very small random Qwen3,
and a label-free SFT cold start that teaches only the CE-RM output format.

Task: "What is a + b?" answered by the chosen response "The answer is <a+b>." and the rejected one
"I do not know." — a visible, consistent property the judgment can key on. Training and held-out pairs use
disjoint (a, b).

Cold start: criteria turn = one fixed short criteria block; evaluation turn = ``Overall: \\boxed{s}`` with
``s`` drawn uniformly from 2..8 for every example, chosen and rejected alike, so the model learns the format
and nothing about the label: greedy held-out accuracy stays at chance (strict: ties count as wrong). Any
gain after that is the RL's.

Kept small on purpose (1 layer, hidden 64, real 49k-token SmolLM2 vocabulary) so a whole run fits the CI
budget on two CPU cores; used by tests/train/test_rl_trainer.py and runnable by hand:
``python tests/train/rl_task.py OUT_DIR [three_group|single_group]``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

CRITERIA_TEXT = "[Start of Criteria]\n1. Correct sum\n[End of Criteria]"
TASK_VERSION = "sum-idk-v2"  # bump when the task, model or cold start changes: results are cached per machine


def sum_pairs(values: list[tuple[int, int]]) -> list[dict]:
    return [{"id": f"sum-{a}-{b}", "prompt": f"What is {a} + {b}?", "chosen": f"The answer is {a + b}.",
             "rejected": "I do not know."} for a, b in values]


def task_values(seed: int = 0, n_train: int = 128, n_held: int = 32) -> tuple[list, list]:
    """Disjoint training and held-out (a, b), two-digit operands."""
    values = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    random.Random(seed).shuffle(values)
    return values[:n_train], values[n_train:n_train + n_held]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def tiny_policy(tokenizer_dir: Path, out: Path, seed: int = 0) -> Path:
    """A random 1-layer Qwen3 (hidden 64) with the real SmolLM2 tokenizer, saved as an HF directory."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def sft_cold_start(model_dir: Path, rows: list[dict], out: Path, steps: int = 60, batch: int = 24,
                   lr: float = 1e-2, seed: int = 0) -> Path:
    """Teach the format only: the fixed criteria block, then ``Overall: \\boxed{s}`` with s uniform in 2..8.

    The score is drawn afresh for every example, independent of chosen/rejected. Sequences are built with
    the RL trainer's own ChatLayout so SFT and RL see identical token layouts; loss on the assistant turn only
    (the judgment conversations carry the criteria as context, training.md §2).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.train.rl_setup import stop_token_ids
    from cerm.train.rollout import ChatLayout

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    stops = stop_token_ids(tok, model)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end in stops
    layout = ChatLayout(tok, stops)
    crit_ids = tok(CRITERIA_TEXT, add_special_tokens=False)["input_ids"] + [end]
    scores = {s: tok(f"Overall: \\boxed{{{s}}}", add_special_tokens=False)["input_ids"] + [end] for s in range(2, 9)}
    examples: list[tuple[list[int], list[int] | None]] = []  # (prompt ids, completion ids; None = a judgment)
    for row in rows:
        prompt = layout.criteria_prompt_ids(row["prompt"])
        examples.append((prompt, crit_ids))
        for response in (row["chosen"], row["rejected"]):
            examples.append((layout.judgment_prompt_ids(row["prompt"], prompt, crit_ids, response)[0], None))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        seqs, masks = [], []
        for prompt, completion in rng.sample(examples, batch):
            completion = completion or scores[rng.randint(2, 8)]  # a fresh, label-free score
            seqs.append(prompt + completion)
            masks.append([0] * len(prompt) + [1] * len(completion))
        width = max(map(len, seqs))
        ids = torch.tensor([s + [end] * (width - len(s)) for s in seqs])
        attn = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        loss_mask = torch.tensor([mk + [0] * (width - len(mk)) for mk in masks], dtype=torch.bool)
        hidden = model.model(input_ids=ids, attention_mask=attn).last_hidden_state  # (B, T, H)
        keep = loss_mask[:, 1:]  # the LM head only where a loss is taken: full-vocabulary logits are costly
        logits = model.lm_head(hidden[:, :-1][keep])
        torch.nn.functional.cross_entropy(logits, ids[:, 1:][keep]).backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def build_task(tokenizer_dir: Path, root: Path) -> tuple[Path, Path, Path]:
    """(train.jsonl, held.jsonl, SFT model dir) under ``root``; the SFT model is reused when present."""
    root.mkdir(parents=True, exist_ok=True)
    train_values, held_values = task_values()
    train_rows = sum_pairs(train_values)
    train = write_jsonl(root / "train.jsonl", train_rows)
    held = write_jsonl(root / "held.jsonl", sum_pairs(held_values))
    sft = root / "sft"
    if not (sft / "config.json").exists():
        t0 = time.perf_counter()
        base = tiny_policy(tokenizer_dir, root / "base")
        sft_cold_start(base, train_rows, sft)
        print(f"tiny policy + SFT cold start: {time.perf_counter() - t0:.1f}s")
    return train, held, sft


def learnability_config(train: Path, held: Path, sft: Path, out: Path, **overrides):
    """The RL budget of the learnability test (high lr, short turns: the task and model are tiny)."""
    from cerm.train.rl_config import RLConfig

    values = dict(model=str(sft), train_data=str(train), eval_data=str(held), output_dir=str(out), seed=1,
                  num_criteria=4, num_judgments=2, criteria_max_new_tokens=24, eval_max_new_tokens=12,
                  pairs_per_step=8, num_mini_batches=2, micro_batch_size=80, learning_rate=1e-3,
                  kl_coef=1e-3, max_steps=12, eval_every=4, save_total_limit=1, generation_batch_size=64)
    values.update(overrides)
    return RLConfig(**values)


def score_margins(model_dir: Path, held: Path, tokenizer_dir: Path | None = None) -> list[float]:
    """Per held-out pair, E[score | chosen] - E[score | rejected] of the box digit under the fixed criteria.

    The model's next-token distribution over the digits 0..10 right after ``Overall: \\boxed{``: a smooth
    view of what greedy accuracy sees only once a margin flips an argmax.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.train.rollout import ChatLayout

    tok = AutoTokenizer.from_pretrained(tokenizer_dir or model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    layout = ChatLayout(tok, {end})
    crit = tok(CRITERIA_TEXT, add_special_tokens=False)["input_ids"] + [end]
    digits = torch.tensor([tok.convert_tokens_to_ids(str(i)) for i in range(10)])
    head = tok("Overall: \\boxed{", add_special_tokens=False)["input_ids"]
    margins = []
    for line in held.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt = layout.criteria_prompt_ids(row["prompt"])
        expected = []
        for response in (row["chosen"], row["rejected"]):
            ids = layout.judgment_prompt_ids(row["prompt"], prompt, crit, response)[0] + head
            with torch.no_grad():
                probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1], -1)[digits]
            expected.append(float((probs * torch.arange(10)).sum() / probs.sum()))
        margins.append(expected[0] - expected[1])
    return margins


def run(train: Path, held: Path, sft: Path, out: Path, grouping: str, **overrides) -> dict[int, dict]:
    """One RL run; returns the held-out evaluations by step and prints them."""
    from cerm.train.rl_trainer import train_rl

    t0 = time.perf_counter()
    summary = train_rl(learnability_config(train, held, sft, out, advantage_grouping=grouping, **overrides))
    evals = {int(k): v for k, v in summary["eval"].items()}
    line = ", ".join(f"step {k}: acc {v['eval/pairwise_accuracy']:.3f} ties {v['eval/tie_rate']:.3f} "
                     f"fail {v['eval/parse_failure_rate']:.3f}" for k, v in sorted(evals.items()))
    print(f"[{grouping}] {time.perf_counter() - t0:.1f}s; held-out {line}", flush=True)
    return evals


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from support import smollm2_tokenizer_dir

    root = Path(sys.argv[1])
    grouping = sys.argv[2] if len(sys.argv) > 2 else "three_group"
    from cerm.train.rl_config import parse_overrides

    train, held, sft = build_task(smollm2_tokenizer_dir(), root)
    evals = run(train, held, sft, root / f"rl-{grouping}", grouping, **parse_overrides(sys.argv[3:]))
    (root / f"evals-{grouping}.json").write_text(json.dumps(evals, indent=2))
