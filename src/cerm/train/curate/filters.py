"""Cheap per-pair filters for curation: identical responses, length budget, language, decontamination.

Each filter is a function ``pairs -> FilterResult`` that keeps the input order and says why each removed
pair went. All thresholds are ours [R] (docs/training.md §1 steps 2-3).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cerm.train.pairs import PreferencePair

logger = logging.getLogger(__name__)

NGRAM = 13  # as in GPT-3's decontamination (Brown et al. 2020, appendix C)
_WORD_RE = re.compile(r"\w+", re.UNICODE)

TokenCounter = Callable[[str], int]


@dataclass(frozen=True)
class Removal:
    """Why one pair was removed, and at which step."""

    id: str
    step: str
    reason: str


@dataclass(frozen=True)
class FilterResult:
    """The pairs a filter kept and the ones it removed (with reasons)."""

    kept: list[PreferencePair]
    removed: list[Removal]


def normalise_text(text: str) -> str:
    """Lower-case words joined by single spaces: the form every duplicate and overlap check compares."""
    return " ".join(_WORD_RE.findall(text.lower()))


def text_hash(text: str) -> str:
    """The sha256 of the normalised text (exact-duplicate key)."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


def _split(pairs: Sequence[PreferencePair], step: str, why: Callable[[PreferencePair], str | None]) -> FilterResult:
    kept, removed = [], []
    for p in pairs:
        reason = why(p)
        if reason is None:
            kept.append(p)
        else:
            removed.append(Removal(p.id, step, reason))
    return FilterResult(kept, removed)


def drop_identical(pairs: Sequence[PreferencePair]) -> FilterResult:
    """Chosen and rejected that are the same text up to case and whitespace teach nothing."""
    return _split(pairs, "identical", lambda p: "chosen and rejected are identical"
                  if normalise_text(p.chosen) == normalise_text(p.rejected) else None)


def approx_tokens(text: str) -> int:
    """Rough token count when no tokenizer is given: 4 characters per token [R]."""
    return math.ceil(len(text) / 4)


def drop_too_long(pairs: Sequence[PreferencePair], *, max_prompt_tokens: int, max_response_tokens: int,
                  count: TokenCounter = approx_tokens) -> FilterResult:
    """Drop pairs whose query or either response is over budget (docs/training.md §1 step 3)."""

    def why(p: PreferencePair) -> str | None:
        n = count(p.prompt_text)
        if n > max_prompt_tokens:
            return f"prompt has {n} tokens > {max_prompt_tokens}"
        for name, text in (("chosen", p.chosen), ("rejected", p.rejected)):
            n = count(text)
            if n > max_response_tokens:
                return f"{name} has {n} tokens > {max_response_tokens}"
        return None

    return _split(pairs, "length", why)


def detect_language(text: str) -> str:
    """ISO 639-1 code of ``text`` by py3langid (a maintained fork of langid.py, model bundled)."""
    try:
        import py3langid
    except ImportError:
        raise ImportError("the language filter needs py3langid (pip install 'py3langid==0.4.0'); "
                          "or keep every language with languages=() (`cerm curate --language all`).") from None
    return py3langid.classify(text)[0]


def drop_languages(pairs: Sequence[PreferencePair], languages: Sequence[str],
                   detect: Callable[[str], str] = detect_language) -> FilterResult:
    """Keep pairs whose final user turn is in one of ``languages`` (ISO 639-1 codes)."""
    allowed = set(languages)

    def why(p: PreferencePair) -> str | None:
        last = p.prompt if isinstance(p.prompt, str) else p.prompt[-1]["content"]
        lang = detect(last)
        return None if lang in allowed else f"language {lang!r} not in {sorted(allowed)}"

    return _split(pairs, "language", why)


def ngram_hashes(text: str, n: int = NGRAM) -> set[int]:
    """Hashes of every word n-gram of the normalised text (empty for texts shorter than n words)."""
    words = normalise_text(text).split()
    return {hash(tuple(words[i:i + n])) for i in range(len(words) - n + 1)}


@dataclass(frozen=True)
class EvalIndex:
    """What decontamination compares against: normalised prompt hashes and 13-gram hashes."""

    prompt_hashes: frozenset[str]
    ngrams: frozenset[int]
    num_prompts: int

    @classmethod
    def build(cls, prompts: Sequence[str]) -> EvalIndex:
        """The n-gram index of evaluation prompts."""
        grams: set[int] = set()
        for text in prompts:
            grams |= ngram_hashes(text)
        return cls(frozenset(text_hash(t) for t in prompts), frozenset(grams), len(prompts))


def drop_contaminated(pairs: Sequence[PreferencePair], index: EvalIndex) -> FilterResult:
    """Drop pairs whose prompt matches an evaluation prompt (docs/training.md §1 step 2).

    A match is equality after normalisation or a shared 13-gram.
    """

    def why(p: PreferencePair) -> str | None:
        text = p.prompt_text
        if text_hash(text) in index.prompt_hashes:
            return "prompt equals an evaluation prompt"
        if not ngram_hashes(text).isdisjoint(index.ngrams):
            return f"prompt shares a {NGRAM}-gram with an evaluation prompt"
        return None

    return _split(pairs, "decontamination", why)
