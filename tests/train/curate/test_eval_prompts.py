"""cerm.train.curate.eval_prompts: the prompts of evaluation sets that training must not share."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerm.train.curate.eval_prompts import load_prompts


def test_load_prompts_from_benchmarks(shared_data: Path) -> None:
    # a directory: question files are read, model-answer files (no prompt field) skipped
    prompts = load_prompts(shared_data / "arena-hard")
    assert len(prompts) == 1250 and all(isinstance(p, str) and p for p in prompts)
    assert len(load_prompts(shared_data / "judgebench")) > 100
    answers = next((shared_data / "arena-hard").rglob("model_answer/*.jsonl"))
    with pytest.raises(ValueError, match=r"\.jsonl:1: no prompt field"):
        load_prompts(answers)
