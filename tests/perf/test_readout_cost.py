"""perf/readout_cost.py on the tiny random Qwen3 (hf): both wall times measured, the readout read for real."""

from __future__ import annotations

import pytest
from support import load_bench_script

rc = load_bench_script("readout_cost")


def test_measure_on_tiny_hf(tiny_model_dir) -> None:
    from cerm.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    result = rc.measure(backend, 2, 16)
    assert result["readout_errors"] == []
    assert result["eval_s"] > 0 and result["readout_s"] > 0
    assert result["ratio"] == pytest.approx(result["readout_s"] / result["eval_s"], rel=0.05)
    assert result["closed"] == 2  # 16 random tokens never reach a box: both are read after the closing text
    assert len(result["expected_scores"]) == 2 and all(0 <= e <= 10 for e in result["expected_scores"])
    # hf reads inside generate, over its KV cache; re-reading everything gives the same distributions
    assert result["reread_s"] > 0 and result["max_prob_diff"] < 1e-5
