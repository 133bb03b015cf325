"""Training rows: preference pairs in, SFT conversations out; their schemas, loaders and validation.

Two row types cross files:

- ``PreferencePair`` (docs/training.md §1): ``{"id", "prompt", "chosen", "rejected", "source", "domain"}``.
  ``prompt`` is a string or a chat history ending with the user's turn; ``chosen``/``rejected`` are strings.
  Readers accept the TRL preference formats (explicit or implicit prompt, string or conversational; see
  docs/architecture.md §3), RMB pairwise JSON files, parquet, and Hugging Face dataset ids when the hub is reachable.
- ``SFTRow``: one CE-RM two-turn conversation written by a teacher (``cerm distill``), trained by
  ``cerm train sft``.

Bad rows are never dropped silently: readers return a ``RowProblem`` naming file, line and field for each.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cerm.io import DataError, read_rows
from cerm.prompts import render_query
from cerm.types import Message, Query

logger = logging.getLogger(__name__)

DOMAINS = ("chat", "code", "math", "safety")
_HF_ID_RE = re.compile(r"^[\w.-]+/[\w.-]+$")
# [R] ours: category keywords -> training domain; the first match wins, anything else is "chat"
_DOMAIN_KEYWORDS = (
    ("safety", ("harmless", "safety", "refus", "toxic", "harm")),
    ("code", ("code", "coding", "program")),
    ("math", ("math", "reasoning")),
)


@dataclass(frozen=True)
class PreferencePair:
    """One curated training instance: a query with a preferred and a dispreferred response."""

    id: str
    prompt: Query
    chosen: str
    rejected: str
    source: str = ""
    domain: str = "chat"

    @property
    def prompt_text(self) -> str:
        """The query as the judge sees it in the ``{query}`` slot."""
        return render_query(self.prompt)

    def to_dict(self) -> dict[str, Any]:
        """The pair as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class RowProblem:
    """Why one input row was rejected, with its location, e.g. ``pairs.jsonl:12: field 'chosen': empty``."""

    file: str
    line: int
    field: str
    message: str
    unit: Literal["line", "item", "row"] = "line"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.unit == "line" else f"{self.file} {self.unit} {self.line}"
        return f"{where}: field {self.field!r}: {self.message}"


@dataclass(frozen=True)
class LoadResult:
    """The pairs read from a source and the rows that could not be used."""

    pairs: list[PreferencePair]
    problems: list[RowProblem]


class _MessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str


class _PairIn(BaseModel):
    """A preference row as found in a file (TRL formats); normalised into ``PreferencePair``."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)
    id: str | None = None
    prompt: str | list[_MessageIn] | None = None
    chosen: str | list[_MessageIn]
    rejected: str | list[_MessageIn]
    source: str | None = None
    domain: str | None = None
    category: str | None = None


def infer_domain(category: str) -> str:
    """Map a free-text category (e.g. RMB's ``category_path``) onto chat/code/math/safety [R]."""
    low = category.lower()
    for domain, words in _DOMAIN_KEYWORDS:
        if any(w in low for w in words):
            return domain
    return "chat"


# ---- reading raw rows ---------------------------------------------------------------------------
def _raw_rows(path: Path) -> Iterator[tuple[int, Any, Literal["line", "item", "row"]]]:
    """(position, row, unit) for every row of one JSONL / JSON-array / parquet file (``cerm.io.read_rows``:
    a line that is not UTF-8, not JSON or holds a lone surrogate comes back as a ``_BadRow``).
    """
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError.at(str(path), None, f"unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet.")
    for row in read_rows(path):
        unit: Literal["line", "item", "row"] = (
            "item" if ": element " in row.where else "row" if ": row " in row.where else "line")
        pos = row.position if unit == "line" else row.position + 1
        yield pos, row.data if row.error is None else _BadRow(row.error), unit


@dataclass(frozen=True)
class _BadRow:
    error: DataError


def source_files(path: Path) -> list[Path]:
    """A file as given, or every .jsonl/.json/.parquet file under a directory (sorted)."""
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in (".jsonl", ".json", ".parquet") and p.is_file())
        if not found:
            raise ValueError(f"{path}: no .jsonl, .json or .parquet files inside.")
        return found
    return [path]


def _hf_rows(dataset_id: str, split: str) -> Iterator[tuple[int, Any, Literal["line", "item", "row"]]]:
    import datasets

    try:
        ds = datasets.load_dataset(dataset_id, split=split)
    except OSError as e:  # offline hub, missing dataset
        raise ValueError(
            f"could not load Hugging Face dataset {dataset_id!r} (split {split!r}): {e}. "
            "Without hub access, export it to JSONL or parquet and pass the file."
        ) from None
    for i, row in enumerate(ds, 1):
        yield i, row, "row"


# ---- normalising one row ------------------------------------------------------------------------
def _rmb_row(row: dict[str, Any]) -> dict[str, Any]:
    """RMB pairwise item -> TRL explicit-prompt row (note RMB's ``reject``, not ``rejected``)."""
    category = str(row.get("category_path", ""))
    return {
        "id": f"rmb/{category}:{row.get('pair_uid')}",
        "prompt": row.get("conversation_input"),
        "chosen": (row.get("chosen") or {}).get("answer") if isinstance(row.get("chosen"), dict) else None,
        "rejected": (row.get("reject") or {}).get("answer") if isinstance(row.get("reject"), dict) else None,
        "source": "rmb",
        "category": category,
    }


def _split_conversation(chosen: list[_MessageIn], rejected: list[_MessageIn]) -> tuple[list[Message], str, str]:
    """Implicit-prompt rows: the shared leading messages are the prompt, then one assistant turn each."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    prompt = [{"role": m.role, "content": m.content} for m in chosen[:n]]
    if not prompt:
        raise _FieldError("prompt", "no prompt field and chosen/rejected share no leading messages")
    return prompt, _one_assistant(chosen[n:], "chosen"), _one_assistant(rejected[n:], "rejected")  # type: ignore[return-value]


def _one_assistant(messages: list[_MessageIn], name: str) -> str:
    if len(messages) != 1 or messages[0].role != "assistant":
        roles = [m.role for m in messages]
        raise _FieldError(name, f"must be exactly one assistant message after the prompt; got roles {roles}")
    return messages[0].content


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def normalise_row(raw: Any, default_id: str, default_source: str) -> PreferencePair:
    """Validate one raw row and return the normalised pair; raises ``_FieldError`` naming the field."""
    if isinstance(raw, _BadRow):
        raise _FieldError(raw.error.field or "<line>", raw.error.problem)
    if not isinstance(raw, dict):
        raise _FieldError("<row>", f"expected a JSON object, got {type(raw).__name__}")
    if "bon_uid" in raw:
        raise _FieldError("bon_uid", "an RMB Best-of-N list is not a preference pair; pass Pairwise_set files")
    if "conversation_input" in raw:
        raw = _rmb_row(raw)
    try:
        row = _PairIn.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "<row>"
        raise _FieldError(field, err["msg"]) from None
    prompt: Query
    if row.prompt is None:
        if isinstance(row.chosen, str) or isinstance(row.rejected, str):
            raise _FieldError("prompt", "missing; string chosen/rejected need an explicit prompt")
        prompt, chosen, rejected = _split_conversation(row.chosen, row.rejected)
    else:
        prompt = row.prompt if isinstance(row.prompt, str) else [{"role": m.role, "content": m.content}
                                                                  for m in row.prompt]
        chosen = row.chosen if isinstance(row.chosen, str) else _one_assistant(row.chosen, "chosen")
        rejected = row.rejected if isinstance(row.rejected, str) else _one_assistant(row.rejected, "rejected")
    try:
        text = render_query(prompt)
    except ValueError as e:
        raise _FieldError("prompt", str(e)) from None
    last = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    if not text.strip() or not last.strip():
        raise _FieldError("prompt", "empty user turn")
    for name, value in (("chosen", chosen), ("rejected", rejected)):
        if not value.strip():
            raise _FieldError(name, "empty response")
    domain = row.domain or infer_domain(row.category or "")
    return PreferencePair(id=row.id or default_id, prompt=prompt, chosen=chosen, rejected=rejected,
                          source=row.source or default_source, domain=domain)


def load_pairs(source: str | Path, *, split: str = "train", strict: bool = False) -> LoadResult:
    """Read preference pairs from a file, a directory of files, or a Hugging Face dataset id.

    Args:
        source: a .jsonl / .json / .parquet file, a directory (searched recursively), or ``owner/name``.
        split: the split to load for a dataset id.
        strict: raise on the first bad row instead of collecting it.

    Returns:
        The valid pairs and one ``RowProblem`` per rejected row (invalid schema, empty turn, duplicate id).
    """
    path = Path(source)
    if path.exists():
        streams = [(str(f), f.stem, _raw_rows(f)) for f in source_files(path)]
    elif _HF_ID_RE.match(str(source)):
        streams = [(str(source), str(source), _hf_rows(str(source), split))]
    else:
        raise FileNotFoundError(f"{source}: no such file or directory (and not a Hugging Face dataset id).")
    pairs: list[PreferencePair] = []
    problems: list[RowProblem] = []
    first_seen: dict[str, str] = {}
    numbers: list[str] = []  # rows whose text fields held numbers, read as strings
    for name, stem, rows in streams:
        for pos, raw, unit in rows:
            number = next((k for k in ("prompt", "chosen", "rejected") if isinstance(raw, dict) and isinstance(
                raw.get(k), (int, float)) and not isinstance(raw.get(k), bool)), None)
            if number is not None:
                if strict:  # --strict: text fields hold text; a number is a column mix-up, not an answer "42"
                    raise ValueError(str(RowProblem(name, pos, number, f"a number ({raw[number]!r}), not text; "
                                                    "--strict reads only strings", unit)))
                numbers.append(f"{name}:{pos}" if unit == "line" else f"{name} {unit} {pos}")
            try:
                pair = normalise_row(raw, f"{stem}:{pos}", stem)
                if pair.id in first_seen:
                    raise _FieldError("id", f"duplicate id {pair.id!r} (first at {first_seen[pair.id]})")
            except _FieldError as e:
                problem = RowProblem(name, pos, e.field, str(e), unit)
                if strict:
                    raise ValueError(str(problem)) from None
                problems.append(problem)
                continue
            first_seen[pair.id] = f"{name}:{pos}"
            pairs.append(pair)
    if problems:
        logger.warning("%s: %d bad rows rejected; first: %s", source, len(problems), problems[0])
    if numbers:
        logger.warning("%s: %d row(s) have a number as prompt/chosen/rejected, read as text (first: %s); check "
                       "the columns", source, len(numbers), numbers[0])
    return LoadResult(pairs, problems)


def write_pairs(path: str | Path, pairs: list[PreferencePair]) -> None:
    """Write pairs as JSONL (``PreferencePair.to_dict`` per line)."""
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
