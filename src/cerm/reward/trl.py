"""cerm as a TRL reward function (``GRPOTrainer(reward_funcs=[CermReward(judge)])``).

TRL calls each reward function with keyword arguments (docs/architecture.md §4.1)::

    reward(prompts=..., completions=..., completion_ids=..., trainer_state=..., log_extra=..., log_metric=...,
           **dataset_columns) -> list[float | None]

Both of TRL's formats work: standard (``str`` prompts and completions) and conversational (message lists;
a completion is ``[{"role": "assistant", "content": ...}]``). The batch is grouped by prompt text, so each
prompt's criteria are generated once and its ``num_generations`` completions are judged against them.
TRL may split one group across processes; the criteria cache is keyed by prompt text, never by batch
position, so split groups still share criteria when the processes share a cache file.

``reward.attach(trainer)`` (``prefetch_rollout_prompts``) sends each step's prompts to the judge before their
rollouts are generated: the criteria are written while the policy generates, off the reward's critical path.

``AsyncCermReward`` is the ``async def`` variant: TRL gathers async reward functions on its own event
loop, so the blocking judge runs in a worker thread and the loop stays free. It needs trl >= 1.14 (older
TRL calls it like a sync function and fails with "'coroutine' object is not iterable"); ``CermReward``
works with older TRL too.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cerm.judge import Judge
from cerm.reward.scoring import RewardConfig, RolloutRewards, score_rollouts
from cerm.types import Message, Query

logger = logging.getLogger(__name__)

MIN_TRL_ASYNC = "1.14"  # the first TRL that awaits async reward functions

LogMetric = Callable[[str, float], None]
LogExtra = Callable[[str, list], None]


def prompt_to_query(prompt: str | Sequence[dict[str, Any]]) -> Query:
    """A TRL prompt as a CE-RM query: the text, or the chat history without system messages.

    CE-RM never sees a system message (docs/architecture.md §3). Content given as TRL's multimodal blocks
    (``[{"type": "text", "text": ...}]``) is joined; a non-text block is an error.
    """
    if isinstance(prompt, str):
        return prompt
    messages: list[Message] = [{"role": m["role"], "content": _text_content(m["content"])}
                               for m in prompt if m["role"] != "system"]
    if len(messages) == 1:
        return messages[0]["content"]
    return messages


def completion_to_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The response to judge: the string, or the content of the last assistant message."""
    if isinstance(completion, str):
        return completion
    assistant = [m for m in completion if m.get("role") == "assistant"]
    if not assistant:
        raise ValueError(f"conversational completion has no assistant message: {list(completion)!r:.200}")
    return _text_content(assistant[-1]["content"])


def _text_content(content: str | list[dict[str, Any]] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if block.get("type") != "text":
            raise ValueError(f"CE-RM judges text only; got a {block.get('type')!r} content block.")
        parts.append(block["text"])
    return "".join(parts)


class CermReward:
    """A TRL reward function backed by a ``cerm.Judge``.

    Args:
        judge: the judge (its store should be a file when several processes train together).
        config: score mapping and failure handling.
        name: how TRL names this reward in its logs (``rewards/<name>/mean``).
    """

    def __init__(self, judge: Judge, config: RewardConfig | None = None, *, name: str = "cerm") -> None:
        self.judge = judge
        self.config = config or RewardConfig()
        self.__name__ = name

    def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, *,
                 log_metric: LogMetric | None = None, log_extra: LogExtra | None = None,
                 **kwargs: Any) -> list[float | None]:
        """TRL's reward call: one reward per completion (the batch grouped by prompt)."""
        result = self.score(prompts, completions)
        self.log(result, log_metric, log_extra)
        return result.rewards

    def attach(self, trainer: Any) -> None:
        """Prefetch every step's prompts through this reward's judge (``prefetch_rollout_prompts``)."""
        prefetch_rollout_prompts(trainer, self.judge)

    def score(self, prompts: Sequence, completions: Sequence) -> RolloutRewards:
        """Judge one TRL batch; the batch is grouped by prompt inside."""
        queries = [prompt_to_query(p) for p in prompts]
        responses = [completion_to_text(c) for c in completions]
        return score_rollouts(self.judge, queries, responses, self.config)

    @staticmethod
    def log(result: RolloutRewards, log_metric: LogMetric | None, log_extra: LogExtra | None) -> None:
        """Report failure, tie and cache counts through TRL's logging hooks (older TRL passes none)."""
        if log_metric is not None:
            log_metric("cerm/parse_fail_rate", result.parse_fail_rate)
            if result.tie_rate is not None:
                log_metric("cerm/tie_rate", result.tie_rate)
            log_metric("cerm/criteria_cache_hits", float(result.criteria_cache_hits))
            log_metric("cerm/criteria_generated", float(result.criteria_generated))
        if log_extra is not None:
            log_extra("cerm_score", result.scores)
            log_extra("cerm_status", result.statuses)
        logger.info("cerm reward: %d completions, %d prompts, parse failures %d, criteria generated %d, cached %d",
                    len(result.rewards), result.num_groups, result.parse_failures, result.criteria_generated,
                    result.criteria_cache_hits)


class Prefetcher(Protocol):
    """What takes prompts ahead: a ``cerm.Judge`` (``prefetch``) or a ``cerm.reward.client.CermClient``."""

    def prefetch(self, queries: Sequence[Query]) -> Any:
        """Start generating the criteria of ``queries``; return at once."""
        ...


def prefetch_rollout_prompts(trainer: Any, target: Prefetcher) -> None:
    """Send each optimizer step's prompts to ``target.prefetch`` as soon as the trainer has them, before their
    rollouts are generated, so the criteria are written while the policy generates and the reward's critical
    path is the evaluations alone.

    Where the prompts are known: transformers 5's ``Trainer`` fetches every micro-batch of an optimizer step
    with ``get_batch_samples`` before the step begins (``on_step_begin``), and TRL 1.16's
    ``GRPOTrainer._prepare_inputs`` generates the rollouts of those batches afterwards. Callbacks are not
    handed the batch, so this wraps ``get_batch_samples`` on the trainer instance. A prefetch that fails is
    logged and ignored: the reward generates the criteria itself, as without it.
    """
    fetch = trainer.get_batch_samples

    def get_batch_samples(epoch_iterator: Any, num_batches: int, device: Any) -> Any:
        batches, num_items = fetch(epoch_iterator, num_batches, device)
        queries: dict[str, Query] = {}
        for batch in batches:
            for row in batch if isinstance(batch, list) else ():
                if isinstance(row, dict) and "prompt" in row:
                    query = prompt_to_query(row["prompt"])
                    queries.setdefault(str(query), query)
        if queries:
            try:
                target.prefetch(list(queries.values()))
            except Exception as e:  # noqa: BLE001 - a prefetch is an optimisation: the reward still works
                logger.warning("cerm: criteria prefetch failed (%s: %s); the reward generates them itself",
                               type(e).__name__, e)
        return batches, num_items

    trainer.get_batch_samples = get_batch_samples


def check_trl_awaits_rewards(version: str | None = None) -> None:
    """Raise when the installed TRL (or ``version``) is older than ``MIN_TRL_ASYNC``; no TRL: nothing to check."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    if version is None:
        try:
            version = installed("trl")
        except PackageNotFoundError:
            return
    if _major_minor(version) < _major_minor(MIN_TRL_ASYNC):
        raise RuntimeError(f"AsyncCermReward needs trl >= {MIN_TRL_ASYNC} (installed: trl {version}, which calls "
                           "reward functions synchronously); use CermReward, or upgrade trl.")


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


class AsyncCermReward(CermReward):
    """``async def`` variant: TRL runs it concurrently with its other async reward functions (trl >= 1.14)."""

    def __init__(self, judge: Judge, config: RewardConfig | None = None, *, name: str = "cerm") -> None:
        check_trl_awaits_rewards()
        super().__init__(judge, config, name=name)

    async def __call__(self, prompts: list, completions: list, completion_ids: list | None = None, *,  # type: ignore[override]
                       log_metric: LogMetric | None = None, log_extra: LogExtra | None = None,
                       **kwargs: Any) -> list[float | None]:
        """TRL's async reward call: the judge runs off TRL's event loop."""
        # the judge blocks (model calls, SQLite); never block TRL's loop, never asyncio.run inside it
        result = await asyncio.to_thread(self.score, prompts, completions)
        self.log(result, log_metric, log_extra)
        return result.rewards
