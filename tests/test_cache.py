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


@pytest.fixture(params=["sqlite", "redis"])
def any_store(request, tmp_path):
    target = str(tmp_path / "c.sqlite") if request.param == "sqlite" else request.getfixturevalue("redis_url")
    store = Store(target)
    yield store
    store.close()


def test_both_stores_keep_the_same_records(any_store, tmp_path):
    cache = CriteriaCache(any_store)
    for i in (2, 0, 1):
        cache.put(_record(i).model_copy(update={"created_at": 100.0 + i}))
    assert [r.query for r in cache.records()] == ["q0", "q1", "q2"]  # oldest first
    key = _record(1).key
    assert cache.get(key) == _record(1).model_copy(update={"created_at": 101.0})
    assert cache.find(key[:6]).key == key
    with pytest.raises(KeyError, match="no cached criteria with key"):
        cache.find("zz")
    with pytest.raises(KeyError, match="matches several entries"):
        cache.put(_record(3).model_copy(update={"key": key[:6] + "x"}))
        cache.find(key[:6])
    assert cache.delete(key) and not cache.delete(key) and cache.get(key) is None
    out = tmp_path / "export.jsonl"
    assert cache.export_jsonl(out) == 3
    judgments = JudgmentCache(any_store)
    j = Judgment(7.0, ParseStatus.OK, (4.0, 5.0), 1.0, text="x")
    judgments.put("k", j)
    assert judgments.get("k") == j and judgments.get("missing") is None and len(judgments) == 1


def test_a_redis_url_given_as_a_path_is_refused_clearly():
    from pathlib import Path

    with pytest.raises(ValueError, match="Redis URL passed as a path"):
        Store(Path("redis://localhost:6379/0"))


def test_an_unreachable_redis_names_the_url_without_its_password():
    from redis_server import free_port

    port = free_port()
    with pytest.raises(ConnectionError, match=rf"redis://\*\*\*@127.0.0.1:{port}/0 unreachable"):
        Store(f"redis://:secret@127.0.0.1:{port}/0", timeout_s=1.0)


def test_a_full_redis_is_a_write_error_naming_the_store(redis_server):
    from redis_server import RedisServer

    from cerm.io import WriteError

    full = RedisServer(maxmemory="3mb")  # a real server with a memory cap and no eviction
    try:
        store = Store(full.url)
        cache = JudgmentCache(store)
        with pytest.raises(WriteError, match=rf"{full.url}: cannot write \(Redis is out of memory") as e:
            for i in range(100):  # 100 x 100 KB: well past the cap
                cache.put(f"k{i}", Judgment(7.0, ParseStatus.OK, text="x" * 100_000))
        assert "rerun the same command to resume" in str(e.value)
        assert len(cache) > 0  # what fitted is kept
    finally:
        full.stop()
