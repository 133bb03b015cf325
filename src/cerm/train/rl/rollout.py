"""Two-stage rollouts: criteria samples first, then judgments conditioned on each (docs/training.md §3.1).

For every preference pair: C criteria samples of turn 1, then for each criteria sample and each of chosen /
rejected, J samples of turn 2 in the same two-turn conversation (C + 2CJ trajectories; 4 + 16 by default).

Everything is kept as token ids. A judgment's prompt is ``criteria prompt ids + the criteria ids exactly as
sampled + the template tokens that close the assistant turn and open the evaluation turn``: the criteria text
is never re-tokenised, so the old/new/reference log-probs of a judgment are computed on the very sequence
that was sampled (§3.5). The criteria tokens inside a judgment are context; ``criteria_span`` records where.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from cerm.parsing import parse_judgment
from cerm.prompts import criteria_messages, evaluation_messages, render_query
from cerm.train.pairs import PreferencePair
from cerm.train.rl.algorithm import Role
from cerm.types import FinishReason, Message, ParseStatus, Query, SamplingParams

logger = logging.getLogger(__name__)

_SLOT = "<<cerm-criteria-slot>>"  # stands in for the criteria while the chat template is rendered


@dataclass(frozen=True)
class Completion:
    """One sampled continuation. ``finish_reason`` is "stop" when it ends with a stop token, else "length".

    ``logprobs``, when the engine returns them: per token, ``log_softmax(logits / temperature)`` of the sampled
    token over the full vocabulary, the very quantity the loss differentiates (``logprobs.completion_logprobs``).
    """

    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    logprobs: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _check_aligned(self.token_ids, self.logprobs)


def _check_aligned(ids: tuple[int, ...], logprobs: tuple[float, ...] | None) -> None:
    if logprobs is not None and len(logprobs) != len(ids):
        raise ValueError(f"{len(logprobs)} log-probs for {len(ids)} tokens: one per sampled token is needed.")


class RolloutEngine(Protocol):
    """Generates from token ids with the current policy weights; one completion per prompt, with the sampled
    tokens' log-probs where the engine can give them (else ``Completion.logprobs`` is None).
    """

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """One completion per prompt (token ids in, ids and optional log-probs out)."""

    def sync_weights(self) -> None:
        """Make the engine sample from the trainer's current weights (a no-op when they share the module)."""
        ...


@dataclass(frozen=True)
class Trajectory:
    """One sampled turn with its context. The loss covers ``completion_ids`` only."""

    pair_index: int  # position of the pair in the rollout batch
    role: Role
    criteria_index: int  # k: which criteria sample (for a criteria trajectory: itself)
    sample_index: int  # m: which judgment of this (k, response); 0 for criteria
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    finish_reason: FinishReason
    text: str
    criteria_span: tuple[int, int] | None = None  # judgment only: [start, end) of the criteria in prompt_ids
    score: float | None = None  # judgment only: overall 0-10 score, None if it could not be read
    status: ParseStatus | None = None
    logprobs: tuple[float, ...] | None = None  # the engine's, aligned with completion_ids (Completion.logprobs)

    def __post_init__(self) -> None:
        _check_aligned(self.completion_ids, self.logprobs)

    @property
    def length(self) -> int:
        """Prompt plus completion tokens."""
        return len(self.prompt_ids) + len(self.completion_ids)


@dataclass(frozen=True)
class PairRollout:
    """All trajectories of one pair. Judgments are ordered by (criteria k, sample m)."""

    pair: PreferencePair
    criteria: tuple[Trajectory, ...]
    chosen: tuple[Trajectory, ...]
    rejected: tuple[Trajectory, ...]

    def trajectories(self) -> list[Trajectory]:
        """Every trajectory of the pair: criteria, then chosen and rejected judgments."""
        return [*self.criteria, *self.chosen, *self.rejected]

    def scores(self, role: Literal["chosen", "rejected"], k: int) -> list[float | None]:
        """Overall scores of the ``role`` judgments made under criteria sample ``k``."""
        return [t.score for t in getattr(self, role) if t.criteria_index == k]


class ChatLayout:
    """Builds the CE-RM two-turn token sequences with the model's own chat template (protocol §2)."""

    def __init__(self, tokenizer: Any, stop_ids: Iterable[int], chat_template_kwargs: dict[str, Any] | None = None):
        self.tokenizer = tokenizer
        self.stop_ids = frozenset(stop_ids)
        self.template_kwargs = dict(chat_template_kwargs or {})
        self._checked = False

    def _render(self, messages: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                                  **self.template_kwargs)

    def _ids(self, text: str) -> list[int]:
        # the rendered template already holds any BOS; adding special tokens again would duplicate it
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def criteria_prompt_ids(self, query: Query) -> list[int]:
        """The token ids of the criteria prompt for ``query`` (the chat template applied)."""
        return self._ids(self._render(criteria_messages(render_query(query))))

    def judgment_prompt_ids(
        self, query: Query, criteria_prompt_ids: Sequence[int], criteria_ids: Sequence[int], response: str
    ) -> tuple[list[int], tuple[int, int]]:
        """Turn-2 prompt ids around the sampled criteria ids, and the criteria's [start, end) span in it."""
        full = self._render(evaluation_messages(render_query(query), _SLOT, response))
        before, sep, after = full.partition(_SLOT)
        if not sep:
            raise ValueError("the chat template dropped the assistant turn; cannot build the evaluation turn.")
        if not self._checked:
            self._checked = True
            if before != self._render(criteria_messages(render_query(query))):
                # e.g. a template that renders past assistant turns differently from its generation prompt:
                # rollouts keep the sampled layout, but inference (text re-rendered) will differ slightly
                logger.warning("the chat template renders a past assistant turn differently from the generation "
                               "prompt; judgment rollouts use the generation-prompt layout.")
        body = list(criteria_ids)
        if body and body[-1] in self.stop_ids:
            body.pop()  # the template's own end-of-turn text follows in `after`
        start = len(criteria_prompt_ids)
        ids = [*criteria_prompt_ids, *body, *self._ids(after)]
        return ids, (start, start + len(body))

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids as text, special tokens dropped."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def rollout_pairs(
    pairs: Sequence[PreferencePair],
    engine: RolloutEngine,
    layout: ChatLayout,
    num_criteria: int,
    num_judgments: int,
    criteria_params: SamplingParams,
    eval_params: SamplingParams,
) -> list[PairRollout]:
    """Sample C criteria per pair, then J judgments per (criteria, response): two engine calls in all.

    Judgment prompts of one criteria sample are submitted next to each other so an engine with prefix
    caching (vLLM) computes their shared prefix (criteria prompt + criteria) once.
    """
    crit_prompts = [layout.criteria_prompt_ids(p.prompt) for p in pairs]
    crit_out = engine.generate([crit_prompts[i] for i in range(len(pairs)) for _ in range(num_criteria)],
                               criteria_params)
    criteria: list[list[Trajectory]] = []
    jobs: list[tuple[int, Role, int, int, list[int], tuple[int, int]]] = []
    for i, pair in enumerate(pairs):
        row = []
        for k in range(num_criteria):
            out = crit_out[i * num_criteria + k]
            row.append(Trajectory(i, "criteria", k, 0, tuple(crit_prompts[i]), out.token_ids, out.finish_reason,
                                  layout.decode(out.token_ids), logprobs=out.logprobs))
            for role, response in (("chosen", pair.chosen), ("rejected", pair.rejected)):
                ids, span = layout.judgment_prompt_ids(pair.prompt, crit_prompts[i], out.token_ids, response)
                jobs.extend((i, role, k, m, ids, span) for m in range(num_judgments))  # type: ignore[misc]
        criteria.append(row)
    judge_out = engine.generate([job[4] for job in jobs], eval_params)
    judgments: list[dict[str, list[Trajectory]]] = [{"chosen": [], "rejected": []} for _ in pairs]
    for (i, role, k, m, ids, span), out in zip(jobs, judge_out, strict=True):
        text = layout.decode(out.token_ids)
        parsed = parse_judgment(text, out.finish_reason)
        judgments[i][role].append(Trajectory(i, role, k, m, tuple(ids), out.token_ids, out.finish_reason, text,
                                             span, parsed.score, parsed.status, out.logprobs))
    return [PairRollout(pair, tuple(criteria[i]), tuple(judgments[i]["chosen"]), tuple(judgments[i]["rejected"]))
            for i, pair in enumerate(pairs)]
