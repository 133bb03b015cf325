import pytest

from cerm import Judge, JudgeConfig, ParseStatus, Store
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation, default_script, hash_score
from cerm.types import Generation


def scripted(scores: dict[str, object]):
    """Evaluations score each response by the table (a float, or raw text for failures)."""

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        resp = messages[-1]["content"].split("[Start of Response]\n", 1)[1].rsplit("\n[End of Response]", 1)[0]
        value = scores[resp]
        return canned_evaluation(value) if isinstance(value, (int, float)) else value

    return script


def test_score_makes_one_criteria_call_then_n_evaluations():
    backend = FakeBackend()
    judge = Judge(backend)
    responses = [f"response {i}" for i in range(8)]
    js = judge.score("q", responses)
    assert backend.num_prompts == 1 + 8
    assert [len(p) for p, _ in backend.calls] == [1, 8]  # one batch each
    assert [j.score for j in js] == [hash_score(r) for r in responses]
    assert len({j.criteria_key for j in js}) == 1
    assert judge.stats.criteria_generated == 1 and judge.stats.evaluations_generated == 8


def test_batch_groups_by_query_and_cache_prevents_recompute(tmp_path):
    backend = FakeBackend()
    judge = Judge(backend, store=Store(tmp_path / "c.sqlite"))
    items = [("q1", ["a", "b"]), ("q2", ["c"]), ("q1", ["d"])]
    out = judge.score_batch(items)
    assert backend.num_prompts == 2 + 4
    assert out[0].criteria[0].key == out[2].criteria[0].key != out[1].criteria[0].key
    # a new judge on the same file recomputes nothing
    backend2 = FakeBackend()
    again = Judge(backend2, store=Store(tmp_path / "c.sqlite")).score_batch(items)
    assert backend2.num_prompts == 0
    assert [i.scores for i in again] == [i.scores for i in out]


def test_unified_criteria_ablation_regenerates_per_response():
    backend = FakeBackend()
    judge = Judge(backend, JudgeConfig(unified_criteria=False))
    item = judge.score_batch([("q", ["a", "b", "c"])])[0]
    assert backend.num_prompts == 3 + 3
    assert len(item.criteria) == 3


def test_parse_failures_are_explicit_and_counted():
    judge = Judge(FakeBackend(script=scripted({"good": 7, "nobox": "I like it", "huge": "\\boxed{12}"})))
    js = judge.score("q", ["good", "nobox", "huge"])
    assert [(j.score, j.status) for j in js] == [
        (7.0, ParseStatus.OK), (None, ParseStatus.NO_BOX), (None, ParseStatus.OUT_OF_RANGE)]
    assert judge.stats.parse_failure_rate == pytest.approx(2 / 3)
    assert judge.stats.outcome() == "1 ok, 2 failed (1 no_box, 1 out_of_range)"


def test_retry_policy_resamples_failures_only():
    calls = {"n": 0}

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        calls["n"] += 1
        return "no box" if params.temperature == 0 else canned_evaluation(6)

    judge = Judge(FakeBackend(script=script), JudgeConfig(retries=2, retry_temperature=0.8))
    [j] = judge.score("q", ["x"])
    assert j.score == 6 and j.attempts == 2 and calls["n"] == 2
    with pytest.raises(ValueError, match="retry_temperature"):
        JudgeConfig(retries=1, retry_temperature=0)


def test_test_time_scaling_means_valid_samples():
    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        return {0: canned_evaluation(6), 1: canned_evaluation(8), 2: "nothing", 3: canned_evaluation(7)}[params.seed]

    judge = Judge(FakeBackend(script=script), JudgeConfig(samples=4))
    [j] = judge.score("q", ["x"])
    assert j.score == pytest.approx(7.0) and j.score_std == pytest.approx((2 / 3) ** 0.5)
    assert len(j.samples) == 4 and [s.status for s in j.samples].count(ParseStatus.NO_BOX) == 1


def test_compare_and_best_of_n_tie_policies():
    judge = Judge(FakeBackend(script=scripted({"a": 7, "b": 7, "c": 3, "x": "fail"})))
    assert judge.compare("q", "a", "c").winner == "a"
    assert judge.compare("q", "c", "a").winner == "b"
    assert judge.compare("q", "a", "b").is_tie
    assert judge.compare("q", "a", "x").winner is None
    assert judge.best_of_n("q", ["c", "a", "b"]).index is None
    r = judge.best_of_n("q", ["c", "a", "b"], tie_policy="first")
    assert r.index == 1 and r.tied == (1, 2) and r.is_tie
    assert judge.best_of_n("q", ["c", "a", "b"], tie_policy="random").index in (1, 2)
    assert judge.best_of_n("q", ["x", "x"]).index is None


def test_best_of_n_mean_tie_break_resamples_the_tied():
    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        resp = messages[-1]["content"].split("[Start of Response]\n", 1)[1].split("\n[End of Response]")[0]
        if params.temperature == 0:
            return canned_evaluation({"a": 7, "b": 7, "c": 2}[resp])
        return canned_evaluation(7.5 if resp == "b" else 6.5)

    r = Judge(FakeBackend(script=script)).best_of_n("q", ["a", "b", "c"], tie_policy="mean")
    assert r.index == 1 and r.tied == (0, 1)


def test_user_and_edited_criteria_are_used():
    backend = FakeBackend()
    judge = Judge(backend)
    judge.score("q", ["a"], criteria="[Start of Criteria]\n1. Mine: custom\n[End of Criteria]")
    assert backend.num_prompts == 1  # no criteria generation
    assert "Mine: custom" in backend.calls[0][0][0][1]["content"]
    c = judge.set_criteria("q2", "[Start of Criteria]\n1. Edited: yes\n[End of Criteria]")
    assert c.source == "user" and c.items[0].term == "Edited"
    assert judge.criteria("q2").text == c.text
    judge.score("q2", ["b"])
    assert backend.num_prompts == 2


def test_empty_query_rejected_empty_response_judged():
    judge = Judge(FakeBackend())
    with pytest.raises(ValueError, match="query is empty"):
        judge.score("  ", ["a"])
    [j] = judge.score("q", [""])
    assert j.status is ParseStatus.OK  # an empty answer is a (bad) answer, judged as-is


class CountingBackend(FakeBackend):
    """Fake backend with a 1-token-per-char context limit, to exercise the overlong policy."""

    context_length = 3000

    def count_tokens(self, messages):
        return sum(len(m["content"]) for m in messages)


def test_overlong_error_and_truncate_policies():
    long = "x" * 5000
    judge = Judge(CountingBackend(), JudgeConfig(eval_max_new_tokens=100))
    [ok, bad] = judge.score("q", ["short", long])
    assert ok.status is ParseStatus.OK
    assert bad.status is ParseStatus.TOO_LONG and bad.score is None and "context" in bad.error
    backend = CountingBackend()
    judge = Judge(backend, JudgeConfig(eval_max_new_tokens=100, overlong="truncate"))
    [cut] = judge.score("q", [long])
    assert cut.is_response_truncated and cut.status is ParseStatus.OK
    sent = backend.calls[-1][0][0]
    assert backend.count_tokens(sent) <= 3000 - 100


def test_backend_errors_are_not_cached_and_not_scored():
    state = {"fail": True}

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        if state["fail"]:
            return Generation("", "error", error="HTTP 503")
        return default_script(messages, params)

    judge = Judge(FakeBackend(script=script))
    [j] = judge.score("q", ["a"])
    assert j.status is ParseStatus.BACKEND_ERROR and j.score is None and j.error == "HTTP 503"
    state["fail"] = False
    [j] = judge.score("q", ["a"])
    assert j.status is ParseStatus.OK


def test_failure_status_is_typed_not_read_from_the_message():
    """The backend's typed ``error_status`` decides TOO_LONG, for criteria and evaluations alike."""

    def script(messages, params):
        if "OVERLONG" in messages[0]["content"]:
            return Generation("", "error", error="context exceeded", error_status=ParseStatus.TOO_LONG)
        if len(messages) == 1:
            return CANNED_CRITERIA
        return Generation("", "error", error="too_long: a message that only looks like the status")

    judge = Judge(FakeBackend(script=script))
    [j] = judge.score("q", ["a"])
    assert j.status is ParseStatus.BACKEND_ERROR and j.error.startswith("too_long")
    [j] = judge.score("OVERLONG q", ["a"])  # the criteria turn failed: its status reaches the judgment
    assert j.status is ParseStatus.TOO_LONG and j.error == "context exceeded"


def test_config_validation():
    with pytest.raises(ValueError, match="samples"):
        JudgeConfig(samples=0)
    with pytest.raises(ValueError, match="sample_temperature"):
        JudgeConfig(samples=2, sample_temperature=0)


class _Killed(BaseException):
    """A kill -9 stand-in: not an Exception, so nothing on the way catches it."""


def test_each_finished_call_is_cached_as_it_completes_so_a_kill_loses_only_what_was_in_flight(tmp_path):
    from cerm.backends.fake import default_script

    calls = {"n": 0}

    def dies_on_the_fifth_evaluation(messages, params):
        if len(messages) > 1:
            calls["n"] += 1
            if calls["n"] == 5:
                raise _Killed
        return default_script(messages, params)

    store = tmp_path / "c.sqlite"
    judge = Judge(FakeBackend(script=dies_on_the_fifth_evaluation), JudgeConfig(), Store(store))
    responses = [f"response {i}" for i in range(8)]
    with pytest.raises(_Killed):
        judge.score("q", responses)  # one backend call of 8 evaluations, killed inside it
    again = Judge(FakeBackend(), JudgeConfig(), Store(store))
    again.score("q", responses)
    assert again.stats.judgment_cache_hits == 4 and again.stats.evaluations_generated == 4


def test_a_failure_that_a_retry_may_replace_is_not_cached_early(tmp_path):
    from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation

    seen = {"n": 0}

    def first_fails(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        seen["n"] += 1
        return "no box" if seen["n"] == 1 else canned_evaluation(6)

    judge = Judge(FakeBackend(script=first_fails), JudgeConfig(retries=1), Store(tmp_path / "c.sqlite"))
    (j,) = judge.score("q", ["r"])
    assert j.score == 6.0 and j.attempts == 2
    cached = Judge(FakeBackend(), JudgeConfig(retries=1), Store(tmp_path / "c.sqlite")).score("q", ["r"])[0]
    assert cached.score == 6.0
