"""Configuration of the two-stage rollout RL trainer (docs/training.md §3), checked on construction.

A run is one flat YAML file plus ``key=value`` overrides (verl/OpenRLHF style, docs/training.md §5).
Values tagged [T] in docs/training.md (the paper's, docs/protocol.md "Tags") are the defaults where known (lr 2e-6, KL 1e-3, 4 mini-batches, 4 criteria
+ 16 judgments); everything else is our choice [R] and says so below.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerm.train import recipe
from cerm.types import CRITERIA_MAX_NEW_TOKENS, EVAL_MAX_NEW_TOKENS

Grouping = Literal["three_group", "single_group", "per_criteria"]
RewardMode = Literal["indicator", "margin"]


@dataclass(frozen=True)
class RLConfig:
    """Every knob of ``cerm train rl``. Defaults reproduce the paper where known ([T]), else ours ([R])."""

    model: str  # HF id or local directory of the SFT cold-start model
    train_data: str  # JSONL of preference pairs {"id", "prompt", "chosen", "rejected"} (docs/training.md §1)
    output_dir: str
    eval_data: str | None = None  # held-out pairs for greedy pairwise accuracy
    eval_holdout: int = 0  # [R] or hold out this many pairs of train_data (never test benchmarks)
    seed: int = 42

    # rollout structure: 4 criteria x 2 responses x 2 judgments = 4 + 16 trajectories per pair [T]/[R]
    num_criteria: int = 4
    num_judgments: int = 2
    criteria_max_new_tokens: int = CRITERIA_MAX_NEW_TOKENS  # [R] the judge's defaults
    eval_max_new_tokens: int = EVAL_MAX_NEW_TOKENS  # [R]
    temperature: float = 1.0  # [R]
    top_p: float = 1.0  # [R]
    chat_template_kwargs: dict[str, Any] = field(default_factory=lambda: {"enable_thinking": False})

    # rewards (docs/training.md §3.2, all [R])
    reward_mode: RewardMode = "indicator"
    tie_credit: float = 0.0
    format_penalty: float = -1.0
    # advantages (docs/training.md §3.3): three groups per pair [T]; the others are ablations [R]
    advantage_grouping: Grouping = "three_group"

    # optimisation (docs/training.md §3.4)
    pairs_per_step: int = 256  # rollout batch over all processes [R reading of "RLmini64/4mini/step"]
    num_mini_batches: int = 4  # [T]
    micro_batch_size: int = 4  # trajectories per forward/backward (gradient accumulation) [R]
    learning_rate: float = 2e-6  # [T]
    kl_coef: float = 1e-3  # [T]; k3 estimator in the loss [R]
    clip_eps: float = 0.2  # [R]
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant_with_warmup"  # any transformers.get_scheduler name
    warmup_steps: int = 0  # optimiser updates
    max_steps: int = 100  # RL steps (rollout + num_mini_batches updates); the paper's count is unknown

    # model and precision
    model_dtype: Literal["float32", "bfloat16", "auto"] = "float32"  # fp32 master weights for full fine-tuning
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    use_cpu: bool = False  # train on CPU even with a GPU; several CPU processes then join one gloo group
    gradient_checkpointing: bool = False
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] | str = "all-linear"

    # rollout engine
    engine: Literal["hf", "vllm"] = "hf"
    # old log-probs of updates 2..num_mini_batches [R]: "rollout" takes the engine's (no extra forward pass;
    # under vLLM they are the engine's own numerics, e.g. bf16), "recompute" runs the policy over the
    # trajectories again; a micro-batch the engine gave no log-probs for (vLLM with top_p < 1) is recomputed
    old_logprobs: Literal["rollout", "recompute"] = "rollout"
    generation_batch_size: int = 64  # hf engine: prompts per generate() call
    # each prompt copy samples from its own seed (step seed, prompt tokens, copy index), so rollouts do not
    # depend on the world size or on batching [R]; the hf engine then generates one prompt at a time (slower)
    seeded_rollouts: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    vllm_max_model_length: int | None = None
    vllm_server_base_url: str | None = None
    vllm_enable_sleep_mode: bool = False

    # evaluation, checkpoints, logging
    eval_every: int = 0  # steps; 0 = evaluate only before the first and after the last step
    save_every: int = 0  # steps; 0 = save only at the end
    save_total_limit: int | None = 2
    resume_from: str | None = None  # "auto" (latest checkpoint in output_dir) or a checkpoint directory
    report_to: list[str] = field(default_factory=list)  # accelerate trackers: "tensorboard", "wandb"

    def __post_init__(self) -> None:
        positive = ("num_criteria", "num_judgments", "criteria_max_new_tokens", "eval_max_new_tokens",
                    "pairs_per_step", "num_mini_batches", "micro_batch_size", "max_steps", "generation_batch_size",
                    "lora_r")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1.")
        for name in ("eval_holdout", "eval_every", "save_every", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 0.")
        if self.temperature <= 0:
            raise ValueError(f"temperature ({self.temperature}) must be > 0: RL needs sampled rollouts.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p ({self.top_p}) must be in (0, 1].")
        if not 0 <= self.tie_credit <= 1:
            raise ValueError(f"tie_credit ({self.tie_credit}) must be in [0, 1]; 0 = strict '>', 0.5 = half credit.")
        if self.format_penalty > 0:
            raise ValueError(f"format_penalty ({self.format_penalty}) must be <= 0: an invalid judgment "
                             "must never earn more than a wrong one.")
        if self.pairs_per_step % self.num_mini_batches:
            raise ValueError(f"num_mini_batches ({self.num_mini_batches}) must divide pairs_per_step "
                             f"({self.pairs_per_step}); each mini-batch takes whole pairs with all their trajectories.")
        if self.kl_coef < 0 or self.clip_eps <= 0 or self.learning_rate <= 0:
            raise ValueError("kl_coef must be >= 0, clip_eps and learning_rate > 0; got "
                             f"{self.kl_coef}, {self.clip_eps}, {self.learning_rate}.")
        if self.eval_data is not None and self.eval_holdout:
            raise ValueError("give either eval_data or eval_holdout, not both.")
        if self.engine == "hf" and self.vllm_mode == "server" and self.vllm_server_base_url:
            raise ValueError("vllm_server_base_url is set but engine is 'hf'; set engine=vllm.")
        for tracker in self.report_to:
            if tracker not in ("tensorboard", "wandb"):
                raise ValueError(f"report_to entry {tracker!r} is not supported; use 'tensorboard' or 'wandb'.")
            if importlib.util.find_spec(tracker) is None:  # accelerate would only warn and log nothing
                raise ValueError(f"report_to={tracker} but {tracker} is not installed: pip install {tracker}, "
                                 "or set report_to=[] (metrics.jsonl is always written).")

    @property
    def trajectories_per_pair(self) -> int:
        """Trajectories per pair: C criteria samples, each with 2J judgments."""
        return self.num_criteria * (1 + 2 * self.num_judgments)

    def to_dict(self) -> dict[str, Any]:
        """The config as a dict (written to run.json)."""
        return dataclasses.asdict(self)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["lr=1e-5", "use_lora=true"]`` -> typed values (read as a recipe reads them, cerm.train.recipe)."""
    return recipe.parse_overrides(RLConfig, overrides)


def load_rl_config(path: str | Path | None, overrides: list[str] | None = None) -> RLConfig:
    """Read a flat YAML recipe, apply overrides, validate. Errors name the file, line and field."""
    return recipe.load_recipe(RLConfig, path, overrides)
