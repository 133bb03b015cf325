"""Reading user JSONL files: every bad line is reported as ``file:line: field: problem``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from cerm.types import Message

T = TypeVar("T", bound=BaseModel)


class BadLine(ValueError):
    """A JSONL line that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class Line(Generic[T]):
    lineno: int
    record: T | None
    error: BadLine | None


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

    @field_validator("query")
    @classmethod
    def _query_not_empty(cls, v: str | list[Message]) -> str | list[Message]:
        if isinstance(v, str) and not v.strip():
            raise ValueError("query is empty")
        if isinstance(v, list) and not v:
            raise ValueError("query message list is empty")
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


def read_jsonl(path: str | Path, model: type[T]) -> Iterator[Line[T]]:
    """Yield each non-blank line validated as ``model``, or the error that names where it went wrong."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Line(lineno, None, BadLine(f"{where}: not UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})"))
                continue
            if not text.strip():
                continue
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                yield Line(lineno, None, BadLine(f"{where}: invalid JSON at column {e.colno}: {e.msg}"))
                continue
            if not isinstance(data, dict):
                yield Line(lineno, None, BadLine(f"{where}: expected a JSON object, got {type(data).__name__}"))
                continue
            try:
                yield Line(lineno, model.model_validate(data), None)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(x) for x in err["loc"]) or "<record>"
                yield Line(lineno, None, BadLine(f"{where}: field {field!r}: {err['msg']}"))
