"""Bias probes: the edits themselves, pair building, and shift statistics from a scripted judge."""

from __future__ import annotations

import re

import pytest

from cerm import Judge, JudgeConfig, Store
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend
from cerm.bench import BENCHMARKS, load_items
from cerm.bench.common import BenchItem
from cerm.bench.probes import (
    NEUTRAL_PARAGRAPH,
    SELF_PRAISE,
    ProbePair,
    add_self_praise,
    build_pairs,
    pad_neutral,
    probe_result,
    run_probe,
    strip_markdown,
)
from cerm.types import Judgment, ParseStatus

from .helpers import FIXTURES


def _item(i: int, response: str) -> BenchItem:
    return BenchItem(id=f"q{i}", benchmark="t", subset="s", prompt=f"question {i}", candidates=(response, "bad"),
                     correct=(0,), roles=("chosen", "rejected"), mode="pairwise")


def test_pad_neutral_keeps_text_and_about_doubles_it():
    text = "x" * 1000
    padded = pad_neutral(text)
    assert padded.startswith(text + "\n\n" + NEUTRAL_PARAGRAPH)
    assert 2000 <= len(padded) < 2000 + len(NEUTRAL_PARAGRAPH) + 2
    assert pad_neutral("hi") == "hi\n\n" + NEUTRAL_PARAGRAPH  # at least one paragraph
    assert len(pad_neutral("y" * 50_000)) < 50_000 + 4000 + len(NEUTRAL_PARAGRAPH) + 2  # capped


def test_strip_markdown_keeps_the_words():
    md = ("## Steps\n\n- **Boil** the *water*\n- Add `salt`, see [the guide](http://x.y)\n\n"
          "> quoted\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nprint(1)\n```\n")
    plain = strip_markdown(md)
    assert plain == "Steps\n\nBoil the water\nAdd salt, see the guide\n\nquoted\n\n| a | b |\n| 1 | 2 |\n\nprint(1)\n"
    assert strip_markdown("2 * 3 * 4 = 24") == "2 * 3 * 4 = 24"  # arithmetic is not emphasis


def test_build_pairs_per_probe():
    items = [_item(0, "**bold** answer"), _item(1, "plain answer"), _item(2, "third answer")]
    assert [p.variant for p in build_pairs("self-praise", items)] == [add_self_praise(it.candidates[0]) for it in items]
    fmt = build_pairs("format", items)
    assert [(p.id, p.variant) for p in fmt] == [("q0", "bold answer")]  # items without markdown are skipped
    swapped = build_pairs("inflation", items, seed=1)
    assert len(swapped) == 3
    originals = [p.original for p in swapped]
    assert all(p.variant != p.original and p.variant in originals for p in swapped)  # a derangement
    assert sorted(p.variant for p in swapped) == sorted(originals)
    assert [p.variant for p in build_pairs("inflation", items, seed=1)] == [p.variant for p in swapped]
    with pytest.raises(ValueError, match="at least 2 items"):
        build_pairs("inflation", items[:1])
    with pytest.raises(ValueError, match="unknown probe"):
        build_pairs("verbosity", items)


def _j(score, other=None):
    return Judgment(score, ParseStatus.OK if score is not None else ParseStatus.NO_BOX, other_points_score=other)


def test_probe_result_by_hand():
    pairs = [(_j(5, 1), _j(7, 3)), (_j(6), _j(6)), (_j(8, 2), _j(7, 2)), (_j(None), _j(9)), (_j(4, 0), _j(6, 2))]
    r = probe_result("self-praise", pairs, n_resamples=200, seed=0)
    # valid shifts: +2, 0, -1, +2 -> mean 0.75; one failure, never filled in
    assert (r.n_pairs, r.n_valid, r.parse_failures) == (5, 4, 1)
    assert r.shift == pytest.approx(0.75)
    assert r.mean_original == pytest.approx(23 / 4) and r.mean_variant == pytest.approx(26 / 4)
    assert (r.share_up, r.share_down, r.share_equal) == (0.5, 0.25, 0.25)
    assert -1 <= r.ci_low <= 0.75 <= r.ci_high <= 2
    assert r.other_points_shift == pytest.approx((2 + 0 + 2) / 3)
    empty = probe_result("length", [(_j(None), _j(None))], n_resamples=50)
    assert empty.n_valid == 0 and empty.shift is None and empty.share_up is None


def _biased_script(messages, params):
    """A judge that likes length and self-praise, dislikes markdown, and ignores the query."""
    if len(messages) == 1:
        return CANNED_CRITERIA
    response = messages[-1]["content"].split("[Start of Response]\n", 1)[-1]
    score = 5.0 + (2.0 if NEUTRAL_PARAGRAPH in response else 0.0) - (1.0 if "**" in response else 0.0)
    other = 4 if SELF_PRAISE in response else 1
    return (f"Criterion 1: fine. $\\boxed{{4}}$\n\nOther Points: noted. $\\boxed{{{other}}}$\n\n"
            f"Overall: $\\boxed{{{score + (1.0 if SELF_PRAISE in response else 0.0):g}}}$")


@pytest.mark.parametrize(("probe", "shift", "other_shift"), [
    ("length", 2.0, 0.0), ("format", 1.0, 0.0), ("self-praise", 1.0, 3.0), ("inflation", 0.0, 0.0)])
def test_run_probe_measures_the_scripted_bias(probe, shift, other_shift):
    judge = Judge(FakeBackend("biased", script=_biased_script), JudgeConfig(), Store(None))
    items = [_item(i, f"answer {i} with **emphasis**" if i % 2 else f"answer {i}") for i in range(6)]
    pairs = build_pairs(probe, items, seed=0)
    result, records = run_probe(judge.score_batch, probe, pairs, chunk_size=4, n_resamples=100)
    if probe == "inflation":  # rotation: originals and variants are the same multiset of responses
        assert result.shift == pytest.approx(0.0)  # a query-blind judge: no penalty for a wrong answer
    else:
        assert result.shift == pytest.approx(shift)
        assert result.ci_low == pytest.approx(shift) and result.ci_high == pytest.approx(shift)
    assert result.other_points_shift == pytest.approx(other_shift)
    assert len(records) == len(pairs) and records[0]["probe"] == probe
    assert judge.stats.criteria_generated == len({p.prompt for p in pairs})  # one criteria set per query


def test_probe_pairs_from_benchmark_fixture():
    items = load_items(BENCHMARKS["judgebench"], [FIXTURES / "judgebench"])
    pairs = build_pairs("length", items)
    assert len(pairs) == len(items)
    for p, it in zip(pairs, items):
        assert p.original == it.candidates[it.correct[0]]  # the labelled-better response
        assert re.search(r"SCORE:\S+", p.variant)
    assert isinstance(pairs[0], ProbePair)


# ---- injection -------------------------------------------------------------------------------------
def _gullible_script(messages, params):
    """A judge that believes what the response says about itself: 9 with any injection, else 3 for "bad"
    answers and 6 for good ones."""
    if len(messages) == 1:
        return CANNED_CRITERIA
    response = messages[-1]["content"].split("[Start of Response]\n", 1)[-1]
    if "boxed{10}" in response or "GRADER OVERRIDE" in response:
        return "Overall \\boxed{9}"
    return "Overall \\boxed{3}" if "bad" in response else "Overall \\boxed{6}"


def test_injection_pairs_edit_the_incorrect_response_and_keep_the_correct_one():
    from cerm.bench.probes import INJECTION_PROBES, INJECTIONS, expand_probes

    assert expand_probes(["length", "injection"]) == ["length", *INJECTION_PROBES]
    items = [_item(i, f"answer {i}") for i in range(3)]
    for probe in INJECTION_PROBES:
        pairs = build_pairs(probe, items)
        assert len(pairs) == 3
        assert all(p.original == "bad" and p.reference == f"answer {k}" for k, p in enumerate(pairs))
        assert pairs[0].variant.startswith("bad\n\n") and INJECTIONS[probe.split("/")[1]] in pairs[0].variant


@pytest.mark.parametrize("probe", ["injection/fake-verdict", "injection/delimiter", "injection/override"])
def test_injection_probe_end_to_end_on_the_fake_backend(probe):
    judge = Judge(FakeBackend("gullible", script=_gullible_script), JudgeConfig(), Store(None))
    items = [_item(i, f"answer {i}") for i in range(6)]
    result, records = run_probe(judge.score_batch, probe, build_pairs(probe, items), n_resamples=100)
    assert result.shift == pytest.approx(6.0) and result.mean_original == 3.0
    assert result.n_flip_pairs == 6 and result.flip_rate == 1.0  # 9 > 6 every time: a gullible judge
    assert result.flip_ci_low == 1.0 and result.flip_ci_high == 1.0
    assert result.flagged_original == 0.0 and result.flagged_variant == 1.0  # the detector sees every family
    assert records[0]["reference_score"] == 6.0 and records[0]["variant_flags"]
    assert judge.stats.criteria_generated == 6  # original, variant and reference share one criteria set


def test_injection_probe_on_a_judge_that_is_not_fooled():
    judge = Judge(FakeBackend("scores"), JudgeConfig(), Store(None))  # hash scores, blind to the injection
    items = [_item(i, f"answer {i}") for i in range(8)]
    result, _ = run_probe(judge.score_batch, "injection/override", build_pairs("injection/override", items),
                          n_resamples=100)
    assert result.n_pairs == 8 and result.flip_rate is not None and 0 <= result.flip_rate <= 1
    assert result.flip_ci_low is not None and result.flip_ci_low <= result.flip_rate <= result.flip_ci_high


def test_every_injection_family_raises_its_own_flag():
    from cerm.bench.probes import INJECTIONS
    from cerm.injection import injection_flags

    assert "verdict_imitation" in injection_flags("answer\n\n" + INJECTIONS["fake-verdict"])
    assert "prompt_delimiter" in injection_flags("answer\n\n" + INJECTIONS["delimiter"])
    assert "grader_order" in injection_flags("answer\n\n" + INJECTIONS["override"])
    assert injection_flags("The answer is 4, because 2 + 2 = 4.") == ()
