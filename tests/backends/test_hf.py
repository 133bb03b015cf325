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
    monkeypatch.setattr(tiny, "generate", lambda prompts, params, **_: [
        g if len(p) == 1 else Generation("Criterion 1: the response", "length", tokens_out=8)
        for p, g in zip(prompts, real(prompts, params))])
    judge = Judge(tiny, JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8, expected_score=True,
                                    close_unfinished=True))
    js = judge.score("What is 2+2?", RESPONSES)
    assert all(j.status is ParseStatus.COMPLETED for j in js), [j.status for j in js]
    assert all(j.expected_score is not None and len(j.score_probs) == 21 for j in js)
    assert len({j.expected_score for j in js}) == len(js)  # continuous: no two responses tie
    assert judge.stats.statuses == {"completed": 4}


def test_tiny_readout_during_generate_reuses_the_cache_and_equals_brute_force(tiny_model_dir, monkeypatch):
    from cerm.readout import CLOSING_TEXT, closing_prefix

    backend = HFBackend(str(tiny_model_dir), dtype="float32", batch_size=3)  # chunks of 3 and 1
    prompts = [evaluation_messages("What is 2+2?", CRITERIA, r) for r in RESPONSES]  # a shared prefix (KV reuse)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=0)  # greedy, it writes only newlines
    # make one row finish early (one of its tokens becomes an EOS) while the others of its chunk keep generating
    first = backend.generate(prompts, params)
    monkeypatch.setattr(backend, "_eos", backend._eos + [backend._tokens(first[0].text)[3]])
    # per call: after the closing text, not read (the chunk's cache is then cut to the rows read), halfway
    # through the text (reuses only part of the cache)
    modes = iter(["closing", None, "half", "closing"])

    def read_at(g):
        mode = next(modes)
        return None if mode is None else closing_prefix(g.text) if mode == "closing" else g.text[:len(g.text) // 2] + "$\\boxed{"

    rows = []
    real_score_rows = backend._score_rows
    monkeypatch.setattr(backend, "_score_rows", lambda r, *a: rows.extend(r) or real_score_rows(r, *a))
    gens = backend.generate(prompts, params, read_at=read_at)
    assert any(g.finish_reason == "stop" and g.tokens_out < 10 for g in gens)  # a finished row was read too
    assert sum(g.readout is None for g in gens) == 1
    closing_tokens = len(backend._tokens(CLOSING_TEXT))
    for p, g in zip(prompts, gens):
        if g.readout is None:
            continue
        d = g.readout.distribution
        assert d.ok, d.error
        want = _brute_force_probs(backend, backend.render(p) + g.readout.assistant_prefix)
        assert max(abs(a - b) for a, b in zip(d.probs, want)) < 1e-5
    # the prompt and the generation came from the cache: at most the closing text (+ a boundary token) was computed
    assert len(rows) == 3 and backend.readout_seconds > 0
    assert all(r.start >= min(g.tokens_in for g in gens) and len(r.rest) <= closing_tokens + 1 for r in rows)


def test_tiny_judge_reads_during_generate_not_after(tiny, monkeypatch):
    from cerm.readout import ReadoutRequest, closing_prefix

    def no_reread(requests):
        raise AssertionError("the judge re-read prompt + evaluation")

    # greedy, the random model writes only newlines (empty); the sampled retry writes 8 random tokens:
    # truncated, so closed and read during the retry's generate
    judge = Judge(tiny, JudgeConfig(criteria_max_new_tokens=8, eval_max_new_tokens=8, expected_score=True,
                                    close_unfinished=True, retries=1, retry_temperature=1.0))
    monkeypatch.setattr(tiny, "score_distributions", no_reread)
    js = judge.score("What is 2+2?", RESPONSES[:2])
    monkeypatch.undo()
    assert [(j.status, j.attempts) for j in js] == [(ParseStatus.COMPLETED, 2)] * 2
    crit = judge.criteria("What is 2+2?")
    for j, r in zip(js, RESPONSES):
        (want,) = tiny.score_distributions([ReadoutRequest(evaluation_messages("What is 2+2?", crit.text, r),
                                                           closing_prefix(j.text))])
        assert max(abs(a - b) for a, b in zip(j.score_probs, want.probs)) < 1e-5


def test_shared_prefixes_pick_the_runs_that_save_most():
    from cerm.backends.hf import _shared_prefixes

    a = list(range(100))
    q1 = [a + [1000 + i] * 5 for i in range(3)]  # one query's evaluations: 100 shared tokens
    q2 = [a[:40] + [2000] * 80 + [3000 + i] for i in range(2)]  # 40 shared with q1, 120 between them
    rows = sorted([*q1, *q2, [7] * 50])
    # two runs save 2 * 100 + 120 tokens; one run of all five would save 4 * 40
    assert _shared_prefixes(rows) == [100, 100, 100, 120, 120, 0]
    assert _shared_prefixes([a, a + [5]]) == [99, 99]  # every row keeps its last token
    assert _shared_prefixes([a[:20], a[:20] + [1]]) == [0, 0]  # too short to be worth a forward of its own


def test_tiny_prompt_cache_computes_each_token_once_and_matches_plain_batching(tiny_model_dir, monkeypatch):
    backend = HFBackend(str(tiny_model_dir), dtype="float32")
    prompts = ([evaluation_messages("What is 2+2?", CRITERIA, r) for r in RESPONSES[:3]]
               + [evaluation_messages("Name a prime.", CRITERIA, r) for r in ("7", "9 is prime")]
               + [[{"role": "user", "content": "hello"}]])
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=1)  # sampled: greedy writes only newlines
    backend.reuse_prefix = False
    plain = backend.generate(prompts, params)
    backend.reuse_prefix = True
    computed = []
    real_extend = backend._extend
    monkeypatch.setattr(backend, "_extend", lambda cache, ids: computed.append(len(ids)) or real_extend(cache, ids))
    shared = backend.generate(prompts, params)
    assert [g.text for g in shared] == [g.text for g in plain]
    # every prompt token but each row's last was computed once: each query's opening once, then each row's rest
    from cerm.backends.hf import _shared_prefixes

    ids = sorted(backend._tokens(backend.render(p)) for p in prompts)
    plan = _shared_prefixes(ids)
    runs = {tuple(row[:p]) for row, p in zip(ids, plan) if p}
    opening = _common_prefix(*(backend._tokens(backend.render(prompts[k])) for k in (0, 3)))  # both queries share
    assert len(runs) == 2 and min(p for p in plan if p) > opening and plan.count(0) == 1  # "hello" alone
    assert sum(computed) == sum(map(len, runs)) + sum(len(row) - 1 - p for row, p in zip(ids, plan))
    computed.clear()  # nothing shared: one batched prefill, no forward per row
    backend.generate([[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a longer prompt"}]], params)
    assert computed == []


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
