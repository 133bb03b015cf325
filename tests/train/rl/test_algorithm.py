"""Per-role rewards (docs/training.md §3.2) and group-normalised advantages (§3.3): pure functions."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cerm.train.rl.algorithm import RoleRewardConfig, credit, criteria_rewards, group_key, normalize_in_groups

IND = RoleRewardConfig()


def test_indicator_rewards_per_role():
    r = criteria_rewards([8.0, 6.0], [7.0, 7.0], IND)
    assert r.chosen == (1.0, 0.0)  # 8 beats both 7s, 6 beats neither
    assert r.rejected == (0.5, 0.5)  # each 7 is beaten by one chosen judgment of two
    assert r.criteria == 0.5  # 2 right of 4 comparisons
    assert (r.num_comparisons, r.num_wins, r.num_ties) == (4, 2, 0)


def test_rejected_judgment_earns_by_scoring_low():
    r = criteria_rewards([6.0, 6.0], [2.0, 9.0], IND)
    assert r.rejected == (1.0, 0.0)
    assert r.chosen == (0.5, 0.5)


@pytest.mark.parametrize(("tie_credit", "expected"), [(0.0, 0.0), (0.5, 0.5)])
def test_ties_follow_the_configured_credit(tie_credit, expected):
    r = criteria_rewards([7.0], [7.0], RoleRewardConfig(tie_credit=tie_credit))
    assert r.chosen == (expected,) and r.rejected == (expected,) and r.criteria == expected
    assert r.num_ties == 1 and r.num_wins == 0


def test_invalid_judgment_gets_format_penalty_and_leaves_comparisons():
    r = criteria_rewards([None, 8.0], [5.0, None], RoleRewardConfig(format_penalty=-0.7))
    assert r.chosen == (-0.7, 1.0)
    assert r.rejected == (1.0, -0.7)
    assert r.criteria == 1.0 and r.num_comparisons == 1


def test_no_valid_partner_gives_zero_and_criteria_zero():
    r = criteria_rewards([None, None], [3.0, 4.0], IND)
    assert r.chosen == (-1.0, -1.0)
    assert r.rejected == (0.0, 0.0)
    assert r.criteria == 0.0 and r.num_comparisons == 0


def test_margin_variant_is_clipped():
    cfg = RoleRewardConfig(mode="margin")
    assert credit(9.0, 4.0, cfg) == 0.5
    assert credit(0.0, 10.0, cfg) == -1.0
    assert criteria_rewards([9.0], [4.0], cfg).criteria == 0.5
    with pytest.raises(ValueError, match="margin"):
        RoleRewardConfig(mode="ratio")  # type: ignore[arg-type]


def test_three_groups_and_ablation_keys():
    assert group_key(3, "chosen", 1, "three_group") == (3, "chosen")
    assert group_key(3, "chosen", 1, "single_group") == (3,)
    assert group_key(3, "criteria", 1, "per_criteria") == (3, "criteria")
    assert group_key(3, "rejected", 1, "per_criteria") == (3, "rejected", 1)
    with pytest.raises(ValueError, match="grouping"):
        group_key(0, "chosen", 0, "two_group")


def test_normalisation_per_group():
    adv = normalize_in_groups([1.0, 0.0, 5.0, 5.0, 2.0, 4.0], ["a", "a", "b", "b", "c", "c"])
    assert adv[0] == pytest.approx(1.0, abs=1e-5) and adv[1] == pytest.approx(-1.0, abs=1e-5)
    assert adv[2:4] == [0.0, 0.0]  # equal rewards: nothing to learn, A = 0 exactly
    assert adv[4] == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(ValueError, match="group keys"):
        normalize_in_groups([1.0], ["a", "b"])


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from([-1.0, 0.0, 0.25, 0.5, 1.0])), min_size=1, max_size=40))
def test_advantages_are_zero_mean_unit_std_per_group(items):
    keys = [k for k, _ in items]
    rewards = [r for _, r in items]
    adv = normalize_in_groups(rewards, keys)
    for key in set(keys):
        values = [a for a, k in zip(adv, keys, strict=True) if k == key]
        raw = [r for r, k in zip(rewards, keys, strict=True) if k == key]
        assert sum(values) / len(values) == pytest.approx(0.0, abs=1e-6)
        if max(raw) > min(raw):
            std = math.sqrt(sum(v * v for v in values) / len(values))
            assert std == pytest.approx(1.0, abs=1e-3)
        else:
            assert values == [0.0] * len(values)
