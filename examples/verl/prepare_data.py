"""Build verl parquet files whose rows carry the user query for the cerm reward.

verl passes the reward function the decoded response only, never the prompt (docs/architecture.md §4.2), so each
row stores the query in ``extra_info["question"]``; ``reward_model.ground_truth`` must exist (verl reads it
unconditionally) and is ``""`` for a generative reward model.

    # Tulu-3-style prompts from any JSONL with a "prompt" field (text or messages)
    python examples/verl/prepare_data.py --input prompts.jsonl --output data/cerm_grpo
    # the Arena-Hard v0.1 prompts (evaluation split only; never train on benchmark prompts)
    python examples/verl/prepare_data.py --input ../shared/data/arena-hard/arena-hard-v0.1/question.jsonl \
        --output data/arena_hard --test-only
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

DATA_SOURCE = "cerm"


def read_prompts(path: Path) -> list[list[dict[str, str]]]:
    """Prompts as chat messages; a bad line is an error naming file:line:field."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: not JSON ({e.msg}).") from None
            prompt = row.get("prompt")
            if isinstance(prompt, str) and prompt.strip():
                rows.append([{"role": "user", "content": prompt}])
            elif isinstance(prompt, list) and prompt and all({"role", "content"} <= set(m) for m in prompt):
                rows.append([{"role": str(m["role"]), "content": str(m["content"])} for m in prompt])
            else:
                raise SystemExit(f"{path}:{lineno}:prompt: expected a non-empty string or a list of "
                                 f"{{role, content}} messages, got {prompt!r:.80}.")
    return rows


def verl_row(messages: list[dict[str, str]], index: int, split: str) -> dict:
    return {
        "data_source": DATA_SOURCE,
        "prompt": messages,
        "ability": "chat",
        "reward_model": {"style": "model", "ground_truth": ""},
        # the reward sees no prompt: the query travels here (cerm.reward.verl reads extra_info["question"])
        "extra_info": {"question": messages, "index": index, "split": split},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True, help="JSONL with a 'prompt' field")
    ap.add_argument("--output", type=Path, required=True, help="directory for train.parquet / test.parquet")
    ap.add_argument("--test-size", type=int, default=64)
    ap.add_argument("--test-only", action="store_true", help="write every prompt to test.parquet")
    ap.add_argument("--max-prompts", type=int, default=0, help="keep N prompts at random (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from datasets import Dataset

    prompts = read_prompts(args.input)
    rng = random.Random(args.seed)
    if args.max_prompts:
        prompts = rng.sample(prompts, min(args.max_prompts, len(prompts)))
    # a tenth held out, at least one prompt: verl's trainer reads data.val_files, which must exist
    n_test = len(prompts) if args.test_only else min(args.test_size, max(1, len(prompts) // 10), len(prompts) - 1)
    if not args.test_only and n_test < 1:
        raise SystemExit(f"{args.input}: {len(prompts)} prompt(s); a train and a test split need at least 2.")
    splits = {"test": prompts[:n_test], "train": prompts[n_test:]}
    args.output.mkdir(parents=True, exist_ok=True)
    for split, items in splits.items():
        if items:
            path = args.output / f"{split}.parquet"
            Dataset.from_list([verl_row(m, i, split) for i, m in enumerate(items)]).to_parquet(str(path))
            print(f"{path}: {len(items)} rows")


if __name__ == "__main__":
    main()
