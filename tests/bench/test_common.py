"""Shared reading and selection: located errors, subset matching, seeded nested --limit draws."""

from __future__ import annotations

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items, select_items
from cerm.bench.common import bench_rows, data_files, matches_subset, resolve_sources

from .helpers import FIXTURES


def test_read_rows_formats(tmp_path):
    (tmp_path / "a.json").write_text('[{"x": 1}, {"x": 2}]')
    (tmp_path / "b.json").write_text('{"x": 1}\n\n{"x": 2}\n')  # JSON Lines under .json (datasets' to_json)
    assert [r.where.split("/")[-1] for r in bench_rows(tmp_path / "a.json")] == ["a.json: element 0", "a.json: element 1"]
    assert [r.where.split("/")[-1] for r in bench_rows(tmp_path / "b.json")] == ["b.json:1", "b.json:3"]


@pytest.mark.parametrize(("text", "message"), [
    ('{"x": 1}\n{"x": \n', r"b\.jsonl:2: invalid JSON"),
    ('{"x": 1}\n[1, 2]\n', r"b\.jsonl:2: expected a JSON object"),
])
def test_read_rows_broken_lines(tmp_path, text, message):
    (tmp_path / "b.jsonl").write_text(text)
    with pytest.raises(DataError, match=message):
        list(bench_rows(tmp_path / "b.jsonl"))


def test_wrong_type_names_field(tmp_path):
    (tmp_path / "jb.jsonl").write_text('{"source": "livecodebench", "label": "A>B", "response_model": "m", '
                                       '"pair_id": "p", "question": 7, "response_A": "a", "response_B": "b"}\n')
    with pytest.raises(DataError, match=r"jb\.jsonl:1: field 'question': expected str, got int"):
        load_items(BENCHMARKS["judgebench"], [tmp_path / "jb.jsonl"])


def test_duplicate_ids_are_refused(tmp_path):
    src = FIXTURES / "rm-bench" / "chat_filtered.json"
    (tmp_path / "chat_filtered.json").write_text(src.read_text())
    with pytest.raises(DataError, match=r"chat_filtered.json: element 0: field 'id': duplicate item id 'chat:8' "
                       r"\(first at .*rm-bench/chat_filtered.json: element 0, subset 'chat'\)"):
        load_items(BENCHMARKS["rm-bench"], [src, tmp_path / "chat_filtered.json"])


def test_missing_data_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="pass --data"):
        data_files(tmp_path / "nope", "*.json")
    with pytest.raises(FileNotFoundError, match="no local copy of judgebench"):
        resolve_sources(BENCHMARKS["judgebench"], None, tmp_path)


def test_matches_subset_hierarchy():
    assert matches_subset("safety/refuse", "safety")
    assert matches_subset("safety", "safety")
    assert not matches_subset("safety-x", "safety")
    assert matches_subset("Pairwise_set/Helpfulness/Chat/Discussion", "Pairwise_set/Helpfulness/")


def test_select_limit_is_seeded_and_nested():
    items = load_items(BENCHMARKS["rewardbench2"], [FIXTURES / "reward-bench-2"])
    small = select_items(items, limit=3, seed=7)
    large = select_items(items, limit=6, seed=7)
    assert [i.id for i in small] == [i.id for i in select_items(items, limit=3, seed=7)]
    assert {i.id for i in small} <= {i.id for i in large}
    assert [i.id for i in large] == [i.id for i in items if i in large]  # benchmark order kept
    assert {i.id for i in select_items(items, limit=3, seed=8)} != {i.id for i in small}
    with pytest.raises(ValueError, match="matches no item"):
        select_items(items, ["Chat"])
    assert {i.subset for i in select_items(items, ["Ties", "Math"])} == {"Ties", "Math"}
