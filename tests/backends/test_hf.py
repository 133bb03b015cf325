"""The transformers backend on real models: a tiny random Qwen3 (fast) and the embedded SmolLM2 (slow)."""

import pytest

from cerm import Judge, JudgeConfig, ParseStatus, SamplingParams
from cerm.backends.hf import HFBackend
from cerm.prompts import evaluation_messages

CRITERIA = "Analysis.\n[Start of Criteria]\n1. Correctness: right answer.\n2. Clarity: clear.\n[End of Criteria]"
RESPONSES = ["4", "The answer is five, clearly.", "Four!! yes", "I think it is 22 because you concatenate."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return HFBackend(str(tiny_model_dir), dtype="float32")


def test_tiny_generate_counts_and_limits(tiny):
    p = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer prompt here"}]]
    out = tiny.generate(p, SamplingParams(max_new_tokens=5))
    assert len(out) == 2
    for g, msgs in zip(out, p):
        assert g.tokens_in == tiny.count_tokens(msgs)
        assert g.finish_reason in ("stop", "length") and g.tokens_out <= 5
    assert tiny.context_length == 8192
    again = tiny.generate(p, SamplingParams(max_new_tokens=5))
    assert [g.text for g in again] == [g.text for g in out]  # greedy is deterministic


def test_tiny_sampling_is_seeded(tiny):
    p = [[{"role": "user", "content": "hello"}]] * 2
    a = tiny.generate(p, SamplingParams(temperature=1.0, max_new_tokens=8, seed=3))
    b = tiny.generate(p, SamplingParams(temperature=1.0, max_new_tokens=8, seed=3))
    assert [g.text for g in a] == [g.text for g in b]


def test_tiny_judge_end_to_end(tiny):
    judge = Judge(tiny, JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8))
    item = judge.score_batch([("What is 2+2?", RESPONSES)])[0]
    assert len(item.judgments) == 4
    assert all(j.status in set(ParseStatus) for j in item.judgments)
    assert all((j.score is None) == (j.status is not ParseStatus.OK) for j in item.judgments)


@pytest.mark.slow
def test_embedded_prefix_reuse_matches_plain_batching():
    backend = HFBackend("embedded")
    prompts = [evaluation_messages("What is 2+2?", CRITERIA, r) for r in RESPONSES]
    params = SamplingParams(max_new_tokens=12)
    backend.reuse_prefix = True
    shared = backend.generate(prompts, params)
    backend.reuse_prefix = False
    plain = backend.generate(prompts, params)
    assert [g.text for g in shared] == [g.text for g in plain]
    assert all(g.text for g in shared)
    # the embedded judge end to end: explicit statuses, never a made-up score
    judge = Judge(backend, JudgeConfig(criteria_max_new_tokens=48, eval_max_new_tokens=32))
    js = judge.score("What is 2+2?", RESPONSES[:2])
    assert judge.stats.criteria_generated == 1
    assert all((j.score is None) == (j.status is not ParseStatus.OK) for j in js)
