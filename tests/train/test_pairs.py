"""cerm.train.pairs: preference pairs in every TRL format, RMB files, parquet, and located errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cerm.train.pairs import (
    PreferencePair,
    infer_domain,
    load_pairs,
    write_pairs,
)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_trl_formats_are_normalised(tmp_path: Path) -> None:
    conv_prompt = [{"role": "user", "content": "Hi?"}]
    rows = [
        # explicit prompt, standard (strings)
        {"id": "a", "prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "domain": "math"},
        # explicit prompt, conversational
        {"prompt": conv_prompt, "chosen": [{"role": "assistant", "content": "Hello!"}],
         "rejected": [{"role": "assistant", "content": "Go away."}]},
        # implicit prompt, conversational: the shared prefix is the prompt
        {"chosen": [{"role": "user", "content": "Write code"}, {"role": "assistant", "content": "print(1)"}],
         "rejected": [{"role": "user", "content": "Write code"}, {"role": "assistant", "content": "no"}],
         "category": "Helpfulness/Code/Development"},
    ]
    res = load_pairs(_jsonl(tmp_path / "p.jsonl", rows))
    assert res.problems == []
    a, b, c = res.pairs
    assert (a.id, a.prompt, a.chosen, a.rejected, a.domain, a.source) == ("a", "What is 2+2?", "4", "5", "math", "p")
    assert b.id == "p:2" and b.prompt == conv_prompt and b.chosen == "Hello!" and b.rejected == "Go away."
    assert c.prompt == [{"role": "user", "content": "Write code"}] and c.chosen == "print(1)"
    assert c.domain == "code" and b.domain == "chat"
    assert b.prompt_text == "Hi?"


def test_bad_rows_are_reported_with_file_line_field(tmp_path: Path) -> None:
    rows = [
        {"id": "ok", "prompt": "q", "chosen": "x", "rejected": "y"},
        "{not json",
        {"id": "e1", "prompt": "q", "chosen": "", "rejected": "y"},
        {"id": "e2", "prompt": "q", "chosen": "x"},
        {"id": "e3", "chosen": "x", "rejected": "y"},
        {"id": "ok", "prompt": "q2", "chosen": "x", "rejected": "y"},
        {"id": "e4", "prompt": [{"role": "assistant", "content": "hi"}], "chosen": "x", "rejected": "y"},
        {"id": "e5", "prompt": "q", "chosen": [{"role": "user", "content": "x"}], "rejected": "y"},
    ]
    path = _jsonl(tmp_path / "bad.jsonl", rows)
    res = load_pairs(path)
    assert [p.id for p in res.pairs] == ["ok"]
    got = {(p.line, p.field) for p in res.problems}
    assert got == {(2, "<line>"), (3, "chosen"), (4, "rejected"), (5, "prompt"), (6, "id"), (7, "prompt"),
                   (8, "chosen")}
    messages = [str(p) for p in res.problems]
    assert messages[0].startswith(f"{path}:2: field '<line>': invalid JSON at column 2")
    assert f"{path}:3: field 'chosen': empty response" in messages
    assert any("duplicate id 'ok'" in m and f"{path}:1" in m for m in messages)
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: field '<line>'"):
        load_pairs(path, strict=True)


def test_rmb_pairwise_file_and_bon_rejection(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "rmb" / "Pairwise_set" / "Harmlessness" / "S1.json"
    items = json.loads(src.read_text(encoding="utf-8"))[:5]
    (tmp_path / "S1.json").write_text(json.dumps(items), encoding="utf-8")
    res = load_pairs(tmp_path / "S1.json")
    assert res.problems == [] and len(res.pairs) == 5
    p = res.pairs[0]
    assert p.id == f"rmb/{items[0]['category_path']}:{items[0]['pair_uid']}"
    assert p.chosen == items[0]["chosen"]["answer"] and p.rejected == items[0]["reject"]["answer"]
    assert p.source == "rmb" and p.domain == "safety"
    assert p.prompt[-1]["content"] == items[0]["conversation_input"][-1]["content"]
    bon = json.loads((shared_data / "rmb" / "BoN_set" / "Harmlessness" / "S1.json").read_text())[:1]
    (tmp_path / "bon.json").write_text(json.dumps(bon), encoding="utf-8")
    res = load_pairs(tmp_path / "bon.json")
    assert res.pairs == [] and res.problems[0].field == "bon_uid"
    assert str(res.problems[0]).startswith(f"{tmp_path / 'bon.json'} item 1: field 'bon_uid'")


def test_parquet_directory_and_roundtrip(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"prompt": ["q1", "q2"], "chosen": ["good", "fine"], "rejected": ["bad", "  "]})
    (tmp_path / "in").mkdir()
    pq.write_table(table, tmp_path / "in" / "d.parquet")
    res = load_pairs(tmp_path / "in")
    assert [p.prompt for p in res.pairs] == ["q1"]
    assert str(res.problems[0]).endswith("row 2: field 'rejected': empty response")
    write_pairs(tmp_path / "out.jsonl", res.pairs)
    again = load_pairs(tmp_path / "out.jsonl").pairs
    assert again == res.pairs and isinstance(again[0], PreferencePair)


def test_missing_source_and_offline_hub_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_pairs(tmp_path / "x.txt")
    # HF_HUB_OFFLINE=1 (conftest): the dataset id cannot be fetched; the error says to export a file
    with pytest.raises(ValueError, match="export it to JSONL or parquet"):
        load_pairs("cerm-no-such-owner/no-such-dataset")


def test_infer_domain() -> None:
    assert infer_domain("Harmlessness/S3") == "safety"
    assert infer_domain("Helpfulness/Code/Quality and Optimization") == "code"
    assert infer_domain("Helpfulness/Reasoning/Logical Deduction") == "math"
    assert infer_domain("Helpfulness/Open QA/Factual") == "chat"


def test_non_utf8_and_surrogate_rows_are_reported_not_fatal(tmp_path):
    path = tmp_path / "p.jsonl"
    good = json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"})
    path.write_bytes(good.encode() + b"\n" + b'{"prompt": "q\xff", "chosen": "a", "rejected": "b"}\n'
                     + b'{"prompt": "q", "chosen": "\\ud800", "rejected": "b"}\n' + good.replace('"q"', '"r"').encode()
                     + b"\n")
    res = load_pairs(path)
    assert len(res.pairs) == 2
    msgs = [str(p) for p in res.problems]
    assert msgs[0].startswith(f"{path}:2: field '<line>': not UTF-8: byte b'\\xff' at column 14")
    assert msgs[1].startswith(f"{path}:3: field 'chosen': lone surrogate")
    with pytest.raises(ValueError, match=r"p\.jsonl:2: field '<line>': not UTF-8"):
        load_pairs(path, strict=True)


def test_numbers_read_as_text_are_warned_about(tmp_path, caplog):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "2+2?", "chosen": 4, "rejected": 5}) + "\n")
    res = load_pairs(path)
    assert res.pairs[0].chosen == "4"
    assert "a number as prompt/chosen/rejected, read as text" in caplog.text
