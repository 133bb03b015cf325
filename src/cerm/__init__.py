"""cerm: CE-RM, a criteria-first pointwise generative reward model.

>>> from cerm import Judge, get_backend
>>> judge = Judge(get_backend("hf", "PKU-ONELab/CE-RM-4B"))
>>> judge.score("What is 2+2?", ["4", "5"])

The core (this package's top-level modules: types, prompts, parsing, cache, judge, io, retry) turns a query
into criteria, judgments and scores. May import: the core and the backend seam (``cerm.backends.base``,
``cerm.backends.embedded``); never an engine, ``bench``, ``reward``, ``train`` or ``cli``
(docs/architecture.md §2).
"""

from cerm.backends.base import DEFAULT_MODEL, Backend, get_backend
from cerm.backends.embedded import EMBEDDED, EMBEDDED_WARNING
from cerm.cache import CriteriaCache, JudgmentCache, Store
from cerm.judge import Judge, JudgeConfig, JudgeStats
from cerm.parsing import parse_criteria, parse_judgment
from cerm.prompts import PROMPT_VERSION, render_query
from cerm.types import (
    BestOfNResult,
    Comparison,
    Criteria,
    Criterion,
    Generation,
    Judgment,
    Message,
    ParseStatus,
    SamplingParams,
    ScoredItem,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL", "EMBEDDED", "EMBEDDED_WARNING", "PROMPT_VERSION", "Backend", "BestOfNResult", "Comparison",
    "Criteria", "CriteriaCache", "Criterion", "Generation", "Judge", "JudgeConfig", "JudgeStats", "Judgment",
    "JudgmentCache", "Message", "ParseStatus", "SamplingParams", "ScoredItem", "Store", "get_backend",
    "parse_criteria", "parse_judgment", "render_query",
]
