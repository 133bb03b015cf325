"""The learnability task of the RL trainer (issue 7): a synthetic preference set, a very small random Qwen3,
and a label-free SFT cold start that teaches only the CE-RM output format.

Task: "What is a + b?" answered by the chosen response "The answer is <a+b>." and the rejected one
"I do not know." — a visible, consistent property the judgment can key on. Training and held-out pairs use
disjoint (a, b).

Cold start: criteria turn = one fixed short criteria block; evaluation turn = ``The response says: <response>
Overall: \\boxed{s}`` with ``s`` drawn uniformly from 2..8 for every example, chosen and rejected alike. Quoting
the response is format (a real CE-RM analysis quotes it too) and puts what the score depends on a few tokens
before it, which a 1-layer model can use; the score carries no label, so held-out accuracy starts at chance
(greedy: every pair tied; sampled: P(chosen > rejected) + ties/2 = 0.50). Any gain after that is the RL's.
A cold start that writes the score with no quote did not learn within the CI budget (see the closing notes of
issue 7).

Kept small on purpose (1 layer, hidden 64, real 49k-token SmolLM2 vocabulary) so a whole run fits the CI
budget on two CPU cores; used by tests/train/rl/test_trainer.py and runnable by hand:
``python tests/train/rl/rl_task.py OUT_DIR [three_group|single_group] [key=value ...]``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

CRITERIA_TEXT = "[Start of Criteria]\n1. Correct sum\n[End of Criteria]"
TASK_VERSION = "sum-idk-quote-v3"  # bump when the task, model or cold start changes: results are cached per machine


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


def tiny_policy(tokenizer_dir: Path, out: Path, seed: int = 0, heads: tuple[int, int, int] = (4, 2, 16)) -> Path:
    """A random 1-layer Qwen3 (hidden 64) with the real SmolLM2 tokenizer, saved as an HF directory.

    ``heads`` = (attention heads, KV heads, head dim); vLLM's CPU attention needs head dim 32 (2, 1, 32).
    """
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    n_heads, n_kv, head_dim = heads
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=n_heads, num_key_value_heads=n_kv, head_dim=head_dim, tie_word_embeddings=True,
                      max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def judgment_text(response: str, score: int) -> str:
    """The cold start's evaluation turn: quote the response (format, the same for both sides), then the score."""
    return f"The response says: {response} Overall: \\boxed{{{score}}}"


def sft_cold_start(model_dir: Path, rows: list[dict], out: Path, judgment: Callable[[str, random.Random], str],
                   criteria_text: str = CRITERIA_TEXT, steps: int = 60, batch: int = 24, lr: float = 1e-2,
                   seed: int = 0) -> Path:
    """Teach the format only: ``criteria_text`` as the criteria turn, ``judgment(response, rng)`` as the
    evaluation turn, where the judgment's score is drawn afresh by ``rng`` for every example, independent of
    chosen/rejected (label-free).

    Sequences are built with the RL trainer's own ChatLayout so SFT and RL see identical token layouts; loss on
    the assistant turn only (the judgment conversations carry the criteria as context, docs/training.md §2).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.train.rl.rollout import ChatLayout
    from cerm.train.rl.setup import stop_token_ids

    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    stops = stop_token_ids(tok, model)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert end in stops
    layout = ChatLayout(tok, stops)
    crit_ids = tok(criteria_text, add_special_tokens=False)["input_ids"] + [end]
    examples: list[tuple[list[int], list[int] | str]] = []  # (prompt ids, completion ids or the response)
    for row in rows:
        prompt = layout.criteria_prompt_ids(row["prompt"])
        examples.append((prompt, crit_ids))
        for response in (row["chosen"], row["rejected"]):
            examples.append((layout.judgment_prompt_ids(row["prompt"], prompt, crit_ids, response)[0], response))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        seqs, masks = [], []
        for prompt, completion in rng.sample(examples, batch):
            if isinstance(completion, str):  # a judgment with a fresh, label-free score
                completion = tok(judgment(completion, rng), add_special_tokens=False)["input_ids"] + [end]
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


def build_task(tokenizer_dir: Path, root: Path, heads: tuple[int, int, int] = (4, 2, 16)) -> tuple[Path, Path, Path]:
    """(train.jsonl, held.jsonl, SFT model dir) under ``root``; the SFT model is reused when present.
    ``heads``: the policy's attention shape (see ``tiny_policy``)."""
    root.mkdir(parents=True, exist_ok=True)
    train_values, held_values = task_values()
    train_rows = sum_pairs(train_values)
    train = write_jsonl(root / "train.jsonl", train_rows)
    held = write_jsonl(root / "held.jsonl", sum_pairs(held_values))
    sft = root / "sft"
    if not (sft / "config.json").exists():
        t0 = time.perf_counter()
        base = tiny_policy(tokenizer_dir, root / "base", heads=heads)
        sft_cold_start(base, train_rows, sft, lambda response, rng: judgment_text(response, rng.choice(range(2, 9))),
                       steps=80)
        print(f"tiny policy + SFT cold start: {time.perf_counter() - t0:.1f}s")
    return train, held, sft


def learnability_config(train: Path, held: Path, sft: Path, out: Path, **overrides):
    """The RL budget of the learnability test: the default rollout structure (4 criteria x 2 x 2 judgments),
    a high lr (1e-3: the model is tiny) and short turns."""
    from cerm.train.rl.config import RLConfig

    values = dict(model=str(sft), train_data=str(train), eval_data=str(held), output_dir=str(out), seed=1,
                  num_criteria=4, num_judgments=2, criteria_max_new_tokens=24, eval_max_new_tokens=32,
                  pairs_per_step=8, num_mini_batches=2, micro_batch_size=80, learning_rate=1e-3,
                  kl_coef=1e-3, max_steps=20, eval_every=10, save_total_limit=1, generation_batch_size=64)
    values.update(overrides)
    return RLConfig(**values)


def score_margins(model_dir: Path, held: Path) -> dict[str, float]:
    """How the model scores held-out pairs, read from its next-token distribution over the digits 0..9 right
    after ``\\boxed{`` of the cold-start judgment text (fixed criteria): a smooth view of what greedy accuracy
    sees only once a margin flips an argmax.

    Returns the mean of E[score | chosen] - E[score | rejected] and the expected sampled pairwise accuracy
    P(s_chosen > s_rejected) + P(tie) / 2 over the pairs (0.5 = no preference).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.train.rl.rollout import ChatLayout

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    layout = ChatLayout(tok, {end})
    crit = tok(CRITERIA_TEXT, add_special_tokens=False)["input_ids"] + [end]
    digits = torch.tensor([tok.convert_tokens_to_ids(str(i)) for i in range(10)])
    margins, wins = [], []
    for line in held.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        prompt = layout.criteria_prompt_ids(row["prompt"])
        dists = []
        for response in (row["chosen"], row["rejected"]):
            head = judgment_text(response, 0).rsplit("0", 1)[0]  # up to and including "\\boxed{"
            ids = layout.judgment_prompt_ids(row["prompt"], prompt, crit, response)[0]
            ids += tok(head, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1][digits], -1)
            dists.append(probs)
        chosen, rejected = dists
        values = torch.arange(10, dtype=torch.float32)
        margins.append(float((chosen * values).sum() - (rejected * values).sum()))
        joint = chosen[:, None] * rejected[None, :]  # [i, j] = P(chosen says i, rejected says j)
        wins.append(float(joint.tril(-1).sum() + joint.diagonal().sum() / 2))
    return {"mean_margin": sum(margins) / len(margins), "expected_accuracy": sum(wins) / len(wins)}


def run(train: Path, held: Path, sft: Path, out: Path, grouping: str, **overrides) -> dict[int, dict]:
    """One RL run; returns the held-out evaluations by step and prints them."""
    from cerm.train.rl.trainer import train_rl

    t0 = time.perf_counter()
    summary = train_rl(learnability_config(train, held, sft, out, advantage_grouping=grouping, **overrides))
    evals = {int(k): v for k, v in summary["eval"].items()}
    line = ", ".join(f"step {k}: acc {v['eval/pairwise_accuracy']:.3f} ties {v['eval/tie_rate']:.3f} "
                     f"fail {v['eval/parse_failure_rate']:.3f}" for k, v in sorted(evals.items()))
    print(f"[{grouping}] {time.perf_counter() - t0:.1f}s; held-out {line}", flush=True)
    return evals


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests/, for support
    from support import smollm2_tokenizer_dir

    root = Path(sys.argv[1])
    grouping = sys.argv[2] if len(sys.argv) > 2 else "three_group"
    from cerm.train.rl.config import parse_overrides

    train, held, sft = build_task(smollm2_tokenizer_dir(), root)
    evals = run(train, held, sft, root / f"rl-{grouping}", grouping, **parse_overrides(sys.argv[3:]))
    (root / f"evals-{grouping}.json").write_text(json.dumps(evals, indent=2))
