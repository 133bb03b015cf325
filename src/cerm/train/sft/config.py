"""Settings for the SFT cold start, read from a flat YAML recipe plus ``key=value`` overrides.

Paper values [T] (docs/training.md §2): batch 64, learning rate 1e-5, 3 epochs, base ``Qwen/Qwen3-4B-Instruct-2507``.
Ours [R]: cosine schedule, 3% warmup, 16K-token sequences, bf16, LoRA settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cerm.train.launch import launched_processes
from cerm.train.recipe import load_recipe

# old recipe key -> new one; the old key is refused with a message that names the new one
RENAMED = {"lora": "use_lora"}


@dataclass(frozen=True)
class SFTRunConfig:
    """One SFT run. ``batch_size`` is global: per-device batch x gradient accumulation x processes."""

    model: str = "Qwen/Qwen3-4B-Instruct-2507"
    train_data: str = ""  # SFT rows from `cerm distill`
    eval_data: str | None = None
    output_dir: str = "runs/ce-rm-4b-sft"  # the final model goes to <output_dir>/final
    batch_size: int = 64  # [T]
    per_device_batch_size: int = 1
    learning_rate: float = 1e-5  # [T]
    epochs: float = 3.0  # [T]
    max_steps: int = -1  # > 0 overrides epochs
    lr_scheduler: str = "cosine"  # [R]
    warmup_ratio: float = 0.03  # [R]
    weight_decay: float = 0.0
    max_length: int = 16384  # [R] tokens per conversation; longer rows are dropped and counted, never cut
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"  # [R]
    gradient_checkpointing: bool = True
    attn_implementation: str | None = None  # e.g. "flash_attention_2" on GPUs that have it
    use_lora: bool = False  # the same name as in the RL recipe
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str = "all-linear"
    merge_lora: bool = True  # save a merged full model that every backend loads (the adapter is kept too)
    seed: int = 42
    logging_steps: int = 10
    save_strategy: Literal["no", "epoch", "steps"] = "epoch"
    save_steps: int = 500
    use_cpu: bool = False
    report_to: str = "none"

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model is empty; set model=<HF id or local directory> (the paper: "
                             "Qwen/Qwen3-4B-Instruct-2507).")
        if not self.train_data:
            raise ValueError("train_data is empty; set train_data=<sft rows .jsonl> (from `cerm distill`).")
        for name in ("batch_size", "per_device_batch_size", "max_length", "logging_steps", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 1.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate ({self.learning_rate}) must be > 0.")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set epochs > 0 or max_steps > 0.")
        if self.precision not in ("bf16", "fp16", "fp32"):
            raise ValueError(f"precision {self.precision!r} must be bf16, fp16 or fp32.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio ({self.warmup_ratio}) must be in [0, 1).")

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Steps that make up ``batch_size`` across ``world_size`` processes; must divide exactly."""
        per_step = self.per_device_batch_size * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of per_device_batch_size "
                f"({self.per_device_batch_size}) x processes ({world_size}); change one of them."
            )
        return self.batch_size // per_step

    @staticmethod
    def world_size() -> int:
        """Processes in this run, as `accelerate launch` / torchrun announce them."""
        return launched_processes()

    @classmethod
    def from_sources(cls, path: str | Path | None = None, overrides: list[str] | None = None) -> SFTRunConfig:
        """Load a flat YAML recipe, then apply ``key=value`` overrides (cerm.train.recipe)."""
        return load_recipe(cls, path, overrides, renamed=RENAMED)

    def to_dict(self) -> dict[str, Any]:
        """The config as a dict (written to run.json)."""
        return dataclasses.asdict(self)
