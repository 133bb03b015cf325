"""Building the pieces of an RL run: tokenizer, policy (full or LoRA), frozen reference, optimiser, engine.

Distributed strategies (DDP, FSDP, DeepSpeed ZeRO) come from the ``accelerate launch`` config; nothing
here is distributed code of our own. The reference model is the starting (SFT) model: with LoRA it is the
policy with its adapter disabled, otherwise a frozen copy (sharded like the policy under ZeRO-3).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from cerm.train.rl.config import RLConfig
from cerm.train.rl.engine_hf import HFEngine
from cerm.train.rl.rollout import RolloutEngine

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "auto": "auto"}


def load_tokenizer(cfg: RLConfig) -> Any:
    """The policy's tokenizer; it must have a chat template."""
    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    if tokenizer.chat_template is None:
        raise ValueError(f"the tokenizer of {cfg.model!r} has no chat template; CE-RM turns need one.")
    return tokenizer


def stop_token_ids(tokenizer: Any, model: Any) -> set[int]:
    """Tokens that end an assistant turn: the tokenizer's EOS plus the generation config's (Qwen3 has two)."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update([extra] if isinstance(extra, int) else (extra or []))
    if not ids:
        raise ValueError("the tokenizer and generation config define no EOS token; cannot tell where a turn ends.")
    return ids


def load_policy(cfg: RLConfig) -> Any:
    """The policy model (LoRA-wrapped if asked), with gradient checkpointing as configured."""
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=DTYPES[cfg.model_dtype])
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.use_lora:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    return model


def load_reference(cfg: RLConfig, accelerator: Any) -> Any | None:
    """A frozen copy of the starting model, or None when LoRA (adapter off) or kl_coef == 0 makes it unneeded."""
    if cfg.kl_coef == 0 or cfg.use_lora:
        return None
    ref = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=DTYPES[cfg.model_dtype])
    ref.requires_grad_(False)
    ref.eval()
    if accelerator.state.deepspeed_plugin is not None:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(ref, accelerator)
    return accelerator.prepare_model(ref, evaluation_mode=True)


def build_optimizer(cfg: RLConfig, model: Any) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW over the trainable parameters and its learning-rate scheduler."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters; check use_lora / lora_target_modules.")
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=cfg.max_steps * cfg.num_mini_batches)
    return optimizer, scheduler


def build_engine(cfg: RLConfig, model: Any, accelerator: Any, tokenizer: Any, stop_ids: set[int]) -> RolloutEngine:
    """The rollout engine the config names (hf or vllm)."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    logprobs = cfg.old_logprobs == "rollout"  # the engine computes them only when the trainer uses them
    if cfg.engine == "hf":
        return HFEngine(model, accelerator, stop_ids, pad_id, cfg.generation_batch_size, logprobs=logprobs)
    from cerm.train.rl.engine_vllm import VLLMEngine

    return VLLMEngine(model, accelerator, tokenizer, stop_ids, mode=cfg.vllm_mode,
                      server_base_url=cfg.vllm_server_base_url, tensor_parallel_size=cfg.vllm_tensor_parallel_size,
                      gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                      max_model_length=cfg.vllm_max_model_length, enable_sleep_mode=cfg.vllm_enable_sleep_mode,
                      logprobs=logprobs)
