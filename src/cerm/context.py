"""The context-length policy: which prompts fit the model, and how a response is cut to fit [R]."""

from __future__ import annotations

from cerm.backends.base import Backend
from cerm.config import JudgeConfig
from cerm.prompts import evaluation_messages
from cerm.types import Message

# a prompt must leave at least this many tokens for the evaluation, or it is "too long" [R]
MIN_EVAL_TOKENS = 512


class ContextPolicy:
    """Prompt limits for one backend and config. Backends that cannot count tokens (a remote server) never
    see a prompt refused here: the server rejects an over-long prompt itself (a typed ``too_long``).
    """

    def __init__(self, backend: Backend, config: JudgeConfig) -> None:
        self.backend = backend
        self.config = config

    def limit(self) -> int | None:
        """The most prompt tokens that leave room for the evaluation, or None when unknown."""
        ctx = self.backend.context_length
        return None if ctx is None else ctx - min(self.config.eval_max_new_tokens, MIN_EVAL_TOKENS)

    def too_long(self, messages: list[Message]) -> bool:
        """Whether ``messages`` exceed the limit (never, when the backend cannot count)."""
        limit = self.limit()
        if limit is None:
            return False
        n = self.backend.count_tokens(messages)
        return n is not None and n > limit

    def fit(self, query_text: str, criteria_text: str, response: str) -> tuple[list[Message], bool, bool]:
        """Evaluation messages for one response under the policy [R].

        Returns (messages, was_cut, is_too_long). With overlong="error" a prompt that leaves fewer than
        ``MIN_EVAL_TOKENS`` free is too long (an explicit ``too_long`` status); with "truncate" the response
        is cut from the end until it fits and the judgment says so (``is_response_truncated``).
        """
        messages = evaluation_messages(query_text, criteria_text, response)
        limit = self.limit()
        n = self.backend.count_tokens(messages) if limit is not None else None
        if limit is None or n is None or n <= limit:
            return messages, False, False
        if self.config.overlong == "error":
            return messages, False, True
        base = self.backend.count_tokens(evaluation_messages(query_text, criteria_text, "")) or 0
        if base > limit:
            return messages, False, True
        keep = len(response)
        while keep > 0 and n > limit:
            # shrink in proportion to the overshoot, by at least 5% per step
            keep = min(int(keep * (limit - base) / max(n - base, 1)), int(keep * 0.95))
            messages = evaluation_messages(query_text, criteria_text, response[:keep])
            n = self.backend.count_tokens(messages) or 0
        return messages, True, False
