"""The engines' shared stage: flat indices, rewards, rewrites and metrics for each method."""

import pytest

from scope_bench.core import RefineResult, Rollout
from scope_bench.engines.stage import Timer, apply_stage


def rollout(text, reward):
    return Rollout("q", "7", text, [ord(c) for c in text], [(i, i + 1) for i in range(len(text))], reward)


class PRM:
    def score(self, questions, steps):
        return [[0.1 if "BAD" in s else 0.9 for s in ss] for ss in steps]


class Refiner:
    def refine(self, requests):
        return [RefineResult("so \\boxed{7}") for _ in requests]


def verify(text, gt):
    return float(f"\\boxed{{{gt}}}" in text)


GROUPS = [
    [rollout("\\boxed{7}", 1.0), rollout("ok\n\n\\boxed{7}", 1.0)],  # solved: not gated
    [rollout("s1\n\nBAD", 0.0), rollout("s1\n\ns2\n\nBAD", 0.0), rollout("", 0.0)],
]


def test_none_changes_nothing_but_can_measure_near_miss():
    result = apply_stage("none", GROUPS, prm=PRM(), near_miss=True)
    assert result.rewards == [1.0, 1.0, 0.0, 0.0, 0.0] and not result.rectifications
    # failures: gaps 1 ("s1" then BAD), 1, and the empty one (never a near miss)
    assert result.metrics["near_miss@1"] == pytest.approx(2 / 3)
    assert result.metrics["groups_rectified"] == 0


def test_scope_indices_are_flat_positions():
    timer = Timer()
    result = apply_stage("scope", GROUPS, prm=PRM(), refiner=Refiner(), tokenize=lambda t: [ord(c) for c in t],
                         verify=verify, near_miss=True, timer=timer)
    # batch statistics (K mean 1.6, var 1.04; T mean 8, var 20): by hand S = .97 for flat 2 and .43 for
    # flat 3, whose longer prefix does not make up for its atypical length
    assert list(result.rectifications) == [2]
    assert result.rewards == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert set(result.step_scores) == {2, 3}
    assert result.metrics["groups_rectified"] == 1 and result.metrics["keep_ratio"] == pytest.approx(4 / 7)
    assert {"stage", "stage/prm", "stage/refiner", "stage/selection", "near_miss"} <= set(timer)


def test_prm_reward_shapes_every_rollout():
    result = apply_stage("prm_reward", GROUPS, prm=PRM(), prm_reward={"weight": 0.5, "aggregate": "min"})
    assert result.rewards == pytest.approx([1.45, 1.45, 0.05, 0.05, 0.0])


def test_missing_pieces_are_named():
    with pytest.raises(ValueError, match="stage must be one of"):
        apply_stage("dpo", GROUPS)
    with pytest.raises(ValueError, match="needs a refiner"):
        apply_stage("scope", GROUPS, prm=PRM())
    with pytest.raises(ValueError, match="needs a PRM"):
        apply_stage("prm_reward", GROUPS)
