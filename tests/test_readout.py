"""The score readout at the final box: pure helpers, the judge's use of it, and its consumers (fake backend)."""

import json
import math
from dataclasses import replace

import pytest

from cerm import Judge, JudgeConfig, ParseStatus
from cerm.backends.base import Capabilities, score_reader
from cerm.backends.fake import FakeBackend, canned_evaluation
from cerm.readout import (
    CLOSING_TEXT,
    CONTINUATIONS,
    GRID,
    Readout,
    ReadoutUnsupported,
    ScoreDistribution,
    box_prefix,
    closing_prefix,
    continuation_ids,
    from_logprobs,
    sequence_logprobs,
    trie_nodes,
)
from cerm.types import Generation


def peaked(value: float, mass: float = 0.6) -> list[float]:
    """A distribution with ``mass`` on ``value`` and the rest spread evenly."""
    rest = (1 - mass) / 20
    return [mass if v == value else rest for v in GRID]


def test_grid_and_continuations():
    assert len(GRID) == 21 and GRID[1] == 0.5 and GRID[-1] == 10
    assert CONTINUATIONS[:3] == ("0}", "0.5}", "1}") and CONTINUATIONS[-1] == "10}"


def test_from_logprobs_normalises_over_the_grid():
    d = from_logprobs([math.log(p) - 7 for p in peaked(8.0)])
    assert d.ok and abs(sum(d.probs) - 1) < 1e-12
    assert d.mode == 8.0
    assert abs(d.expected - (0.6 * 8 + 0.02 * (sum(GRID) - 8))) < 1e-9
    uniform = from_logprobs([0.0] * 21)
    assert abs(uniform.entropy - math.log(21)) < 1e-12 and uniform.expected == pytest.approx(5.0)
    assert not from_logprobs([-math.inf] * 21).ok
    with pytest.raises(ValueError, match="21"):
        from_logprobs([0.0] * 3)


def test_box_prefix_is_the_last_box():
    text = "C1 $\\boxed{4}$ ... Overall $\\boxed{7}$ done"
    assert box_prefix(text) == "C1 $\\boxed{4}$ ... Overall $\\boxed{"
    assert box_prefix("no box here") is None


def test_continuation_ids_checks_the_prefix_tokens():
    chars = lambda t: [ord(c) for c in t]  # noqa: E731
    prefix, tails = continuation_ids(chars, "x \\boxed{")
    assert prefix == chars("x \\boxed{") and tails[1] == chars("0.5}")

    def merging(t: str) -> list[int]:  # a tokenizer that merges "{1" into one token
        return [-1 if t[i:i + 2] == "{1" else ord(c) for i, c in enumerate(t) if not (i and t[i - 1:i + 1] == "{1")]
    with pytest.raises(ValueError, match="changes the tokens of the prefix"):
        continuation_ids(merging, "\\boxed{")


def test_trie_scores_sum_token_logprobs():
    tails = [[1, 9], [1, 2, 9], [2, 9]]
    nodes = trie_nodes(tails)
    assert nodes == {(): [1, 2], (1,): [9, 2], (1, 2): [9], (2,): [9]}
    lp = {(): {1: -1.0, 2: -2.0}, (1,): {9: -0.5, 2: -0.25}, (1, 2): {9: -0.1}, (2,): {9: -0.3}}
    assert sequence_logprobs(tails, lp) == [-1.5, -1.35, -2.3]


def test_judge_reads_expected_score_at_the_final_box():
    backend = FakeBackend(distribution=lambda r: peaked(7.0))
    judge = Judge(backend, JudgeConfig(expected_score=True))
    js = judge.score("q", ["a", "b"])
    assert all(j.status is ParseStatus.OK for j in js)
    assert all(j.expected_score == pytest.approx(ScoreDistribution(tuple(peaked(7.0))).expected) for j in js)
    assert all(len(j.score_probs) == 21 and j.score_entropy > 0 for j in js)
    assert [j.score for j in js] == [j.value("greedy") for j in js]  # greedy score unchanged
    # the readout is asked right after the last box of the evaluation text, in the evaluation's prompt
    r = backend.readouts[0]
    assert r.assistant_prefix.endswith("Overall: the response is assessed as a whole. $\\boxed{")
    assert "[Start of Response]\na\n" in r.messages[-1]["content"] or "[Start of Response]\nb\n" in r.messages[-1]["content"]


def test_greedy_default_never_reads():
    backend = FakeBackend()
    js = Judge(backend).score("q", ["a"])
    assert backend.readouts == [] and js[0].expected_score is None


def test_closing_an_unfinished_verdict_is_completed_not_ok():
    def script(messages, params):
        if len(messages) == 1:
            return FakeBackend().script(messages, params)
        return "Criterion 1: the response is ..." if "cut" in messages[-1]["content"] else canned_evaluation(6)

    backend = FakeBackend(script=script, distribution=lambda r: peaked(3.0))
    judge = Judge(backend, JudgeConfig(close_unfinished=True))
    cut, fine = judge.score("q", ["cut off", "fine"])
    assert cut.status is ParseStatus.COMPLETED and not cut.status.is_ok
    assert cut.score == 3.0 and cut.expected_score is not None and "closed" in cut.error
    assert fine.status is ParseStatus.OK and fine.score == 6 and fine.expected_score is None  # expected off
    closing = [r for r in backend.readouts if r.assistant_prefix.endswith(CLOSING_TEXT)]
    assert len(closing) == 1 and closing[0].assistant_prefix.startswith("Criterion 1: the response is")
    assert judge.stats.statuses == {"completed": 1, "ok": 1}
    # closed verdicts have a score: not parse failures, and said apart from ok
    assert judge.stats.parse_failure_rate == 0
    assert judge.stats.outcome() == "1 ok, 1 completed by the closing text, 0 failed"
    # without closing the same evaluation stays a failure
    assert Judge(FakeBackend(script=script)).score("q", ["cut off"])[0].score is None


def test_expected_needs_a_reader_no_silent_fallback():
    class NoReader:
        model_id, context_length = "plain", None

        def generate(self, prompts, params):
            return FakeBackend().generate(prompts, params)

        def count_tokens(self, messages):
            return None

        def close(self):
            pass

    with pytest.raises(ReadoutUnsupported, match="cannot read the score distribution"):
        score_reader(NoReader())
    with pytest.raises(ReadoutUnsupported):  # at construction, before any evaluation is generated
        Judge(NoReader(), JudgeConfig(expected_score=True))
    with pytest.raises(ReadoutUnsupported):
        Judge(NoReader(), JudgeConfig(close_unfinished=True))


def test_readout_failure_is_explicit():
    backend = FakeBackend(distribution=lambda r: ScoreDistribution(error="server returned no logprobs"))
    j = Judge(backend, JudgeConfig(expected_score=True)).score("q", ["a"])[0]
    assert j.status is ParseStatus.OK and j.expected_score is None and "no logprobs" in j.error
    assert j.value("expected") is None


def test_best_of_n_expected_tie_policy_breaks_a_greedy_tie():
    # every response gets greedy 6; the readout prefers "b"
    def script(messages, params):
        return FakeBackend().script(messages, params) if len(messages) == 1 else canned_evaluation(6)

    def dist(r):
        return peaked(9.0 if "[Start of Response]\nb\n" in r.messages[-1]["content"] else 5.0)

    judge = Judge(FakeBackend(script=script, distribution=dist), JudgeConfig(expected_score=True))
    result = judge.best_of_n("q", ["a", "b", "c"], tie_policy="expected", score_mode="greedy")
    assert result.tied == (0, 1, 2) and result.index == 1
    assert judge.best_of_n("q", ["a", "b", "c"], tie_policy="none", score_mode="greedy").index is None
    assert judge.best_of_n("q", ["a", "b", "c"]).index == 1  # the judge ranks by its own mode: expected
    ranked = judge.best_of_n("q", ["a", "b", "c"], score_mode="expected")
    assert ranked.index == 1 and ranked.tied == (1,)
    with pytest.raises(ValueError, match="expected_score=True"):
        Judge(FakeBackend()).best_of_n("q", ["a", "b"], tie_policy="expected")


def test_cache_round_trips_the_distribution(tmp_path):
    from cerm.cache import Store

    store = Store(tmp_path / "c.sqlite")
    cfg = JudgeConfig(expected_score=True)
    first = Judge(FakeBackend(), cfg, store).score("q", ["a"])[0]
    backend = FakeBackend()
    again = Judge(backend, cfg, store).score("q", ["a"])[0]
    assert backend.num_prompts == 0 and again == first
    # a greedy judge does not reuse an expected judgment's key (and vice versa)
    greedy = FakeBackend()
    Judge(greedy, JudgeConfig(), store).score("q", ["a"])
    assert greedy.num_prompts == 1


def test_rewards_expected_are_continuous_and_checked():
    from cerm.reward.scoring import RewardConfig, score_rollouts

    def script(messages, params):  # every rollout gets greedy 5: a GRPO group with zero advantage
        return FakeBackend().script(messages, params) if len(messages) == 1 else canned_evaluation(5)

    judge = Judge(FakeBackend(script=script), JudgeConfig(expected_score=True))
    greedy = score_rollouts(judge, ["q"] * 3, ["a", "b", "c"], RewardConfig())
    expected = score_rollouts(judge, ["q"] * 3, ["a", "b", "c"], RewardConfig(score="expected"))
    assert greedy.rewards == [0.5] * 3 and greedy.tie_rate == 1.0
    assert len(set(expected.rewards)) == 3 and expected.tie_rate == 0.0
    assert expected.rewards == [j.expected_score / 10 for j in expected.judgments]
    with pytest.raises(ValueError, match="expected_score=True"):
        score_rollouts(Judge(FakeBackend()), ["q"], ["a"], RewardConfig(score="expected"))
    with pytest.raises(ValueError, match="score"):
        RewardConfig(score="mean")  # type: ignore[arg-type]


def test_bench_run_expected_reports_both_tie_rates(tmp_path):
    from bench.helpers import run_fixture, score_script

    judge = Judge(FakeBackend("scores", script=score_script), JudgeConfig(expected_score=True))
    run = run_fixture("judgebench", tmp_path, judge)
    s = run.summary
    assert s["score_mode"] == "expected" and set(s["tie_rates"]) == {"greedy", "expected"}
    assert s["tie_rates"]["expected"] == s["tie_rate"]
    assert s["tie_rates"]["expected"] <= s["tie_rates"]["greedy"]
    report = (tmp_path / "report.md").read_text()
    assert "Tie rate: greedy" in report and "vs expected" in report
    rec = json.loads((tmp_path / "items.jsonl").read_text().splitlines()[0])
    assert rec["candidates"][0]["expected_score"] is not None and rec["candidates"][0]["score_entropy"] > 0
    greedy = run_fixture("judgebench", tmp_path / "g").summary
    assert greedy["score_mode"] == "greedy" and "tie_rates" not in greedy


def test_cli_score_expected_and_close(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cerm.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "query": "2+2?", "responses": ["4", "5"]}) + "\n")
    r = CliRunner().invoke(app, ["score", "--backend", "fake", "--cache", "c.sqlite", "-i", "in.jsonl", "-o", "o.jsonl",
                                 "--score", "expected", "--close-unfinished"])
    assert r.exit_code == 0, r.output
    js = json.loads((tmp_path / "o.jsonl").read_text())["judgments"]
    assert all(len(j["score_probs"]) == 21 and j["expected_score"] is not None for j in js)
    r = CliRunner().invoke(app, ["bon", "--backend", "fake", "--cache", "c.sqlite", "-i", "in.jsonl",
                                 "--score", "expected", "--tie-policy", "expected"])
    assert r.exit_code == 0, r.output


def test_server_get_reward_is_expected_when_the_judge_reads_it():
    from fastapi.testclient import TestClient

    from cerm.reward.server import ServerConfig, create_app

    judge = Judge(FakeBackend(distribution=lambda r: peaked(2.0)), JudgeConfig(expected_score=True))
    prompt = "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n"
    with TestClient(create_app(judge, ServerConfig(freeze_gc=False))) as client:
        r = client.post("/get_reward", json={"query": [prompt + "Rayleigh.<|im_end|>"], "prompts": [prompt]})
    assert r.status_code == 200, r.text
    want = ScoreDistribution(tuple(peaked(2.0))).expected / 10
    assert r.json()["rewards"] == pytest.approx([want])


def test_verl_cerm_score_setting():
    from cerm.reward.verl import VerlSettings

    assert VerlSettings.from_kwargs({"cerm_score": "expected"}).score == "expected"
    with pytest.raises(ValueError, match="cerm_score"):
        VerlSettings.from_kwargs({"cerm_score": "mean"})
    with pytest.raises(ValueError, match="cerm serve --score expected"):
        VerlSettings.from_kwargs({"cerm_score": "expected", "cerm_url": "http://x"})


class ReadingFake(FakeBackend):
    """A fake that reads during generate, as hf does (``read_at``): those readouts peak at 9, re-reads at 2."""

    capabilities = Capabilities(readout=True, reads_during_generation=True, reports_each=True)

    def __init__(self, **kwargs):
        super().__init__(distribution=lambda r: peaked(2.0), **kwargs)
        self.asked = []

    def generate(self, prompts, params, on_done=None, read_at=None):
        gens = super().generate(prompts, params, on_done)
        if read_at is None:
            return gens
        out = []
        for g in gens:
            at = read_at(g)
            self.asked.append(at)
            out.append(g if at is None else replace(g, readout=Readout(at, ScoreDistribution(tuple(peaked(9.0))))))
        return out


def test_judge_uses_the_readout_done_during_generate():
    backend = ReadingFake()
    js = Judge(backend, JudgeConfig(expected_score=True)).score("q", ["a", "b"])
    assert [j.expected_score for j in js] == [pytest.approx(ScoreDistribution(tuple(peaked(9.0))).expected)] * 2
    assert backend.readouts == []  # nothing re-read
    assert len(backend.asked) == 2
    assert all(a.endswith("Overall: the response is assessed as a whole. $\\boxed{") for a in backend.asked)


def test_an_evaluation_to_be_retried_is_read_only_at_its_last_attempt():
    def script(messages, params):
        if len(messages) == 1:
            return FakeBackend().script(messages, params)
        if "cut" in messages[-1]["content"]:  # truncated at every attempt
            return Generation(f"Criterion 1: attempt at t={params.temperature}", "length", tokens_out=8)
        return canned_evaluation(6)

    backend = ReadingFake(script=script)
    judge = Judge(backend, JudgeConfig(close_unfinished=True, retries=1))
    cut, fine = judge.score("q", ["cut off", "fine"])
    # first attempt: "fine" is ok (expected off: not read), "cut off" will be retried (not read); the retry is
    # read after the closing text, during its generate
    assert backend.asked == [None, None, closing_prefix(cut.text)]
    assert cut.status is ParseStatus.COMPLETED and cut.attempts == 2 and cut.score == 9.0
    assert fine.status is ParseStatus.OK and fine.expected_score is None
    assert backend.readouts == []
