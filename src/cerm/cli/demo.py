"""`cerm demo`: Best-of-N on a few Arena-Hard prompts with the embedded model, end to end.

Candidates are the reference gpt-4-0314 answer plus N-1 answers sampled from the same model (the usual
Best-of-N setting: a policy samples, the judge picks). The embedded SmolLM2 proves the plumbing only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from cerm.backends.embedded import embedded_warning
from cerm.cli.bench import default_data_root
from cerm.cli.common import JudgeOptions, console, fail, with_judge_options
from cerm.cli.judging import print_bon
from cerm.types import SamplingParams

ARENA_HARD = Path("arena-hard") / "arena-hard-v0.1"  # under the data root, found as `cerm bench` finds it


def load_arena_hard(data: Path, n_prompts: int) -> list[tuple[str, str | None]]:
    """First ``n_prompts`` (prompt, reference answer or None) pairs from an Arena-Hard folder."""
    questions = data / "question.jsonl"
    if not questions.is_file():
        raise fail(f"{questions} not found; pass --data DIR (the folder holding question.jsonl).")
    answers: dict[str, str] = {}
    ref = data / "model_answer" / "gpt-4-0314.jsonl"
    if ref.is_file():
        for line in ref.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            content = row["messages"][-1]["content"]
            answers[row["uid"]] = content["answer"] if isinstance(content, dict) else content
    out = []
    for line in questions.read_text(encoding="utf-8").splitlines()[:n_prompts]:
        row = json.loads(line)
        out.append((row["prompt"], answers.get(row["uid"])))
    return out


@with_judge_options
def demo(
    judge_opts: JudgeOptions,
    data: Annotated[Path | None, typer.Option(
        help="Arena-Hard folder with question.jsonl (default: arena-hard/arena-hard-v0.1 under "
             "$CERM_DATA_ROOT, ../shared/data or ./shared/data)")] = None,
    prompts: Annotated[int, typer.Option(help="how many Arena-Hard prompts")] = 2,
    n: Annotated[int, typer.Option(help="candidates per prompt")] = 4,
    answer_tokens: Annotated[int, typer.Option(help="max new tokens per sampled candidate")] = 96,
    tie_policy: Annotated[str, typer.Option(help="none | first | random | mean | expected")] = "first",
) -> None:
    """Best-of-N demo: sample candidates, generate criteria once per prompt, judge each, pick the best."""
    if n < 2:
        raise fail("--n must be >= 2 for Best-of-N.")
    items = load_arena_hard(data if data is not None else default_data_root() / ARENA_HARD, prompts)
    judge = judge_opts.make_judge()
    console.print(f"sampling {n} candidates for {len(items)} prompt(s) with {judge.backend.model_id} ...")
    # every prompt's samples in one batch (one seeded call); each prompt's prefill is shared by its copies
    n_sampled = [n - (reference is not None) for _, reference in items]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=answer_tokens, seed=judge_opts.seed)
    gens = iter(judge.backend.generate([[{"role": "user", "content": prompt}] for (prompt, _), k in zip(items, n_sampled)
                                        for _ in range(k)], params))
    candidates: list[list[str]] = []
    for (_, reference), k in zip(items, n_sampled):
        sampled = [next(gens).text.strip() or "(empty answer)" for _ in range(k)]
        candidates.append(([reference] if reference is not None else []) + sampled)
    console.print("judging (criteria once per prompt, then one evaluation per candidate) ...")
    judge.score_batch([(p, c) for (p, _), c in zip(items, candidates)])  # one batch; best_of_n reads the cache
    for (prompt, _), cands in zip(items, candidates):
        result = judge.best_of_n(prompt, cands, tie_policy=tie_policy,  # type: ignore[arg-type]
                                 score_mode=judge_opts.score)  # type: ignore[arg-type]
        print_bon(prompt, cands, result, tie_policy)  # type: ignore[arg-type]
    s = judge.stats
    console.print(f"model calls: {s.criteria_generated} criteria + {s.evaluations_generated} evaluations "
                  f"({s.outcome()})")
    if warning := embedded_warning(judge.backend.model_id):
        console.print(f"[bold yellow]{warning}[/]")
