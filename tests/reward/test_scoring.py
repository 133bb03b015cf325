"""Score mapping, grouping and failure handling shared by every RL adapter."""

from __future__ import annotations

import pytest

from cerm import Judge, JudgeConfig
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation, default_script
from cerm.reward.scoring import (
    BackendFailure,
    RewardConfig,
    group_ids,
    map_scores,
    pairwise_tie_rate,
    score_rollouts,
    strip_think,
)
from cerm.types import Generation


@pytest.mark.parametrize(
    ("scale", "failure", "scores", "ids", "expected"),
    [
        ("raw", 0.0, [7.0, None, 3.5], [0, 0, 2], [7.0, 0.0, 3.5]),
        ("unit", -1.0, [7.0, None, 10.0], [0, 0, 0], [0.7, -1.0, 1.0]),
        ("unit", None, [None, 5.0], [0, 0], [None, 0.5]),
        # centred per prompt: group 0 = {0.8, 0.4} (mean 0.6), group 2 = {0.5} alone
        ("centered", 0.0, [8.0, 4.0, 5.0, None], [0, 0, 2, 0], [0.2, -0.2, 0.0, 0.0]),
        ("centered", None, [None, None], [0, 0], [None, None]),
    ],
)
def test_map_scores(scale, failure, scores, ids, expected):
    got = map_scores(scores, ids, RewardConfig(scale=scale, failure_reward=failure))
    assert got == pytest.approx(expected) if None not in expected else got == expected


def test_map_scores_centered_never_uses_failures_in_the_mean():
    got = map_scores([10.0, None, 0.0], [0, 0, 0], RewardConfig(scale="centered", failure_reward=-5.0))
    assert got == pytest.approx([0.5, -5.0, -0.5])


def test_reward_config_rejects_unknown_scale():
    with pytest.raises(ValueError, match="scale 'percent'"):
        RewardConfig(scale="percent")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scores", "ids", "expected"),
    [
        ([5.0, 5.0, 7.0], [0, 0, 0], 1 / 3),  # pairs (5,5) (5,7) (5,7): one tie
        ([5.0, 5.0, 5.0, 5.0], [0, 0, 2, 2], 1.0),
        ([5.0, 5.0], [0, 1], None),  # different prompts never form a pair
        ([5.0, None, 5.0], [0, 0, 0], 1.0),  # failures are not pairs
        ([None, 3.0], [0, 0], None),
    ],
)
def test_pairwise_tie_rate(scores, ids, expected):
    got = pairwise_tie_rate(scores, ids)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_group_ids_follow_first_occurrence():
    assert group_ids(["a", "a", "b", "a", "c", "b"]) == [0, 0, 2, 0, 4, 2]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>long reasoning</think>\n\nThe answer is 4.", "The answer is 4."),
        ("no thinking here", "no thinking here"),
        ("reasoning without an opening tag</think>Final.", "Final."),
        ("<think>a</think>x<think>b</think>y", "xy"),
        ("<think>never closed", "<think>never closed"),
    ],
)
def test_strip_think(text, expected):
    assert strip_think(text) == expected


def test_score_rollouts_generates_criteria_once_per_unique_prompt():
    backend = FakeBackend()
    judge = Judge(backend)
    queries = ["q1"] * 4 + ["q2"] * 4
    responses = [f"r{i}" for i in range(8)]
    result = score_rollouts(judge, queries, responses, RewardConfig())
    assert backend.num_prompts == 2 + 8  # 2 criteria generations + 8 evaluations
    assert result.criteria_generated == 2 and result.criteria_cache_hits == 0
    assert result.group_ids == [0, 0, 0, 0, 4, 4, 4, 4]
    assert result.rewards == [j.score / 10 for j in result.judgments]
    # every evaluation of q1 carries q1's criteria, in input order
    q1_evals = [p for p in backend.calls[1][0] if "q1" in p[0]["content"]]
    assert len(q1_evals) == 4 and all(p[1]["content"] == CANNED_CRITERIA for p in q1_evals)
    # a second batch of the same prompts reads the criteria from the cache
    again = score_rollouts(judge, ["q1", "q2"], ["new a", "new b"], RewardConfig())
    assert again.criteria_cache_hits == 2 and again.criteria_generated == 0


def test_score_rollouts_strips_think_before_judging():
    backend = FakeBackend()
    score_rollouts(Judge(backend), ["q"], ["<think>secret plan</think>visible answer"], RewardConfig())
    evaluation = backend.calls[-1][0][0][-1]["content"]
    assert "visible answer" in evaluation and "secret plan" not in evaluation


def test_parse_failures_get_failure_reward_and_are_counted():
    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        return "I refuse to give a score." if "bad" in messages[-1]["content"] else canned_evaluation(6)

    judge = Judge(FakeBackend(script=script))
    result = score_rollouts(judge, ["q"] * 3, ["good", "bad", "good too"], RewardConfig(failure_reward=-0.5))
    assert result.rewards == [0.6, -0.5, 0.6]
    assert result.parse_failures == 1 and result.parse_fail_rate == pytest.approx(1 / 3)
    assert result.statuses == ["ok", "no_box", "ok"]
    assert result.tie_rate == 1.0  # the two valid scores are equal


def test_backend_error_raises_instead_of_rewarding():
    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        return Generation("", "error", error="connection refused")

    judge = Judge(FakeBackend(script=script))
    with pytest.raises(BackendFailure, match="2 of 2 judgments failed.*connection refused"):
        score_rollouts(judge, ["q", "q"], ["a", "b"], RewardConfig())
    lenient = score_rollouts(judge, ["q", "q"], ["a", "b"],
                             RewardConfig(failure_reward=0.0, raise_on_backend_error=False))
    assert lenient.rewards == [0.0, 0.0] and lenient.statuses == ["backend_error"] * 2


def test_score_rollouts_checks_alignment_and_empty_batches():
    judge = Judge(FakeBackend(script=default_script), JudgeConfig())
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        score_rollouts(judge, ["a", "b"], ["x"], RewardConfig())
    assert score_rollouts(judge, [], [], RewardConfig()).rewards == []
