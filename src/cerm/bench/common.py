"""What every benchmark shares: the normalised item, file/hub readers with located errors, selection.

Each benchmark module keeps only what is its own (schema → ``BenchItem``, official aggregation); reading
JSON/JSONL/parquet, HF loading, field checks and ``--subset``/``--limit`` selection live here.
"""

from __future__ import annotations

import builtins
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cerm.io import DataError, read_rows
from cerm.types import Message, Query

logger = logging.getLogger(__name__)

Mode = Literal["pairwise", "bon", "ratings"]
SUPPORTED_SUFFIXES = (".json", ".jsonl", ".parquet")


@dataclass(frozen=True)
class BenchItem:
    """One prompt and all its candidates (docs/architecture.md §3, our normalised record [R]).

    ``correct`` lists the indices of the preferred/correct candidates; ``roles`` names each candidate
    (``chosen``, ``rejected[1]``, ``A`` ...). All candidates of an item are judged under one criteria set.
    """

    id: str
    benchmark: str
    subset: str
    prompt: Query
    candidates: tuple[str, ...]
    correct: tuple[int, ...]
    roles: tuple[str, ...]
    mode: Mode
    meta: Mapping[str, Any] = field(default_factory=dict)
    where: str = field(default="", compare=False)  # the row it came from ("file:line"), for messages

    def __post_init__(self) -> None:
        if len(self.roles) != len(self.candidates):
            raise ValueError(f"item {self.id}: {len(self.roles)} roles for {len(self.candidates)} candidates.")
        if any(not 0 <= i < len(self.candidates) for i in self.correct):
            raise ValueError(f"item {self.id}: correct indices {self.correct} out of range.")


@dataclass(frozen=True)
class Outcome:
    """An item's shape plus one score per candidate (None = failed); all that metrics read.

    Rebuilt from a run's ``items.jsonl`` alone, so metrics and ``bench compare`` need no benchmark data.
    """

    id: str
    subset: str
    mode: Mode
    correct: tuple[int, ...]
    scores: tuple[float | None, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def incorrect(self) -> tuple[int, ...]:
        """The indices of the candidates that are not correct."""
        return tuple(i for i in range(len(self.scores)) if i not in self.correct)


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset the benchmark can load when the hub is reachable."""

    hf_id: str
    split: str
    subset: str | None = None  # the benchmark subset this source feeds (to skip it under --subset)


Parser = Callable[[Iterable["Row"], str], list[BenchItem]]
Aggregator = Callable[[Sequence[Outcome]], dict[str, float]]


@dataclass(frozen=True)
class Benchmark:
    """A registry entry: how to read a benchmark and how to score it officially."""

    name: str
    title: str
    parse: Parser
    aggregate: Aggregator
    headline: Callable[[Mapping[str, float]], str]
    subsets: tuple[str, ...]
    local_dir: str | None = None  # under the data root (shared/data)
    file_glob: str = "*.json*"
    hf: tuple[HFSource, ...] = ()
    notes: tuple[str, ...] = ()
    cluster: Callable[[Outcome], str] = lambda o: o.id  # bootstrap resampling unit


# ---- rows with locations ---------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One raw record and where it came from (``file:line`` or ``file: element i``) for error messages."""

    data: Mapping[str, Any]
    where: str

    def error(self, name: str, problem: str) -> DataError:
        """A ``DataError`` naming this row's place and ``name``."""
        return DataError(f"{self.where}: field {name!r}: {problem}")

    def get(self, name: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
        """Field ``name``, checked to be a ``kind``; a missing one raises unless ``optional`` (then None)."""
        if name not in self.data or self.data[name] is None:
            if optional:
                return None
            raise self.error(name, "missing; check that the file uses the official schema.")
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            raise self.error(name, f"expected {_kind_name(kind)}, got {type(value).__name__} {value!r:.60}")
        return value

    def str(self, name: str) -> str:
        """Field ``name`` as a string."""
        return self.get(name, str)

    # below the ``str`` method, a bare ``str`` in an annotation would name the method: spell the type in full
    def str_list(self, name: builtins.str, *, length: int | None = None, min_length: int = 1
                 ) -> list[builtins.str]:
        """Field ``name`` as a list of strings, of ``length`` entries or at least ``min_length``."""
        value = self.get(name, (list, tuple))
        if length is not None and len(value) != length:
            raise self.error(name, f"expected {length} entries, got {len(value)}.")
        if len(value) < min_length:
            raise self.error(name, f"expected at least {min_length} entries, got {len(value)}.")
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.error(f"{name}[{i}]", f"expected str, got {type(v).__name__}.")
        return list(value)

    def messages(self, name: builtins.str) -> list[Message]:
        """A chat history ``[{role, content, ...}]`` whose last message is the user's (extra keys dropped)."""
        value = self.get(name, (list, tuple))
        if not value:
            raise self.error(name, "empty conversation.")
        out: list[Message] = []
        for i, m in enumerate(value):
            if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(
                    m.get("content"), str):
                raise self.error(f"{name}[{i}]", "expected {role: str, content: str}.")
            out.append({"role": m["role"], "content": m["content"]})
        if out[-1]["role"] != "user":
            raise self.error(f"{name}[{len(out) - 1}].role", f"the last message must be 'user', got {out[-1]['role']!r}.")
        return out


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


# ---- readers ---------------------------------------------------------------------------------
def bench_rows(path: Path) -> Iterator[Row]:
    """One benchmark file's rows as ``Row``s, read by ``cerm.io.read_rows`` (the one row reader: UTF-8, JSON,
    text, the file types); a benchmark file is official data, so its first bad line raises.
    """
    for raw in read_rows(path):
        if raw.error is not None:
            raise raw.error
        assert raw.data is not None
        yield Row(raw.data, raw.where)


def hf_rows(source: HFSource) -> Iterator[Row]:
    """Rows of a Hugging Face dataset split (needs the hub, or a populated HF cache)."""
    import datasets

    ds = datasets.load_dataset(source.hf_id, split=source.split)
    for i, obj in enumerate(ds):
        yield Row(obj, f"hf:{source.hf_id}[{source.split}] row {i}")


def data_files(path: Path, pattern: str) -> list[Path]:
    """A file as given, or the supported files under a directory (sorted, so runs are reproducible)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"benchmark data {path} does not exist; pass --data FILE_OR_DIR.")
    files = sorted(p for p in path.glob(f"**/{pattern}") if p.suffix in SUPPORTED_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no {pattern} files under {path}; pass --data with the benchmark files.")
    return files


def load_items(bench: Benchmark, sources: Sequence[Path | HFSource]) -> list[BenchItem]:
    """Parse every source; item ids must be unique because resuming skips ids already written."""
    items: list[BenchItem] = []
    for src in sources:
        if isinstance(src, HFSource):
            items.extend(bench.parse(hf_rows(src), f"hf:{src.hf_id}"))
        else:
            for f in data_files(src, bench.file_glob):
                rows = _Counted(bench_rows(f))
                items.extend(bench.parse(rows, str(f)))
                if not rows.n:
                    raise DataError.at(str(f), None, f"the file holds no rows (it is empty); {bench.title} "
                                       "data needs at least one.")
    seen: dict[str, BenchItem] = {}
    for it in items:
        if it.id in seen:
            first = seen[it.id]
            raise DataError.at(it.where or bench.name, "id", f"duplicate item id {it.id!r} (first at "
                               f"{first.where or 'an earlier row'}, subset {first.subset!r}); each item needs a "
                               "unique id.")
        seen[it.id] = it
    return items


class _Counted:
    """An iterator of rows that counts what it yields (to tell an empty file from an empty selection)."""

    def __init__(self, rows: Iterator[Row]) -> None:
        self._rows, self.n = rows, 0

    def __iter__(self) -> Iterator[Row]:
        for row in self._rows:
            self.n += 1
            yield row


def resolve_sources(bench: Benchmark, data: Sequence[str] | None, data_root: Path | None,
                    subsets: Sequence[str] = ()) -> list[Path | HFSource]:
    """Local paths as given (``hf:ID[:SPLIT]`` means the hub), else the local copy, else the HF ids.

    HF sources that feed only subsets outside ``subsets`` are skipped (PPE has one dataset per set).
    """
    if data:
        out: list[Path | HFSource] = []
        for d in data:
            if d.startswith("hf:"):
                hf_id, _, split = d[3:].partition(":")
                known = {s.hf_id: s for s in bench.hf}
                out.append(HFSource(hf_id, split or (known[hf_id].split if hf_id in known else "test"),
                                    known[hf_id].subset if hf_id in known else None))
            else:
                out.append(Path(d))
        return out
    if bench.local_dir and data_root is not None and (data_root / bench.local_dir).exists():
        return [data_root / bench.local_dir]
    if bench.hf:
        return [s for s in bench.hf if not subsets or s.subset is None
                or any(matches_subset(s.subset, w) or matches_subset(w, s.subset) for w in subsets)]
    raise FileNotFoundError(f"no local copy of {bench.name} under {data_root}; pass --data FILE_OR_DIR.")


# ---- selection -------------------------------------------------------------------------------
def matches_subset(subset: str, wanted: str) -> bool:
    """``wanted`` selects a subset exactly or any subset below it in the ``/`` hierarchy."""
    return subset == wanted or subset.startswith(wanted.rstrip("/") + "/")


def select_items(items: Sequence[BenchItem], subsets: Sequence[str] = (), limit: int | None = None,
                 seed: int = 0) -> list[BenchItem]:
    """Filter by subset, then keep ``limit`` items drawn with ``random.Random(seed)``.

    The draw is a prefix of one seeded permutation, so ``--limit 10`` is contained in ``--limit 20``
    with the same seed (a run can grow and reuse everything already judged). Input order is kept.
    """
    chosen = list(items)
    if subsets:
        for s in subsets:
            if not any(matches_subset(it.subset, s) for it in chosen):
                known = sorted({it.subset for it in items})
                raise ValueError(f"subset {s!r} matches no item; known subsets: {', '.join(known[:40])}"
                                 + (" ..." if len(known) > 40 else ""))
        chosen = [it for it in chosen if any(matches_subset(it.subset, s) for s in subsets)]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit ({limit}) must be >= 1.")
        order = list(range(len(chosen)))
        random.Random(seed).shuffle(order)
        keep = set(order[:limit])
        chosen = [it for i, it in enumerate(chosen) if i in keep]
    return chosen


def subset_prefixes(subset: str) -> list[str]:
    """``a/b/c`` → ``[a, a/b, a/b/c]``: every level a rate is reported at."""
    parts = subset.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def first_present(metrics: Mapping[str, float], keys: Iterable[str]) -> str:
    """The first key present in ``metrics`` (a headline preference list), else the first metric."""
    for k in keys:
        if k in metrics:
            return k
    return next(iter(metrics), "")
