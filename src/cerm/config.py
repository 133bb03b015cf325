"""How the judge decodes and aggregates (``JudgeConfig``), and the per-model budgets over its defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from cerm.parsing import ParserMode
from cerm.types import (
    CRITERIA_MAX_NEW_TOKENS,
    EVAL_MAX_NEW_TOKENS,
    SAMPLE_TEMPERATURE,
    SAMPLE_TOP_P,
    SamplingParams,
    ScoreMode,
)


@dataclass(frozen=True)
class JudgeConfig:
    """How the judge decodes and aggregates. Defaults follow the protocol: greedy, 4096/8192 tokens."""

    criteria_max_new_tokens: int = CRITERIA_MAX_NEW_TOKENS
    eval_max_new_tokens: int = EVAL_MAX_NEW_TOKENS
    samples: int = 1  # k evaluations per response; k > 1 samples them (test-time scaling)
    criteria_samples: int = 1  # k_c criteria sets per query; k_c > 1 samples them
    sample_temperature: float = SAMPLE_TEMPERATURE
    sample_top_p: float = SAMPLE_TOP_P
    unified_criteria: bool = True  # False = the paper's "w/o unified criteria" ablation
    parser: ParserMode = "hardened"
    retries: int = 0  # re-sample a failed evaluation up to this many extra times (off for greedy runs)
    retry_temperature: float = SAMPLE_TEMPERATURE
    seed: int = 0
    overlong: Literal["error", "truncate"] = "error"
    tie_break_samples: int = 4  # evaluations per tied response under tie_policy="mean"
    cache_judgments: bool = True
    # [R] read the 21-value score distribution at the final box (Judgment.expected_score) and rank by it
    # (``score_mode``); needs a backend that declares the readout (hf, vllm, llamacpp, vLLM's server)
    expected_score: bool = False
    # [R] an evaluation without a readable box (truncated, no_box) gets our closing text and is read there:
    # status "completed", never "ok" (docs/protocol.md §10)
    close_unfinished: bool = False
    # how long a judge waits for criteria that another live holder of their lease is generating, before it
    # generates them itself (a dead holder's lease is taken over sooner: cerm.cache.store); ours [R]: above
    # a criteria generation's worst case, below the reward clients' timeouts
    criteria_lease_s: float = 150.0

    def __post_init__(self) -> None:
        for name in ("criteria_max_new_tokens", "eval_max_new_tokens", "samples", "criteria_samples",
                     "tie_break_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1.")
        if self.retries < 0:
            raise ValueError(f"retries ({self.retries}) must be >= 0.")
        if self.retries and self.retry_temperature <= 0:
            raise ValueError("retries re-sample, so retry_temperature must be > 0; set retries=0 for greedy-only.")
        if (self.samples > 1 or self.criteria_samples > 1) and self.sample_temperature <= 0:
            raise ValueError("samples > 1 needs sample_temperature > 0, or every sample is the same greedy text.")
        if self.parser not in ("hardened", "reference"):
            raise ValueError(f"parser {self.parser!r} must be 'hardened' or 'reference'.")
        if self.overlong not in ("error", "truncate"):
            raise ValueError(f"overlong {self.overlong!r} must be 'error' or 'truncate'.")

    @property
    def score_mode(self) -> ScoreMode:
        """The one decision of what a consumer ranks and rewards by: the expected score when the readout is
        on (``--score expected``), else the greedy boxed score. Every reward, pick and metric reads this.
        """
        return "expected" if self.expected_score else "greedy"

    @property
    def reads_scores(self) -> bool:
        """Whether evaluations get a score readout (expected scores, or closing unfinished verdicts)."""
        return self.expected_score or self.close_unfinished

    def criteria_params(self, sample_index: int) -> SamplingParams:
        """Decoding of criteria sample ``sample_index``: greedy for one sample, else seeded sampling."""
        if self.criteria_samples == 1:
            return SamplingParams(0.0, 1.0, self.criteria_max_new_tokens, None)
        return SamplingParams(self.sample_temperature, self.sample_top_p, self.criteria_max_new_tokens,
                              self.seed + sample_index)

    def eval_params(self, sample_index: int, attempt: int = 0) -> SamplingParams:
        """Decoding of evaluation sample ``sample_index``; ``attempt > 0`` is a retry at ``retry_temperature``."""
        if attempt:
            return SamplingParams(self.retry_temperature, self.sample_top_p, self.eval_max_new_tokens,
                                  self.seed + 1000 * attempt + sample_index)
        if self.samples == 1:
            return SamplingParams(0.0, 1.0, self.eval_max_new_tokens, None)
        return SamplingParams(self.sample_temperature, self.sample_top_p, self.eval_max_new_tokens,
                              self.seed + sample_index)


# [R] Per-model overrides of JudgeConfig's defaults. Those are the protocol's budgets for CE-RM-4B on a GPU;
# the embedded SmolLM2-135M on a CPU would spend minutes per call on them (and judges at chance anyway).
MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "embedded": {"criteria_max_new_tokens": 192, "eval_max_new_tokens": 160},
}


def config_for_model(model: str, **explicit: Any) -> JudgeConfig:
    """JudgeConfig for ``model``: explicit values (``None`` = unset) over its overrides over the defaults.

    Every place that builds a judge for a named model (CLI, verl, curate, perf scripts) goes through here,
    so the embedded model gets its own budgets everywhere.
    """
    values = {**MODEL_OVERRIDES.get(model, {}), **{k: v for k, v in explicit.items() if v is not None}}
    return JudgeConfig(**values)


def default_for(model: str, name: str) -> Any:
    """The value ``config_for_model(model)`` gives field ``name`` (for help texts and examples)."""
    return MODEL_OVERRIDES.get(model, {}).get(name, JudgeConfig.__dataclass_fields__[name].default)
