"""cerm.train.sft.data: the SFT rows `cerm distill` writes, read back with located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cerm.io import DataError
from cerm.train.sft.data import load_sft_rows


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _sft_row(**kw) -> dict:
    row = {"id": "p:chosen", "pair_id": "p", "response_role": "chosen", "train_criteria": True, "score": 8,
           "partner_score": 3, "teacher": "t", "prompt_version": "v",
           "messages": [{"role": r, "content": "x"} for r in ("user", "assistant", "user", "assistant")]}
    row.update(kw)
    return row


def test_load_sft_rows_errors(tmp_path: Path) -> None:
    good = _jsonl(tmp_path / "ok.jsonl", [_sft_row()])
    assert load_sft_rows(good)[0].pair_id == "p"
    bad = _jsonl(tmp_path / "bad.jsonl", [_sft_row(), _sft_row(score="high")])
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field 'score'"):
        load_sft_rows(bad)
    roles = _jsonl(tmp_path / "roles.jsonl", [_sft_row(messages=[{"role": "user", "content": "x"}])])
    with pytest.raises(ValueError, match=r"roles\.jsonl:1: field 'messages'"):
        load_sft_rows(roles)
    empty = _jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(ValueError, match="cerm distill"):
        load_sft_rows(empty)


def test_sft_loader_names_line_and_field(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_bytes(b"\xff\n")
    with pytest.raises(DataError, match=r"sft\.jsonl:1: not UTF-8"):
        load_sft_rows(path)
    path.write_text("")
    with pytest.raises(DataError, match="no SFT rows"):
        load_sft_rows(path)
