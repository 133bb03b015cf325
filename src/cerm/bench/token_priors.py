"""Measured generation lengths of known judge models, for cost estimates before a run (``cerm.bench.cost``).

Each sample is the tokens generated per call on real benchmark items, with the budget the sample was
measured under as its ``cap`` (a length equal to the cap was cut there: the call filled its budget).
Greedy decoding stops at the same token whatever the budget, so ``min(budget, L)`` over the sample is the
expected cost for any budget up to the cap. Remeasure with ``perf/token_lengths.py`` (its docstring has
the command) when the prompts or the model change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LengthSample:
    """Generated tokens per call; ``cap`` = the budget they were generated under."""

    lengths: tuple[int, ...]
    cap: int


@dataclass(frozen=True)
class TokenPrior:
    """Measured generation lengths of one model under one budget (see perf/token_lengths.py)."""
    criteria: LengthSample
    evaluation: LengthSample
    source: str  # what was measured, how, and when


PRIORS: dict[str, TokenPrior] = {
    # SmolLM2-135M (--model embedded) on the hf backend, greedy, budgets 192 criteria / 256 evaluation tokens:
    # 8 items each of JudgeBench, RM-Bench and RMB (seed 1: none of the tests' seed-0 items), 24 criteria and
    # 84 evaluation calls; 83% and 80% filled their cap (the model rarely stops: at chance, a plumbing model).
    # Measured 2026-12-07 with the commands in perf/token_lengths.py.
    "embedded": TokenPrior(
        criteria=LengthSample((14, 26, 34, 142, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192, 192,
            192, 192, 192, 192, 192, 192, 192, 192, 192), cap=192),
        evaluation=LengthSample((6, 8, 10, 12, 26, 34, 34, 36, 53, 77, 101, 146, 146, 172, 174, 192,
            204, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256,
            256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256,
            256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256,
            256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256, 256), cap=256),
        source="SmolLM2-135M (embedded) on 24 criteria / 84 evaluation calls of JudgeBench, RM-Bench and RMB, hf "
               "backend, greedy (perf/token_lengths.py)",
    ),
}
