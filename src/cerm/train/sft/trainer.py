"""``cerm train sft``: the SFT cold start on teacher traces, with TRL's ``SFTTrainer`` (full or LoRA).

Departures from a stock TRL run, and why:

- **We build the loss mask ourselves.** TRL's ``assistant_only_loss`` needs ``{% generation %}`` markers in
  the chat template (SmolLM2's and Qwen's lack them; TRL swaps in patched templates only for some models), and
  it cannot leave one assistant turn out of the loss. CE-RM trains both assistant turns (criteria and
  evaluation), except the criteria turn of a pair's second conversation (docs/training.md §2). So each row is
  tokenised here with the model's own template and an ``assistant_masks`` column marks the trained tokens:
  each trained assistant message's content and its end-of-turn token. TRL turns that column into labels.
- **Overlong rows are dropped and counted**, never cut: a truncated evaluation loses its final score.
- **Conversations are rendered as the judge renders them** (``enable_thinking=False``, which Qwen3 templates
  read and others ignore), so training and inference see the same tokens.
- **The saved checkpoint is a full model** in ``<output_dir>/final`` (LoRA adapters are merged; the adapter
  alone is kept in ``<output_dir>/adapter``), so the hf, vllm and openai-compatible backends load it like any
  HF model directory. Trainer checkpoints (``checkpoint-N``) stay beside it for resuming.

Multi-GPU: ``accelerate launch --config_file recipes/accelerate/<ddp|fsdp|deepspeed-zero2|deepspeed-zero3>.yaml
-m cerm.cli.train_sft -c recipes/ce-rm-4b-sft.yaml train_data=...`` (see the recipe header).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cerm.prompts import PROMPT_VERSION
from cerm.train.launch import check_distributed_type, check_processes
from cerm.train.sft.config import SFTRunConfig
from cerm.train.sft.data import SFTRow, load_sft_rows
from cerm.types import Message

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """One tokenised conversation; ``assistant_masks[t] == 1`` where token t is trained."""

    input_ids: list[int]
    assistant_masks: list[int]


@dataclass(frozen=True)
class TokenizedRows:
    """Tokenized SFT examples and the ids of rows dropped as longer than max_length."""

    examples: list[Example]
    dropped_overlong: list[str]  # row ids longer than max_length

    @property
    def trained_tokens(self) -> int:
        """Tokens with a loss (the assistant turns)."""
        return sum(sum(e.assistant_masks) for e in self.examples)


@dataclass(frozen=True)
class SFTResult:
    """What an SFT run produced: where, its losses, steps and rows."""

    output_dir: Path
    losses: list[float]  # training loss at each logging step
    steps: int
    rows: int
    dropped_overlong: list[str] = field(default_factory=list)


def trained_turns(row: SFTRow) -> list[bool]:
    """Which messages are in the loss: both assistant turns, the criteria turn only if ``train_criteria``."""
    return [m.role == "assistant" and (i != 1 or row.train_criteria) for i, m in enumerate(row.messages)]


def _render(tokenizer: Any, messages: list[Message], add_generation_prompt: bool) -> str:
    # the same switches as the hf backend's prompt rendering (protocol §1: thinking off)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         enable_thinking=False)


def assistant_spans(tokenizer: Any, messages: list[Message], trained: Sequence[bool]
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each trained assistant turn.

    A turn's span starts where the template's generation prompt ends (what the model sees before it writes)
    and ends after the template's end-of-turn marker (trailing whitespace excluded), so the model learns to
    stop. This needs a prefix-preserving template: rendering the first i messages must give a prefix of the
    whole rendering.
    """
    full = _render(tokenizer, messages, False)
    spans = []
    for i, (msg, is_trained) in enumerate(zip(messages, trained, strict=True)):
        if not is_trained:
            continue
        if msg["role"] != "assistant":
            raise ValueError(f"message {i} is a {msg['role']!r} turn; only assistant turns can be trained.")
        before = _render(tokenizer, messages[:i], True)
        through = _render(tokenizer, messages[:i + 1], False)
        if not (full.startswith(through) and through.startswith(before)):
            raise ValueError(
                f"the chat template of {getattr(tokenizer, 'name_or_path', 'this tokenizer')!r} is not "
                f"prefix-preserving at message {i} (it re-renders earlier turns), so assistant tokens cannot be "
                "located; use a model whose template renders history verbatim (e.g. Qwen3-Instruct-2507)."
            )
        if msg["content"] not in through[len(before):]:
            raise ValueError(f"the chat template rewrites assistant message {i}; cannot train on it verbatim.")
        spans.append((len(before), len(through.rstrip())))
    return full, spans


def build_example(tokenizer: Any, messages: list[Message], trained: Sequence[bool]) -> Example:
    """Tokenise one conversation and mark the tokens that start inside a trained span."""
    text, spans = assistant_spans(tokenizer, messages, trained)
    # the template already holds any BOS; adding special tokens again would duplicate it
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s <= start < e for s, e in spans)) for start, _ in enc["offset_mapping"]]
    return Example(list(enc["input_ids"]), mask)


def tokenize_rows(rows: Sequence[SFTRow], tokenizer: Any, max_length: int) -> TokenizedRows:
    """Tokenize rows with their loss masks; a row longer than ``max_length`` is dropped and named."""
    examples, dropped = [], []
    for row in rows:
        ex = build_example(tokenizer, row.message_dicts(), trained_turns(row))
        if len(ex.input_ids) > max_length:
            dropped.append(row.id)
        else:
            examples.append(ex)
    if dropped:
        logger.warning("%d of %d SFT rows exceed max_length=%d tokens and are dropped (ids in run.json)",
                       len(dropped), len(rows), max_length)
    if not examples:
        raise ValueError(f"every SFT row is longer than max_length={max_length}; raise max_length.")
    return TokenizedRows(examples, dropped)


def _dataset(tok: TokenizedRows) -> Any:
    from datasets import Dataset

    return Dataset.from_dict({"input_ids": [e.input_ids for e in tok.examples],
                              "assistant_masks": [e.assistant_masks for e in tok.examples]})


def _trl_args(cfg: SFTRunConfig, has_eval: bool) -> Any:
    from trl import SFTConfig

    model_kwargs: dict[str, Any] = {"dtype": "float32"}  # fp32 master weights; bf16/fp16 run as autocast [R]
    if cfg.attn_implementation:
        model_kwargs["attn_implementation"] = cfg.attn_implementation
    return SFTConfig(
        output_dir=cfg.output_dir,
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps(SFTRunConfig.world_size()),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # transformers reads a value < 1 as a ratio of the total steps
        weight_decay=cfg.weight_decay,
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        activation_checkpointing=cfg.gradient_checkpointing,  # transformers 5 name of gradient checkpointing
        logging_steps=cfg.logging_steps,
        save_strategy=cfg.save_strategy,
        save_steps=cfg.save_steps,
        eval_strategy="epoch" if has_eval else "no",
        seed=cfg.seed,
        use_cpu=cfg.use_cpu,
        report_to=cfg.report_to,
        max_length=cfg.max_length,
        assistant_only_loss=False,  # the assistant_masks column carries our mask
        packing=False,
        shuffle_dataset=True,
        model_init_kwargs=model_kwargs,
    )


def _peft_config(cfg: SFTRunConfig) -> Any:
    if not cfg.use_lora:
        return None
    from peft import LoraConfig

    # peft reads a plain string as a regex over module names; a comma list is what a recipe means
    targets = cfg.lora_target_modules
    modules: str | list[str] = targets if targets == "all-linear" else [m.strip() for m in targets.split(",")]
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=modules, task_type="CAUSAL_LM")


def final_dir(cfg: SFTRunConfig) -> Path:
    """Where the trained model goes: a plain HF directory every cerm backend loads."""
    return Path(cfg.output_dir) / "final"


def _save(trainer: Any, cfg: SFTRunConfig, tokenizer: Any) -> None:
    final = final_dir(cfg)
    if not cfg.use_lora:
        trainer.save_model(str(final))  # gathers FSDP / ZeRO-3 shards; saves the tokenizer too
        return
    trainer.save_model(str(Path(cfg.output_dir) / "adapter"))
    if cfg.merge_lora and trainer.accelerator.is_main_process:
        # merge on a fresh CPU copy of the base: works the same under every distributed launcher
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(cfg.model, dtype="auto")
        merged = PeftModel.from_pretrained(base, str(Path(cfg.output_dir) / "adapter")).merge_and_unload()
        merged.save_pretrained(str(final))
        tokenizer.save_pretrained(str(final))
    trainer.accelerator.wait_for_everyone()


@dataclass
class Prepared:
    """A ready-to-train SFTTrainer and the data it was built from."""

    trainer: Any
    tokenizer: Any
    rows: list[SFTRow]
    train: TokenizedRows
    evals: TokenizedRows | None


def build_trainer(cfg: SFTRunConfig) -> Prepared:
    """Load and tokenise the rows, then build the TRL trainer (model loaded from ``cfg.model``)."""
    import trl
    from transformers import AutoTokenizer

    rows = load_sft_rows(cfg.train_data)
    stale = sorted({r.prompt_version for r in rows} - {PROMPT_VERSION})
    if stale:  # the judge would see different prompts at inference than the model was trained on
        logger.warning("SFT rows written with prompt version(s) %s, but this cerm uses %s; re-run `cerm distill`",
                       stale, PROMPT_VERSION)
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    train = tokenize_rows(rows, tokenizer, cfg.max_length)
    evals = tokenize_rows(load_sft_rows(cfg.eval_data), tokenizer, cfg.max_length) if cfg.eval_data else None
    trainer = trl.SFTTrainer(
        model=cfg.model, args=_trl_args(cfg, evals is not None), train_dataset=_dataset(train),
        eval_dataset=_dataset(evals) if evals is not None else None, processing_class=tokenizer,
        peft_config=_peft_config(cfg),
    )
    return Prepared(trainer, tokenizer, rows, train, evals)


def parallelism(trainer: Any) -> dict[str, Any]:
    """What the launch really ran: a recipe that accelerate ignored would otherwise look like it worked."""
    from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel

    acc = trainer.accelerator
    out: dict[str, Any] = {**check_distributed_type(acc.distributed_type.value), "processes": acc.num_processes,
                           "fsdp_sharded_modules": sum(isinstance(m, FSDPModule | FullyShardedDataParallel)
                                                       for m in trainer.model_wrapped.modules())}
    plugin = acc.state.deepspeed_plugin
    if plugin is not None:
        out["zero_stage"] = plugin.zero_stage
    return out


def train_sft(cfg: SFTRunConfig, resume_from: str | None = None) -> SFTResult:
    """Train on ``cfg.train_data`` and save a model every cerm backend loads to ``<output_dir>/final``.

    ``resume_from``: a ``checkpoint-N`` directory of an earlier run, or "auto" for the latest one in
    ``output_dir``.
    """
    import peft
    import torch
    import transformers
    import trl

    prep = build_trainer(cfg)
    trainer, rows, train = prep.trainer, prep.rows, prep.train
    check_processes(trainer.accelerator.num_processes)
    resume: str | bool | None = resume_from
    if resume_from == "auto":
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(cfg.output_dir) if Path(cfg.output_dir).is_dir() else None
        if last is None:
            logger.warning("resume=auto: no checkpoint in %s; starting from the base model", cfg.output_dir)
        resume = last
    output = trainer.train(resume_from_checkpoint=resume)
    _save(trainer, cfg, prep.tokenizer)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    result = SFTResult(Path(cfg.output_dir), losses, output.global_step, len(rows), train.dropped_overlong)
    if trainer.accelerator.is_main_process:
        run = {
            "config": cfg.to_dict(), "final_model": str(final_dir(cfg)),
            "prompt_versions": sorted({r.prompt_version for r in rows}),
            "current_prompt_version": PROMPT_VERSION, "teachers": sorted({r.teacher for r in rows}),
            "world_size": SFTRunConfig.world_size(), "parallelism": parallelism(trainer), "rows": len(rows),
            "examples": len(train.examples),
            "dropped_overlong": train.dropped_overlong, "trained_tokens": train.trained_tokens,
            "steps": output.global_step, "metrics": output.metrics, "log_history": trainer.state.log_history,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "trl": trl.__version__, "peft": peft.__version__},
        }
        (Path(cfg.output_dir) / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n",
                                                       encoding="utf-8")
    return result
