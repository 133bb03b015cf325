r"""The score distribution at the final box: which of the 21 grid values the judge would write next [R].

After an evaluation, the position right after its last ``\boxed{`` is where the model writes the overall
score. The readout scores the 21 valid completions ``v}`` (v = 0, 0.5, ..., 10) there and normalises over
them: ``expected_score = sum p_v * v`` breaks the ties of the greedy grid (docs/protocol.md §10).

Pure helpers shared by every backend: the continuation strings, the token check (the prefix's tokens must
be unchanged when a continuation is appended) and the normalisation. The values they produce (``GRID``,
``ReadoutRequest``, ``ScoreDistribution``, ``Readout``) live in ``cerm.types`` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from cerm.parsing import find_boxes
from cerm.types import GRID, Readout, ReadoutRequest, ScoreDistribution

if TYPE_CHECKING:
    from cerm.types import Generation

CONTINUATIONS: tuple[str, ...] = tuple(f"{v:g}}}" for v in GRID)  # "0}", "0.5}", ..., "10}"

# the readout's values live in cerm.types (they cross the backend seam); still importable from here
__all__ = ["CLOSING_TEXT", "CONTINUATIONS", "GRID", "ReadAt", "Readout", "ReadoutRequest", "ReadoutUnsupported",
           "ScoreDistribution", "box_prefix", "closing_prefix", "continuation_ids", "from_logprobs",
           "sequence_logprobs", "trie_nodes", "trie_paths"]

# Appended to an evaluation that ended without a readable overall box (truncated, no box) [R]; the
# distribution is read right after it. Ours, not the paper's: docs/protocol.md §10.
CLOSING_TEXT = ("\n\n[The evaluation stops here.]\n\nBased on the analyses above, the overall quality score "
                "of the response from 0 to 10 is $\\boxed{")


class ReadoutUnsupported(ValueError):
    """The backend cannot read token probabilities (no silent fallback to greedy scores)."""


ReadAt = Callable[["Generation"], "str | None"]
r"""Given a finished generation: the assistant text (ending in ``\boxed{``) to read the score after, or None.

A backend whose ``generate`` takes a ``read_at`` keyword (hf) reads there before it drops the generation's
KV cache and attaches the result as ``Generation.readout``; the judge uses it instead of re-reading.
"""


def from_logprobs(logprobs: Sequence[float]) -> ScoreDistribution:
    """Normalise 21 sequence log-probabilities (``GRID`` order) into a distribution. Pure."""
    if len(logprobs) != len(GRID):
        raise ValueError(f"expected {len(GRID)} log-probabilities, got {len(logprobs)}.")
    top = max(logprobs)
    if not math.isfinite(top):
        return ScoreDistribution(error="every grid value has probability 0 at the box")
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return ScoreDistribution(tuple(w / total for w in weights))


def box_prefix(text: str) -> str | None:
    r"""``text`` up to and including its last ``\boxed{`` (where the overall score is written), or None."""
    boxes = find_boxes(text)
    if not boxes:
        return None
    return text[: boxes[-1][0] + len("\\boxed{")]


def closing_prefix(text: str) -> str:
    r"""An unfinished evaluation with our closing text appended, ending in ``\boxed{``."""
    return text.rstrip() + CLOSING_TEXT


def continuation_ids(encode: Callable[[str], list[int]], prefix_text: str) -> tuple[list[int], list[list[int]]]:
    """Token ids of the prefix and of each continuation, tokenised together with the prefix.

    Raises ``ValueError`` when appending a continuation changes the prefix's own tokens (a merge across
    the boundary): the probabilities would then not be conditional on the same prefix.
    """
    prefix = encode(prefix_text)
    tails = []
    for c in CONTINUATIONS:
        full = encode(prefix_text + c)
        if full[: len(prefix)] != prefix or len(full) == len(prefix):
            raise ValueError(f"appending {c!r} changes the tokens of the prefix (it ends {prefix_text[-20:]!r})")
        tails.append(full[len(prefix):])
    return prefix, tails


def trie_nodes(tails: Sequence[Sequence[int]]) -> dict[tuple[int, ...], list[int]]:
    """Every proper prefix of the continuations -> the distinct next tokens to score there."""
    nodes: dict[tuple[int, ...], list[int]] = {}
    for tail in tails:
        for k in range(len(tail)):
            children = nodes.setdefault(tuple(tail[:k]), [])
            if tail[k] not in children:
                children.append(tail[k])
    return nodes


def trie_paths(nodes: dict[tuple[int, ...], list[int]]) -> list[tuple[int, ...]]:
    """The trie nodes that are no proper prefix of another node: a sequence through each passes every node."""
    return [p for p in nodes if not any(len(q) > len(p) and q[: len(p)] == p for q in nodes)]


def sequence_logprobs(tails: Sequence[Sequence[int]], node_logprobs: dict[tuple[int, ...], dict[int, float]]
                      ) -> list[float]:
    """Log-probability of each continuation as the sum of its tokens' log-probs from ``node_logprobs``."""
    return [sum(node_logprobs[tuple(t[:k])][t[k]] for k in range(len(t))) for t in tails]
