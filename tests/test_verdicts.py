"""The verdict code: fed runs where a claim holds, where it is reversed, and where seeds disagree."""

from __future__ import annotations

import math

import pytest

from scope_bench.analysis.verdicts import (
    FAILS,
    HOLDS,
    NOISE,
    UNMEASURED,
    Comparison,
    judge,
    paired_test,
    student_t_cdf,
)
from scope_bench.reports.demo_report import CLAIMS

ID = "id/pass@1"


def runs(scope: list[float], other: list[float], metric: str = ID, other_name: str = "grpo") -> dict:
    return {"scope": {metric: dict(enumerate(scope))}, other_name: {metric: dict(enumerate(other))}}


@pytest.mark.parametrize("scope, grpo, expected", [
    ([10.0, 12.0, 11.0], [5.0, 6.0, 5.5], HOLDS),  # every seed better by 5-6 points
    ([5.0, 6.0, 5.5], [10.0, 12.0, 11.0], FAILS),  # every seed worse: the claim is reversed
    ([10.0, 5.0, 11.0], [9.0, 8.0, 10.0], NOISE),  # +1, -3, +1: seeds disagree
    ([10.0, 10.0, 10.0], [10.0, 10.0, 10.0], NOISE),  # identical
])
def test_claim_one_is_judged_from_the_runs(scope, grpo, expected):
    (verdict, *_) = judge(CLAIMS, runs(scope, grpo))
    assert verdict.claim.name == "1" and verdict.outcome == expected


def test_the_test_is_paired_over_seeds_not_pooled():
    # seed effects dwarf the method effect, but SCOPE wins on every seed by 1: a paired test sees it
    scope, grpo = [11.0, 31.0, 51.0, 71.0], [10.0, 30.0, 50.5, 70.2]
    result = paired_test(dict(enumerate(scope)), dict(enumerate(grpo)), Comparison("scope", "grpo", ID))
    assert result.outcome == HOLDS and result.p_claimed < 0.05
    assert result.diffs == pytest.approx([1.0, 1.0, 0.5, 0.8])


def test_lower_is_better_flips_the_direction():
    c = Comparison("scope", "grpo", "train/near_miss@1", lower_is_better=True)
    assert paired_test({0: 0.1, 1: 0.12, 2: 0.11}, {0: 0.3, 1: 0.31, 2: 0.33}, c).outcome == HOLDS
    assert paired_test({0: 0.3, 1: 0.31, 2: 0.33}, {0: 0.1, 1: 0.12, 2: 0.11}, c).outcome == FAILS


def test_only_common_seeds_are_paired_and_missing_methods_are_not_measured():
    c = Comparison("scope", "grpo", ID)
    result = paired_test({0: 5.0, 1: 6.0, 7: 100.0}, {0: 1.0, 1: 2.0, 2: 0.0}, c)
    assert result.diffs == [4.0, 4.0] and result.outcome == HOLDS
    assert paired_test({0: 5.0}, {0: 1.0}, c).outcome == NOISE  # one seed: no test
    verdicts = judge(CLAIMS, runs([1.0, 2.0], [0.0, 0.0]))
    assert verdicts[1].outcome == UNMEASURED  # no LUFFY run
    assert "not measured" in verdicts[1].primary.describe()


def test_t_distribution():
    assert student_t_cdf(0.0, 2) == pytest.approx(0.5)
    assert student_t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert student_t_cdf(2.919986, 2) == pytest.approx(0.95, abs=1e-6)  # the one-sided 5% point, df=2
    assert student_t_cdf(-1.812461, 10) == pytest.approx(0.05, abs=1e-6)
    assert student_t_cdf(math.inf, 3) == 1.0
