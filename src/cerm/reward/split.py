"""Recover (user query, response) from what OpenRLHF sends a remote reward model.

OpenRLHF posts ``query[i]``: the policy's prompt and response decoded **with special tokens kept**
(left padding included), and ``prompts[i]``: the prompt text (docs/architecture.md §4.3, OpenRLHF#690).
CE-RM needs the user's question and the bare response, so:

1. **Response.** Find ``prompts[i]`` in ``query[i]`` and keep what follows. Without ``prompts``, the
   policy's chat template (a tokenizer must be configured) matches the prompt part of ``query[i]``.
   Then trailing stop/pad tokens are dropped (the tokenizer's special tokens, or ``COMMON_STOP_STRINGS``),
   and ``<think>`` blocks are removed so only the final answer is judged.
2. **Query.** ``extractor="template"`` parses the prompt back into chat messages with the policy's chat
   template; ``extractor="raw"`` takes the prompt text as the query (datasets without a chat template).

How the template parser works (ours [R]): the template renders probe conversations whose contents are
sentinels (``user``, ``user/assistant/user`` ... with and without a system turn); the text around the
sentinels becomes a regex with one lazy group per message. A prompt is parsed with the probe that has the
most turns and still matches. This needs no per-model code and handles default system prompts (SmolLM2),
BOS tokens and left padding. System messages are dropped: CE-RM never sees one (docs/architecture.md §3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from cerm.reward.scoring import strip_think
from cerm.types import Message, Query

Extractor = Literal["template", "raw"]

COMMON_STOP_STRINGS = (
    "<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<eos>", "<end_of_turn>",
    "<|end|>", "<pad>", "<|end▁of▁sentence|>", "<｜end▁of▁sentence｜>",
)
_SENTINEL = "CERMSENTINEL{}X"
_ROLES = ("user", "assistant")


class SplitError(ValueError):
    """A payload whose prompt and response cannot be separated (a configuration problem, HTTP 422)."""


@dataclass(frozen=True)
class SplitResult:
    """The user query and the response recovered from an OpenRLHF sample."""

    query: Query
    response: str


class ChatTemplateParser:
    """Parse text rendered by a tokenizer's chat template back into messages (see the module docstring).

    Args:
        tokenizer: a ``transformers`` tokenizer with a chat template.
        max_turns: the longest history to recognise (user and assistant turns, counted separately).
    """

    def __init__(self, tokenizer: Any, max_turns: int = 9) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat_template; use extractor='raw' for plain-text prompts.")
        self.tokenizer = tokenizer
        self.max_turns = max_turns

    @cached_property
    def _probes(self) -> list[tuple[re.Pattern[str], re.Pattern[str], list[str]]]:
        """(full-prompt regex, prompt-prefix regex, roles), longest conversations first."""
        probes = []
        for n in range(self.max_turns - (self.max_turns + 1) % 2, 0, -2):  # odd: the prompt ends with a user turn
            roles = [_ROLES[i % 2] for i in range(n)]
            for with_system in (True, False):
                probe_roles = (["system"] if with_system else []) + roles
                rendered = self._render(probe_roles)
                if rendered is None:
                    continue
                parts = re.split("CERMSENTINEL\\d+X", rendered)
                body = "(.*?)".join(re.escape(p) for p in parts)
                probes.append((re.compile(body + r"\Z", re.DOTALL), re.compile(body + "(.*)", re.DOTALL),
                               probe_roles))
        return probes

    def _render(self, roles: list[str]) -> str | None:
        messages = [{"role": r, "content": _SENTINEL.format(i)} for i, r in enumerate(roles)]
        try:
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - a template may reject a shape (e.g. no system role); skip it
            return None
        # a template that drops or rewrites a message cannot be inverted for this shape
        if any(_SENTINEL.format(i) not in text for i in range(len(roles))):
            return None
        return text

    def parse_prompt(self, prompt: str) -> list[Message]:
        """Messages of a rendered prompt (ending with the generation prompt)."""
        for full, _, roles in self._probes:
            m = full.search(prompt)
            if m is not None:
                return _messages(roles, m.groups())
        raise SplitError(f"the prompt does not match the chat template of the configured tokenizer: {prompt[:120]!r}")

    def split(self, text: str) -> tuple[list[Message], str]:
        """(prompt messages, response) of prompt + response text."""
        for _, prefix, roles in self._probes:
            m = prefix.search(text)
            if m is not None:
                groups = m.groups()
                return _messages(roles, groups[:-1]), groups[-1]
        raise SplitError(f"the text does not start with a prompt in the configured chat template: {text[:120]!r}")


def _messages(roles: list[str], contents: tuple[str, ...]) -> list[Message]:
    return [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)]


def _as_query(messages: list[Message]) -> Query:
    """CE-RM query from chat messages: system turns dropped, a lone user turn as plain text."""
    kept = [m for m in messages if m["role"] != "system"]
    if not kept or kept[-1]["role"] != "user":
        raise SplitError(f"the prompt must end with a user turn; parsed roles {[m['role'] for m in messages]}.")
    return kept[0]["content"] if len(kept) == 1 else kept


class PromptSplitter:
    """Split OpenRLHF payloads into (query, response).

    Args:
        tokenizer: the policy's tokenizer (its chat template and special tokens); optional for ``raw``.
        extractor: "template" (default with a tokenizer) or "raw" (default without).
        stop_strings: trailing tokens to drop from responses; default the tokenizer's special tokens,
            or ``COMMON_STOP_STRINGS`` without a tokenizer.
        strip_think: drop ``<think>`` blocks from responses.
    """

    def __init__(self, tokenizer: Any = None, *, extractor: Extractor | None = None,
                 stop_strings: tuple[str, ...] | None = None, strip_think: bool = True) -> None:
        extractor = extractor or ("template" if tokenizer is not None else "raw")
        if extractor not in ("template", "raw"):
            raise ValueError(f"extractor {extractor!r} must be 'template' or 'raw'.")
        if extractor == "template" and tokenizer is None:
            raise ValueError("extractor='template' needs the policy's tokenizer (--tokenizer PATH).")
        self.extractor = extractor
        self.parser = ChatTemplateParser(tokenizer) if tokenizer is not None else None
        if stop_strings is None:
            stop_strings = tuple(tokenizer.all_special_tokens) if tokenizer is not None else COMMON_STOP_STRINGS
        self.stop_strings = tuple(s for s in stop_strings if s)
        self.strip_think = strip_think

    @classmethod
    def from_pretrained(cls, path: str, **kwargs: Any) -> PromptSplitter:
        """Load the policy's tokenizer (local directory or cached hub id) and build a splitter."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(path), **kwargs)

    def split(self, full: str, prompt: str | None = None) -> SplitResult:
        """(query, response) of one sample; ``prompt`` is OpenRLHF's ``prompts[i]`` when sent."""
        if prompt:
            at = full.find(prompt)
            if at == -1:
                raise SplitError(f"prompts[i] is not contained in query[i]; prompt starts {prompt[:80]!r}, "
                                 f"query starts {full[:80]!r}.")
            response = full[at + len(prompt):]
            if self.extractor == "raw":
                query: Query = prompt
            else:
                query = _as_query(self.parser.parse_prompt(prompt))  # type: ignore[union-attr]
        else:
            if self.parser is None:
                raise SplitError("the request has no 'prompts'; start the server with --tokenizer so the chat "
                                 "template can separate prompt and response.")
            messages, response = self.parser.split(full)
            query = _as_query(messages)
        return SplitResult(query, self.clean_response(response))

    def clean_response(self, response: str) -> str:
        """Drop trailing stop/pad tokens (repeatedly) and, if configured, ``<think>`` blocks."""
        text = response.rstrip()
        changed = True
        while changed:
            changed = False
            for s in self.stop_strings:
                if text.endswith(s):
                    text = text[: -len(s)].rstrip()
                    changed = True
        return strip_think(text) if self.strip_think else text
