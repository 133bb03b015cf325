"""``cerm.io``'s row reader against hostile JSON: every bad row a ``file:line: field: problem``, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cerm.io import MAX_DEPTH, decode_json, read_jsonl_output, read_rows

GOOD = json.dumps({"query": "q", "responses": ["a"]})
DEEP = "[" * 100_000 + "]" * 100_000  # past the JSON decoder's own stack: RecursionError in json.loads
DIGITS = "9" * 5000  # past Python's int conversion limit (4,300 digits): ValueError in json.loads


@pytest.mark.parametrize(("line", "field", "problem"), [
    ('{"query": ' + DEEP + ', "responses": ["a"]}', "query[0][0]", f"nested deeper than {MAX_DEPTH} levels"),
    ('{"query": "q", "responses": ["a"], "meta": {"k": ' + "[" * 150 + "]" * 150 + "}}", "meta.k[0][0]",
     f"nested deeper than {MAX_DEPTH} levels"),  # decodes, but every later walk over it would not
    ('{"id": ' + DIGITS + ', "query": "q", "responses": ["a"]}', "id", "an integer of more than 4300 digits"),
    ('{"query": "q", "responses": ["a"], "meta": [1, {"n": -' + DIGITS + '}]}', "meta[1].n", "more than 4300"),
    ('{"q\\"x": "a\\\\", "deep": ' + DEEP + "}", "deep[0]", "nested deeper"),  # escaped quotes in strings
])
def test_hostile_lines_are_located_errors(tmp_path: Path, line: str, field: str, problem: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(f"{GOOD}\n{line}\n{GOOD}\n")
    rows = list(read_rows(path))
    assert [r.error is None for r in rows] == [True, False, True]  # the bad line alone; reading goes on
    err = rows[1].error
    assert err is not None and err.where == f"{path}:2" and err.field.startswith(field) and problem in err.problem
    assert str(err).startswith(f"{path}:2: field '{field}")


def test_a_json_array_file_names_the_line_of_the_deep_element(tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(f"[\n{GOOD},\n" + '{"query": "q", "responses": ' + DEEP + "}\n]\n")
    with pytest.raises(ValueError, match=r"rows.json:3: field '\[1\].responses\[0\].*nested deeper"):
        list(read_rows(path))


def test_decode_json_returns_problems_as_values() -> None:
    assert decode_json('{"a": 1}') == ({"a": 1}, None, None)
    assert decode_json('{"a": ')[2].startswith("invalid JSON at column 7")
    assert decode_json("[" * 1500 + "]" * 1500)[2].startswith("nested deeper")


def test_a_hostile_line_in_an_output_is_an_error_and_a_torn_last_line_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": 1}\n{"id": ' + DIGITS + "}\n")  # the last line has a newline: not a torn write
    with pytest.raises(ValueError, match=r"out.jsonl:2: an integer of more than 4300 digits"):
        read_jsonl_output(path)
    path.write_text('{"id": 1}\n{"id": ' + DEEP[:5000])  # cut mid-write
    assert read_jsonl_output(path) == [(1, {"id": 1})]
    assert path.read_text() == '{"id": 1}\n'
