"""The reward server's settings (``ServerConfig``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cerm.reward.batcher import BatcherConfig


@dataclass(frozen=True)
class ServerConfig:
    """Server limits and reward mapping.

    Args:
        token: bearer token required on the scoring routes (None: no auth).
        max_body_bytes: larger request bodies get 413.
        max_entries: samples (``/get_reward``), responses (``/v1/score``) or prompts (``/v1/criteria``) per
            request; more get 413 naming the limit, so one bulk request cannot hold up everyone [R].
        timeout_s: a request waiting longer gets 504; below OpenRLHF's 180 s client timeout so its retry
            logic sees an answer. The judge finishes the work anyway and caches it, so the retry is cheap.
        batch: dynamic batching limits (engines without a scheduler of their own); ``max_batch_size`` is
            also the slice a large request is judged in, interleaved with the others.
        dispatch: "auto" sends requests straight to an engine that schedules them itself (vLLM's async
            engine, an OpenAI-compatible pool) and through the dynamic batcher otherwise; "batch" and
            "direct" force one.
        scale: reward scale of ``/get_reward`` ("unit" = score / 10, or "raw" 0-10).
        failure_reward: ``/get_reward`` reward of a judgment without a score, in ``scale`` units [R].
        retry_after_s: the Retry-After of a 429 (queue full).
        drain_timeout_s: at shutdown, how long queued work may take to finish.
        warning: added to every response (the embedded plumbing model's warning).
        freeze_gc: at startup, move every live object (model, libraries) out of the cyclic garbage collector's
            reach (``gc.freeze``): its full passes over that heap were the tail latency (p99 70 -> 42 ms in
            perf/server_load.py). Process-wide: turn it off when the app is embedded in a bigger process.
    """

    token: str | None = None
    max_body_bytes: int = 8 * 2**20
    max_entries: int = 4096
    timeout_s: float = 170.0
    batch: BatcherConfig = field(default_factory=BatcherConfig)
    dispatch: Literal["auto", "batch", "direct"] = "auto"
    scale: Literal["raw", "unit"] = "unit"
    failure_reward: float = 0.0
    retry_after_s: int = 1
    drain_timeout_s: float = 60.0
    warning: str | None = None
    freeze_gc: bool = True

    def __post_init__(self) -> None:
        if self.scale not in ("raw", "unit"):
            raise ValueError(f"scale {self.scale!r} must be 'raw' or 'unit' (one sample per request: no groups).")
        if self.timeout_s <= 0 or self.max_body_bytes <= 0:
            raise ValueError("timeout_s and max_body_bytes must be > 0.")
        if self.max_entries < 1:
            raise ValueError(f"max_entries ({self.max_entries}) must be >= 1.")
        if self.dispatch not in ("auto", "batch", "direct"):
            raise ValueError(f"dispatch {self.dispatch!r} must be 'auto', 'batch' or 'direct'.")
