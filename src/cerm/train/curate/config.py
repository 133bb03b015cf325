"""Curation settings (``CurateConfig``) and the per-step counts both the pipeline and the report use."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from cerm.judge import JudgeConfig


@dataclass(frozen=True)
class CurateConfig:
    """Curation settings; all defaults are ours [R]. ``pass_k=0`` turns the pass-rate filter off."""

    target_size: int = 5700  # training pairs; the paper's "about 5.7K"
    heldout_size: int = 300
    seed: int = 0
    split: str = "train"  # split to read from a Hugging Face dataset id
    strict: bool = False  # raise on the first bad row instead of reporting it
    languages: tuple[str, ...] = ("en",)  # ISO 639-1 codes of the final user turn; () keeps every language
    max_prompt_tokens: int = 8192
    max_response_tokens: int = 4096  # docs/training.md §1: "a response over 4K tokens"
    tokenizer: str | None = None  # HF tokenizer for the length filter; None counts 4 characters per token
    decontaminate: tuple[str, ...] = ()  # evaluation files/directories whose prompts must not be trained on
    near_dup_threshold: float = 0.8
    max_pairs_per_prompt: int = 1
    domain_weights: Mapping[str, float] | None = None  # None: equal weight for every domain present
    pass_k: int = 4  # evaluations sampled per response; docs/training.md suggests 4-8
    pass_temperature: float = 1.0
    min_pass_rate: float = 0.0  # keep pairs with min_pass_rate < rate < max_pass_rate
    max_pass_rate: float = 1.0
    tie_credit: float = 0.5  # a tied comparison counts this much toward the pass rate
    max_all_tie_share: float = 0.1  # cap on pairs whose comparisons all tie, as a share of the target
    judge_chunk_pairs: int = 256  # pairs judged per backend batch; results are flushed after each chunk

    def __post_init__(self) -> None:
        if self.target_size < 1 or self.heldout_size < 0:
            raise ValueError(f"target_size ({self.target_size}) must be >= 1 and heldout_size "
                             f"({self.heldout_size}) >= 0.")
        if self.pass_k == 1 or self.pass_k < 0:
            raise ValueError(f"pass_k ({self.pass_k}) must be 0 (filter off) or >= 2: one sample gives a pass "
                             "rate of 0 or 1, which the filter always drops.")
        if not 0 <= self.min_pass_rate < self.max_pass_rate <= 1:
            raise ValueError(f"need 0 <= min_pass_rate ({self.min_pass_rate}) < max_pass_rate "
                             f"({self.max_pass_rate}) <= 1.")
        if not 0 <= self.tie_credit <= 1 or not 0 <= self.max_all_tie_share <= 1:
            raise ValueError("tie_credit and max_all_tie_share must be in [0, 1].")
        if self.pass_k and self.pass_temperature <= 0:
            raise ValueError("pass_temperature must be > 0: greedy samples are all the same.")
        if self.domain_weights is not None and (not self.domain_weights
                                                or any(w < 0 for w in self.domain_weights.values())):
            raise ValueError(f"domain_weights {dict(self.domain_weights)} must be non-empty and >= 0.")

    def judge_config(self, base: JudgeConfig) -> JudgeConfig:
        """The pass-rate judge: greedy criteria (cached), ``pass_k`` evaluations at ``pass_temperature``."""
        return replace(base, samples=self.pass_k, criteria_samples=1, sample_temperature=self.pass_temperature,
                       sample_top_p=1.0, retries=0, unified_criteria=True)


@dataclass(frozen=True)
class StepCount:
    """One curation step: how many pairs it removed and how many remain."""

    step: str
    removed: int
    remaining: int
