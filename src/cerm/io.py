r"""Files in and records out: the one row reader, its one error type, and the one Judgment serializer.

Every reader of user data (``score``/``bon`` input, benchmark files, preference pairs, SFT rows, cache
imports) goes through ``read_rows``, which validates text as it reads: a line that is not UTF-8, not
JSON, not an object, or holds a lone surrogate (``"\ud800"`` is valid JSON but no text) becomes a
``DataError`` naming file, line and field. Callers reject it, or skip and count it (``--skip-bad``).

Every output that carries a judgment's score (CLI JSONL, bench ``items.jsonl``, the server's JSON, the
judgment cache) is built by ``judgment_record``, so each one carries the same flags (off-grid and the
injection flags of ``cerm.injection``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from cerm.types import Criteria, Judgment, Message, ParseStatus

logger = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)


class DataError(ValueError):
    """Input that cannot be used. The message names the place (``file:line``, ``file: element 3``, a
    request), the field and the problem; ``where``, ``field`` and ``problem`` keep them apart.
    """

    def __init__(self, message: str, *, where: str = "", field: str | None = None, problem: str = "") -> None:
        super().__init__(message)
        self.where = where
        self.field = field
        self.problem = problem or message

    @classmethod
    def at(cls, where: str, field: str | None, problem: str) -> DataError:
        """``where: field 'x': problem`` (or ``where: problem`` without a field)."""
        message = f"{where}: field {field!r}: {problem}" if field else f"{where}: {problem}"
        return cls(message, where=where, field=field, problem=problem)


BadLine = DataError  # the old name of a bad JSONL line


class WriteError(RuntimeError):
    """A file or store that could not be written (a full disk, a full or unreachable cache) or, for a
    store, read.

    The message names the file (or URL) and says that the run can be resumed: everything finished
    before it is kept (outputs are flushed per record, the caches commit per entry).
    """

    def __init__(self, target: str, reason: str, action: str = "write") -> None:
        super().__init__(f"{target}: cannot {action} ({reason}). Everything finished before it is kept: "
                         "free space (or fix the cause) and rerun the same command to resume.")
        self.target = target
        self.reason = reason


# ---- text checks ---------------------------------------------------------------------------------
def find_bad_text(value: Any, path: str = "", depth: int = 0) -> tuple[str, str] | None:
    r"""(field path, problem) of the first string in ``value`` that is not valid text, else None.

    A lone surrogate (``\ud800``) decodes from JSON but cannot be encoded as UTF-8: it would crash the
    cache's hashing or a tokenizer far from the file that held it. A value nested deeper than
    ``MAX_DEPTH`` is refused too: every later walk over it (hashing, validation) would hit Python's
    recursion limit far from the file.
    """
    if depth > MAX_DEPTH:
        return _short_field(path), _too_deep_problem()
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            return path or "<text>", f"lone surrogate {value[e.start]!r} at character {e.start}; not valid text"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = (find_bad_text(k, path or "<key>", depth + 1)
                     or find_bad_text(v, f"{path}.{k}" if path else str(k), depth + 1))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            if found := find_bad_text(v, f"{path}[{i}]", depth + 1):
                return found
    return None


# ---- JSON decoding: every failure a located problem, never a traceback ---------------------------
MAX_DEPTH = 100  # [R] rows nest a few levels (chat messages: 3); far below Python's recursion limit (1000)


def _too_deep_problem() -> str:
    return f"nested deeper than {MAX_DEPTH} levels; cerm reads rows nested at most {MAX_DEPTH} deep."


def _short_field(path: str) -> str:
    return path if len(path) <= 40 else path[:40] + "…"


def _field_path(path: list[str | int]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return _short_field(out)


def _deep_place(text: str) -> tuple[int, list[str | int]] | None:
    """(offset, path of keys/indices) where ``text`` nests deeper than ``MAX_DEPTH``, else None.

    Only run once the decoder has failed: a scan of the raw text, so a line too deep for the decoder's
    stack still gets its field named.
    """
    path: list[Any] = []  # per open container: its current key (object) or index (array)
    kinds: list[str] = []
    last, i = "", 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = text.find('"', i + 1)
            while j != -1 and (len(text[i + 1:j]) - len(text[i + 1:j].rstrip("\\"))) % 2:
                j = text.find('"', j + 1)  # that quote was escaped (an odd run of backslashes before it)
            if j == -1:
                return None
            last, i = text[i + 1:j], j + 1
            continue
        if c in "[{":
            kinds.append(c)
            path.append(0 if c == "[" else "")
            if len(kinds) > MAX_DEPTH:
                return i, path
        elif c in "]}" and kinds:
            kinds.pop()
            path.pop()
        elif c == ":" and kinds and kinds[-1] == "{":
            path[-1] = last
        elif c == "," and kinds and kinds[-1] == "[":
            path[-1] += 1
        i += 1
    return None


class _LongInt(str):
    """An integer literal longer than Python converts (``sys.get_int_max_str_digits``), kept as its digits."""


def _find_long_int(value: Any, path: list[str | int]) -> list[str | int] | None:
    if isinstance(value, _LongInt):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        if (found := _find_long_int(v, [*path, k])) is not None:
            return found
    return None


def decode_json(text: str) -> tuple[Any, str | None, str | None]:
    """``(value, field, problem)`` of one JSON text: ``problem`` is None when it decoded.

    Besides invalid JSON, two inputs that ``json.loads`` turns into tracebacks without a place are named
    here with their field: nesting past the decoder's stack (``RecursionError``) and an integer longer
    than Python converts (4,300 digits by default).
    """
    try:
        return json.loads(text), None, None
    except json.JSONDecodeError as e:
        return None, None, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}" if e.lineno > 1 else (
            f"invalid JSON at column {e.colno}: {e.msg}")
    except RecursionError:
        place = _deep_place(text)
        return None, _field_path(place[1]) if place and place[1] else None, _too_deep_problem()
    except ValueError:  # "Exceeds the limit (4300 digits) for integer string conversion"
        limit = getattr(sys, "get_int_max_str_digits", lambda: 4300)()

        def parse_int(digits: str) -> int | str:
            return _LongInt(digits) if len(digits.lstrip("-")) > limit else int(digits)

        try:
            found = _find_long_int(json.loads(text, parse_int=parse_int), [])
        except ValueError:
            found = None
        field = _field_path(found) if found else None
        return None, field, f"an integer of more than {limit} digits (Python's conversion limit); write it as a string."


def check_text(value: str) -> str:
    """A pydantic field validator body: reject a string that is not valid text (a lone surrogate)."""
    found = find_bad_text(value)
    if found:
        raise ValueError(found[1])
    return value


def check_chat(messages: list[Message]) -> None:
    """A chat query must end with the user's turn: the response judged answers it."""
    if messages and messages[-1]["role"] != "user":
        raise ValueError(f"the last message must be from the user, got role {messages[-1]['role']!r} "
                         "(put the response to judge in responses, not in the query)")


# ---- the one row reader --------------------------------------------------------------------------
@dataclass(frozen=True)
class RawRow:
    """One object read from a file, or the error that names where it went wrong."""

    where: str  # "file:line", "file: element i" or "file: row i"
    position: int  # line number (JSONL), element or row index (JSON array, parquet)
    data: dict[str, Any] | None
    error: DataError | None


def read_rows(path: str | Path, *, as_jsonl: bool = False) -> Iterator[RawRow]:
    """Every row of a JSON Lines, JSON array or parquet file, validated as text.

    A ``.json`` file holding JSON Lines (what ``datasets`` writes) is read as lines. An unreadable file
    as a whole (not UTF-8 or not JSON in an array file, an unknown suffix) raises ``DataError``; a bad line
    is yielded as an error so the caller can reject or skip it. ``as_jsonl`` reads any file as JSON Lines.
    """
    path = Path(path)
    if as_jsonl:
        yield from _line_rows(path, path.read_bytes())
        return
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError(f"{path}: reading parquet needs pyarrow: pip install 'cerm[bench]' (or pyarrow)") from None

        for i, obj in enumerate(pq.read_table(path).to_pylist()):
            yield _checked(f"{path}: row {i}", i, obj)
        return
    if path.suffix not in (".json", ".jsonl"):
        raise DataError.at(str(path), None, f"unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet.")
    raw = path.read_bytes()
    if raw.lstrip()[:1] == b"[":  # a JSON array (also under .jsonl, as the bench reader always allowed)
        yield from _array_rows(path, raw)
        return
    yield from _line_rows(path, raw)


def _line_rows(path: Path, raw: bytes) -> Iterator[RawRow]:
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        where = f"{path}:{lineno}"
        line = line.rstrip(b"\r")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            column = len(line[: e.start].decode("utf-8", errors="replace")) + 1
            yield RawRow(where, lineno, None, DataError.at(
                where, None, f"not UTF-8: byte {line[e.start:e.start + 1]!r} at column {column}; save the file "
                "as UTF-8."))
            continue
        if not text.strip():
            continue
        obj, field, problem = decode_json(text)
        if problem is not None:
            yield RawRow(where, lineno, None, DataError.at(where, field, problem))
            continue
        yield _checked(where, lineno, obj)


def _array_rows(path: Path, raw: bytes) -> Iterator[RawRow]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        lineno = raw[: e.start].count(b"\n") + 1
        raise DataError.at(f"{path}:{lineno}", None, f"not UTF-8: byte {raw[e.start:e.start + 1]!r}; save the "
                           "file as UTF-8.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError.at(f"{path}:{e.lineno}", None, f"invalid JSON ({e.msg}, column {e.colno}).") from None
    except (ValueError, RecursionError):  # too deep, or an integer too long: found on the slow path
        _, field, problem = decode_json(text)
        place = _deep_place(text)
        where = f"{path}:{text.count(chr(10), 0, place[0]) + 1}" if place else str(path)
        raise DataError.at(where, field, problem or "cannot be decoded") from None
    if not isinstance(data, list):
        raise DataError.at(str(path), None, f"expected a JSON array of rows, got {type(data).__name__}.")
    for i, obj in enumerate(data):
        yield _checked(f"{path}: element {i}", i, obj)


def _checked(where: str, position: int, obj: Any) -> RawRow:
    if not isinstance(obj, dict):
        return RawRow(where, position, None, DataError.at(where, None,
                                                           f"expected a JSON object, got {type(obj).__name__}"))
    bad = find_bad_text(obj)
    if bad is not None:
        return RawRow(where, position, None, DataError.at(where, bad[0], bad[1]))
    return RawRow(where, position, obj, None)


def read_models(path: str | Path, model: type[T]) -> Iterator[tuple[str, T]]:
    """``(where, row)`` for each JSONL line of ``path`` validated as ``model``; the first bad line raises."""
    for raw in read_rows(Path(path), as_jsonl=True):
        if raw.error is not None:
            raise raw.error
        try:
            yield raw.where, model.model_validate(raw.data)
        except ValidationError as e:
            raise validation_error(raw.where, e) from None


def validation_error(where: str, e: ValidationError) -> DataError:
    """The first pydantic error as a located ``DataError``."""
    err = e.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or "<record>"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return DataError.at(where, field, msg)


@dataclass(frozen=True)
class Line(Generic[T]):
    """One row validated as a model, or the error that names where it went wrong."""

    lineno: int
    record: T | None
    error: DataError | None


def read_jsonl(path: str | Path, model: type[T]) -> Iterator[Line[T]]:
    """Each row validated as ``model``, or the error that names where it went wrong."""
    for row in read_rows(path):
        if row.error is not None:
            yield Line(row.position, None, row.error)
            continue
        try:
            yield Line(row.position, model.model_validate(row.data), None)
        except ValidationError as e:
            yield Line(row.position, None, validation_error(row.where, e))


class ScoreRow(BaseModel):
    """One item to judge: ``{"id"?, "query", "responses": [...]}`` (or a single ``"response"``)."""

    model_config = ConfigDict(extra="allow")

    id: str | int | None = None
    query: str | list[Message]
    responses: list[str]

    @model_validator(mode="before")
    @classmethod
    def _single_response(cls, data: object) -> object:
        if isinstance(data, dict) and "responses" not in data and "response" in data:
            data = {**data, "responses": [data["response"]]}
        return data

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_str_or_int(cls, v: object) -> object:
        # true would become 1 and collide with 1 and "1" [R]
        if v is not None and (isinstance(v, bool) or not isinstance(v, (str, int))):
            raise ValueError(f"id must be a string or an integer, got {type(v).__name__} {v!r:.40}")
        return v

    @field_validator("query")
    @classmethod
    def _query_not_empty(cls, v: str | list[Message]) -> str | list[Message]:
        if isinstance(v, str) and not v.strip():
            raise ValueError("query is empty")
        if isinstance(v, list):
            if not v:
                raise ValueError("query message list is empty")
            check_chat(v)
        return v

    @field_validator("responses")
    @classmethod
    def _responses_not_empty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("responses is empty; give at least one response")
        for i, r in enumerate(v):
            if not r.strip():
                raise ValueError(f"response {i} is empty (an empty response cannot be judged from a file; "
                                 "the Python API judges it as-is)")
        return v

    def input_sha256(self) -> str:
        """Identity of the item judged (query and responses), recorded in outputs to refuse a resume
        from another input.
        """
        blob = json.dumps([self.query, self.responses], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_score_rows(path: Path) -> tuple[list[ScoreRow], list[DataError]]:
    """``score``/``bon`` input with unique ids: an id-less line's id is its line number.

    Ids are compared as strings (``1`` and ``"1"`` are the same item when resuming), so a repeated id,
    or an explicit id equal to an id-less line's number, is an error at read time.
    """
    rows: list[tuple[int, ScoreRow]] = []
    bad: list[DataError] = []
    for line in read_jsonl(path, ScoreRow):
        if line.error is not None:
            bad.append(line.error)
        else:
            assert line.record is not None
            rows.append((line.lineno, line.record))
    first: dict[str, tuple[int, Any]] = {}  # id as text -> (its first line, the id there; None: no id)
    out: list[ScoreRow] = []
    for lineno, row in rows:
        given = row.id
        row = row.model_copy(update={"id": lineno}) if given is None else row
        key = str(row.id)
        if key in first:
            first_line, first_given = first[key]
            if given is None or first_given is None:
                how = " (an id-less line's id is its line number)"
            elif type(given) is not type(first_given):
                how = f" (as {first_given!r} there: ids are compared as text)"
            else:
                how = ""
            bad.append(DataError.at(f"{path}:{lineno}", "id", f"duplicate id {row.id!r}, first on line "
                                    f"{first_line}{how}; give every item a unique id."))
            continue
        first[key] = (lineno, given)
        out.append(row)
    return out, bad


# ---- outputs -------------------------------------------------------------------------------------
def judgment_record(j: Judgment, *, with_text: bool = True) -> dict[str, Any]:
    """The one JSON view of a ``Judgment`` (CLI, bench records, server, cache); ``judgment_from_record``
    reads it back. ``is_off_grid`` and ``injection_flags`` travel with every score.
    """
    record: dict[str, Any] = {
        "score": j.score, "status": j.status.value, "criterion_scores": list(j.criterion_scores),
        "other_points_score": j.other_points_score, "is_off_grid": j.is_off_grid,
        "injection_flags": list(j.injection_flags), "score_std": j.score_std, "criteria_key": j.criteria_key,
        "tokens_in": j.tokens_in, "tokens_out": j.tokens_out, "seconds": j.seconds, "attempts": j.attempts,
        "error": j.error, "is_response_truncated": j.is_response_truncated,
        # [R] the score readout at the box (null / [] unless the judge ran with expected_score=True)
        "expected_score": j.expected_score, "score_entropy": j.score_entropy, "score_probs": list(j.score_probs),
    }
    if with_text:
        record["text"] = j.text
    if j.samples:
        record["samples"] = [judgment_record(s, with_text=with_text) for s in j.samples]
    return record


def judgment_from_record(d: dict[str, Any]) -> Judgment:
    """A ``Judgment`` from ``judgment_record`` (or an older cache payload with the same field names)."""
    names = Judgment.__dataclass_fields__
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs["status"] = ParseStatus(d["status"])
    kwargs["criterion_scores"] = tuple(d.get("criterion_scores", ()))
    kwargs["injection_flags"] = tuple(d.get("injection_flags", ()))
    kwargs["score_probs"] = tuple(d.get("score_probs") or ())
    kwargs["samples"] = tuple(judgment_from_record(s) for s in d.get("samples", ()))
    return Judgment(**kwargs)


def criteria_record(c: Criteria, *, with_text: bool = True) -> dict[str, Any]:
    """The one JSON view of a ``Criteria``."""
    record: dict[str, Any] = {
        "key": c.key, "source": c.source, "parse_warning": c.parse_warning, "tokens_in": c.tokens_in,
        "tokens_out": c.tokens_out, "seconds": c.seconds,
        "items": [{"term": i.term, "description": i.description} for i in c.items],
    }
    if with_text:
        record["text"] = c.text
    return record


@dataclass(frozen=True)
class OutputRead:
    """What ``read_output`` found: ``(line, record)`` pairs, and whether a torn last line was left out."""

    records: list[tuple[int, dict[str, Any]]]
    torn_line: int | None = None  # the line number of a partial last record (a kill during a write)


def read_output(path: str | Path, *, required: tuple[str, ...] = (), what: str = "", repair: bool = True
                ) -> OutputRead:
    """The one reader of cerm's own JSONL outputs (score/bon ``-o``, bench ``items.jsonl``, probe items,
    RL ``metrics.jsonl``, SFT rows): ``(line, record)`` of every line, each a JSON object with ``required``.

    A torn last line (a kill during a write: no newline after it, and not a whole record) is left out; with
    ``repair`` (a writer about to resume) it is also cut from the file, and a whole last record without its
    newline gets one, so the next record starts on a line of its own. A reader (``repair=False``: the
    viewer, plots) never changes the file. A bad line elsewhere, or a missing
    field, is a ``DataError`` naming file, line and field (``what`` says what the line should have been).
    """
    path = Path(path)
    if not path.exists():
        return OutputRead([])
    raw = path.read_bytes()
    out: list[tuple[int, dict[str, Any]]] = []
    good = 0  # bytes of whole lines so far
    lines = raw.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        is_last = lineno == len(lines)  # the text after the last newline: empty unless a write was cut
        if line.strip():
            try:
                rec, _, problem = decode_json(line.decode("utf-8"))
            except UnicodeDecodeError as e:
                rec, problem = None, f"not UTF-8 ({e.reason})"
            if problem is None and not isinstance(rec, dict):
                problem = f"expected a JSON object, got {type(rec).__name__}"
            if problem is not None:
                if is_last:
                    if repair:
                        logger.warning("%s:%d: dropping a partial last record left by an interrupted run", path,
                                       lineno)
                        with open(path, "r+b") as f:
                            f.truncate(good)
                    return OutputRead(out, lineno)
                raise DataError.at(f"{path}:{lineno}", None, f"{problem}; fix or delete the line to resume.")
            if is_last and repair:  # a whole record without its newline: the next one must not join its line
                with open(path, "ab") as f:
                    f.write(b"\n")
            for name in required:
                if name not in rec:
                    raise DataError.at(f"{path}:{lineno}", name, f"missing; not {what or 'a cerm output'}.")
            out.append((lineno, rec))
        if not is_last:
            good += len(line) + 1
    return OutputRead(out)


def read_jsonl_output(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``read_output(path).records``, repairing a torn last line (the name the resume code used)."""
    return read_output(path).records


@contextlib.contextmanager
def locked_append(path: Path) -> Iterator[IO[str]]:
    """Open ``path`` for appending under an exclusive lock: a second writer fails at once, clearly,
    instead of duplicating every record.
    """
    try:
        f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as e:
        raise WriteError(str(path), e.strerror or str(e)) from None
    finished = False
    try:
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock
            pass
        except OSError:
            raise DataError.at(str(path), None, "another process is writing this output; wait for it or use "
                               "another file.") from None
        yield f
        finished = True
    finally:
        try:
            f.close()  # flushes: on a full disk this fails too
        except OSError as e:
            if finished:  # else the error on its way out already names the file
                raise WriteError(str(path), e.strerror or str(e)) from None


def append_line(f: IO[str], line: str) -> None:
    """Write one line and flush it, so a killed run keeps every finished record; a full disk is a
    ``WriteError`` naming the file (the torn last line is dropped on resume: ``read_jsonl_output``).
    """
    try:
        f.write(line + "\n")
        f.flush()
    except OSError as e:
        raise WriteError(str(getattr(f, "name", "the output")), e.strerror or str(e)) from None
