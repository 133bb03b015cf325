"""What a distributed launch really runs, checked against what was asked (shared by ``sft/`` and ``rl/``).

Measured with accelerate 1.15 on a CPU-only host (docs/training.md, "Multi-process"): ``accelerate launch
--num_processes 2`` without ``use_cpu`` gives every process distributed type NO (N independent copies, each
writing the outputs); with ``use_cpu`` the processes join one gloo group as MULTI_CPU, and a FSDP recipe is
silently dropped there (accelerate enables FSDP only on accelerator devices) while DeepSpeed runs (its CPU
accelerator). Both are made explicit here instead of looking like success.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

# accelerate launch announces the recipe's distributed type to its processes through these variables
REQUESTED = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DEEPSPEED"}


def launched_processes() -> int:
    """Processes in this run, as ``accelerate launch`` / torchrun announce them."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def requested_type() -> str | None:
    """The distributed type the launch's recipe asked for (FSDP / DEEPSPEED), if any."""
    return next((kind for var, kind in REQUESTED.items() if os.environ.get(var, "").lower() == "true"), None)


def check_processes(seen: int) -> None:
    """Refuse N independent copies: the processes must have joined one group."""
    launched = launched_processes()
    if seen != launched:
        raise ValueError(f"{launched} processes were launched but accelerate sees {seen} (no GPU?): on a CPU "
                         "host set use_cpu=true so the processes join one gloo group.")


def check_distributed_type(actual: str) -> dict[str, Any]:
    """Warn when the recipe's FSDP / DeepSpeed was not applied; return both for the run's record."""
    requested = requested_type()
    if requested is not None and requested != actual:
        logger.warning("the launch asked for %s but accelerate runs %s (on a CPU host accelerate enables FSDP "
                       "only on accelerator devices): the model is NOT sharded", requested, actual)
    return {"requested_type": requested, "distributed_type": actual}
