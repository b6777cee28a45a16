"""Near-miss@k from prefix lengths, and through a real ProcessRewardModel (the synthetic rule-based PRM)."""

import math

import pytest

from scope_bench.analysis.nearmiss import near_miss_at_k, near_miss_from_prm


def test_fraction_of_failures_within_k_steps_of_the_end():
    # gaps K - k: 1, 3, 0, 2 for the four failures; the success (gap 0) must not count
    prefix = [4, 2, 5, 3, 6]
    steps = [5, 5, 5, 5, 6]
    rewards = [0, 0, 0, 0, 1]
    assert near_miss_at_k(prefix, steps, rewards) == {1: 2 / 4, 2: 3 / 4, 3: 4 / 4}


def test_no_failure_is_undefined_and_empty_response_is_never_near():
    assert all(math.isnan(v) for v in near_miss_at_k([3], [3], [1]).values())
    assert near_miss_at_k([0, 2], [0, 3], [0, 0], ks=(1,)) == {1: 0.5}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same length"):
        near_miss_at_k([1], [2, 3], [0])
    with pytest.raises(ValueError, match="sample 0"):
        near_miss_at_k([4], [3], [0])


def test_with_the_synthetic_rule_based_prm():
    from scope_bench.synthetic.prm import RuleBasedPRM
    from scope_bench.synthetic.task import generate_problems, solution_steps

    problems = [p for p in generate_problems(30, seed=0) if len(p.ops) >= 4][:3]
    assert len(problems) == 3
    questions, responses, rewards, gaps = [], [], [], []
    for p in problems:
        good = solution_steps(p.start, list(p.ops))  # len(ops) steps + the boxed answer
        for wrong_at in (len(good) - 1, 1):          # wrong final answer; wrong second step
            steps = list(good)
            steps[wrong_at] = "1 + 1 = 3" if wrong_at < len(p.ops) else "The answer is \\boxed{-1}."
            questions.append(p.question)
            responses.append("\n\n".join(steps))
            rewards.append(0.0)
            gaps.append(len(steps) - wrong_at)
        questions.append(p.question)
        responses.append("\n\n".join(good))
        rewards.append(1.0)
    got = near_miss_from_prm(RuleBasedPRM(), questions, responses, rewards, ks=(1, 2, 3))
    expected = {k: sum(g <= k for g in gaps) / len(gaps) for k in (1, 2, 3)}
    assert got == expected
    assert got[1] == 0.5  # the wrong-answer failures are exactly one step short


class RecordingPRM:
    def __init__(self):
        self.seen = []

    def score(self, questions, steps):
        self.seen += list(questions)
        return [[0.9] * (len(s) - 1) + [0.1] for s in steps]


def test_only_failed_responses_with_steps_are_scored():
    prm = RecordingPRM()
    got = near_miss_from_prm(prm, ["q1", "q2", "q3"], ["a\n\nb", "c\n\nd", ""], [1, 0, 0], ks=(1,))
    assert prm.seen == ["q2"]
    assert got == {1: 0.5}  # q2 misses by one step; the empty q3 is a failure but no near miss


def test_prm_returning_wrong_number_of_scores_is_an_error():
    class Short:
        def score(self, questions, steps):
            return [[0.9] for _ in steps]

    with pytest.raises(ValueError, match="1 scores for response 0 with 2 steps"):
        near_miss_from_prm(Short(), ["q"], ["a\n\nb"], [0])
