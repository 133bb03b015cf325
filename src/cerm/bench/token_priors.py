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
    criteria: LengthSample
    evaluation: LengthSample
    source: str  # what was measured, how, and when


PRIORS: dict[str, TokenPrior] = {}
