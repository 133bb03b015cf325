"""What the caches hold: content keys and criteria records, the same in every store."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from cerm.types import Criteria, Criterion


def content_key(**parts: Any) -> str:
    """sha256 over a canonical JSON of the named parts; the same inputs give the same key anywhere."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CriteriaRecord(BaseModel):
    """One cached criteria generation, as stored and as exported to JSONL."""

    key: str
    model: str
    prompt_version: str
    decoding: dict[str, Any]
    query: str
    sample_index: int = 0
    text: str
    finish_reason: str = "stop"
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    is_edited: bool = False
    created_at: float = 0.0


def criteria_from_record(record: CriteriaRecord, items: tuple[Criterion, ...], warning: str | None) -> Criteria:
    """A ``Criteria`` rebuilt from a cache record and its parsed items."""
    return Criteria(
        text=record.text, items=items, key=record.key, source="cache", parse_warning=warning,
        finish_reason=record.finish_reason,  # type: ignore[arg-type]
        tokens_in=record.tokens_in, tokens_out=record.tokens_out, seconds=record.seconds,
    )
