"""The transformers backend on real models: a tiny random Qwen3 (fast) and the embedded SmolLM2 (slow)."""

import pytest

from cerm import Judge, JudgeConfig, ParseStatus, SamplingParams
from cerm.backends.hf import HFBackend
from cerm.prompts import evaluation_messages
from cerm.types import Generation

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


def _brute_force_probs(backend: HFBackend, prefix_text: str) -> list[float]:
    """Each of the 21 full sequences scored on its own, no cache: the readout's reference."""
    import torch

    from cerm.readout import CONTINUATIONS

    enc = lambda t: backend.tokenizer(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    n = len(enc(prefix_text))
    logps = []
    with torch.inference_mode():
        for c in CONTINUATIONS:
            ids = enc(prefix_text + c)
            logits = backend.model(input_ids=torch.tensor([ids])).logits[0].double()
            lp = torch.log_softmax(logits, -1)
            logps.append(sum(lp[k - 1, ids[k]].item() for k in range(n, len(ids))))
    top = max(logps)
    w = [torch.tensor(x - top).exp().item() for x in logps]
    return [x / sum(w) for x in w]


def test_tiny_readout_equals_brute_force(tiny):
    from cerm.readout import GRID, ReadoutRequest

    messages = evaluation_messages("What is 2+2?", CRITERIA, RESPONSES[1])
    requests = [ReadoutRequest(messages, "Criterion 1: fine. $\\boxed{4}$\n\nOverall: $\\boxed{"),
                ReadoutRequest(messages, "The evaluation.\n\nOverall score: \\boxed{")]
    dists = tiny.score_distributions(requests)
    for r, d in zip(requests, dists):
        assert d.ok, d.error
        want = _brute_force_probs(tiny, tiny.render(r.messages) + r.assistant_prefix)
        assert max(abs(a - b) for a, b in zip(d.probs, want)) < 1e-5
        assert abs(sum(d.probs) - 1) < 1e-9
        assert abs(d.expected - sum(p * v for p, v in zip(want, GRID))) < 1e-4
    assert dists[0].probs != dists[1].probs  # the prefix matters: a constant answer could not pass


def test_tiny_judge_expected_and_closing(tiny, monkeypatch):
    # the random model writes no text; make every evaluation a truncated one, read for real at the closing box
    real = tiny.generate
    monkeypatch.setattr(tiny, "generate", lambda prompts, params: [
        g if len(p) == 1 else Generation("Criterion 1: the response", "length", tokens_out=8)
        for p, g in zip(prompts, real(prompts, params))])
    judge = Judge(tiny, JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8, expected_score=True,
                                    close_unfinished=True))
    js = judge.score("What is 2+2?", RESPONSES)
    assert all(j.status is ParseStatus.COMPLETED for j in js), [j.status for j in js]
    assert all(j.expected_score is not None and len(j.score_probs) == 21 for j in js)
    assert len({j.expected_score for j in js}) == len(js)  # continuous: no two responses tie
    assert judge.stats.statuses == {"completed": 4}
