import json
import multiprocessing as mp

import pytest

from cerm.cache import CriteriaCache, CriteriaRecord, JudgmentCache, Store, content_key
from cerm.types import Judgment, ParseStatus


def _record(i: int, text: str = "crit") -> CriteriaRecord:
    return CriteriaRecord(key=content_key(i=i), model="m", prompt_version="v", decoding={"t": 0}, query=f"q{i}",
                          text=f"{text} {i}")


def _writer(path: str, start: int) -> None:
    cache = CriteriaCache(Store(path))
    for i in range(start, start + 50):
        cache.put(_record(i))
        assert cache.get(_record(i).key) is not None


def test_content_key_is_stable_and_order_free():
    assert content_key(a=1, b="x") == content_key(b="x", a=1)
    assert content_key(a=1) != content_key(a=2)


def test_concurrent_processes_share_one_file(tmp_path):
    path = str(tmp_path / "c.sqlite")
    CriteriaCache(Store(path))  # create the schema first
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, k * 50)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(list(CriteriaCache(Store(path)).records())) == 150


def test_export_edit_import_roundtrip(tmp_path):
    cache = CriteriaCache(Store(tmp_path / "c.sqlite"))
    for i in range(3):
        cache.put(_record(i))
    out = tmp_path / "c.jsonl"
    assert cache.export_jsonl(out) == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    rows[1]["text"] = "edited by a human"
    out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert cache.import_jsonl(out) == 3
    edited = cache.get(rows[1]["key"])
    assert edited.text == "edited by a human" and edited.is_edited
    assert not cache.get(rows[0]["key"]).is_edited
    assert cache.find(rows[2]["key"][:10]).key == rows[2]["key"]


def test_import_names_file_line_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(_record(0).model_dump()) + "\n" + json.dumps({"key": "k"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: field 'model'"):
        CriteriaCache(Store(tmp_path / "c.sqlite")).import_jsonl(bad)


def test_judgment_roundtrip_in_memory():
    cache = JudgmentCache(Store(None))
    inner = Judgment(7.0, ParseStatus.OK, (4.0,), text="t")
    j = Judgment(7.0, ParseStatus.OK, (4.0, 5.0), 1.0, text="x", score_std=0.5, samples=(inner, inner))
    cache.put("k", j)
    assert cache.get("k") == j
    assert cache.get("missing") is None
    assert len(cache) == 1
