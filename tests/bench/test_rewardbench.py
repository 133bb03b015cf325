"""RewardBench 1 loader and metric: 0.5 for ties and failures, EXAMPLE_COUNTS section weights."""

from __future__ import annotations

import pytest

from cerm.bench import BENCHMARKS, DataError, load_items
from cerm.bench.common import HFSource, resolve_sources

from .helpers import fixture_rows, metric, run_fixture


def test_rewardbench_sections_and_overall(tmp_path):
    r = run_fixture("rewardbench", tmp_path)
    assert metric(r, "Chat/alpacaeval-easy") == pytest.approx(0.75)  # 9>2 -> 1, 4=4 -> 0.5
    assert metric(r, "Chat") == pytest.approx((0.75 * 100 + 0 * 40) / 140)
    assert metric(r, "Chat Hard") == pytest.approx(0.5)  # failed chosen -> 0.5
    assert metric(r, "Safety") == 1.0
    reasoning = 984 / (984 + 164)  # math-prm right (weight 984), hep-python wrong (164)
    assert metric(r, "Reasoning") == pytest.approx(reasoning)
    assert metric(r, "overall") == pytest.approx((75 / 140 + 0.5 + 1 + reasoning) / 4)
    assert r.summary["tie_rate"] == pytest.approx(1 / 7)
    assert r.summary["parse_failure_rate"] == pytest.approx(1 / 14)


def test_rewardbench_reads_parquet_export(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = fixture_rows("reward-bench/filtered.jsonl")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "filtered.parquet")
    items = load_items(BENCHMARKS["rewardbench"], [tmp_path / "filtered.parquet"])
    assert [it.id for it in items] == [str(r["id"]) for r in rows]
    rows[3]["subset"] = "not-a-subset"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: row 3: field 'subset': unknown subset"):
        load_items(BENCHMARKS["rewardbench"], [tmp_path / "bad.parquet"])


def test_rewardbench_without_local_copy_uses_hf_id(tmp_path):
    sources = resolve_sources(BENCHMARKS["rewardbench"], None, tmp_path)
    assert sources == [HFSource("allenai/reward-bench", "filtered")]
    assert resolve_sources(BENCHMARKS["rewardbench"], ["hf:allenai/reward-bench"], None) == sources
