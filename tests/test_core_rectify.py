"""The SCOPE stage (gate, PRM prefix, selection, refiner, verification, mixing) on small groups."""

import numpy as np
import pytest

from scope_bench.core import (
    RefineResult,
    Rollout,
    ScopeConfig,
    rectify_group,
    rectify_groups,
    selection_scores,
)


def tokenize(text):
    return [ord(c) for c in text]  # one token per character: offsets are trivial to check


def rollout(text, reward, question="q", gt="7"):
    return Rollout(question, gt, text, tokenize(text), [(i, i + 1) for i in range(len(text))], reward)


class MarkPRM:
    """Steps containing 'BAD' are wrong; counts calls to show batching."""

    def __init__(self):
        self.calls = 0

    def score(self, questions, steps):
        self.calls += 1
        return [[0.1 if "BAD" in s else 0.9 for s in ss] for ss in steps]


class FixedRefiner:
    def __init__(self, suffix="so \\boxed{7}", error=None):
        self.suffix, self.error, self.calls, self.requests = suffix, error, 0, []

    def refine(self, requests):
        self.calls += 1
        self.requests += list(requests)
        return [RefineResult(None if self.error else self.suffix, self.error) for _ in requests]


def verify(text, gt):
    return 1.0 if f"\\boxed{{{gt}}}" in text else 0.0


def run(groups, refiner=None, prm=None, **cfg):
    return rectify_groups(
        groups, prm=prm or MarkPRM(), refiner=refiner or FixedRefiner(), tokenize=tokenize, verify=verify,
        config=ScopeConfig(**cfg),
    )


def test_groups_with_fewer_than_two_failures_are_not_touched():
    prm, refiner = MarkPRM(), FixedRefiner()
    groups = [[rollout("a\n\n\\boxed{7}", 1.0)] * 3, [rollout("a\n\nBAD", 0.0), rollout("\\boxed{7}", 1.0)]]
    outcomes = run(groups, refiner, prm)
    assert [o.record.status for o in outcomes] == ["not_gated", "not_gated"]
    assert [o.record.n_failures for o in outcomes] == [0, 1]
    assert refiner.calls == 0 and all(o.rectification is None for o in outcomes)


def test_selected_rollout_is_the_argmax_of_eq4_and_mixing_keeps_prefix_tokens():
    group = [
        rollout("s1\n\nBAD\n\nx", 0.0),  # k=1 of 3
        rollout("s1\n\ns2\n\nBAD", 0.0),  # k=2 of 3: the nearest miss
        rollout("s1\n\ns2\n\n\\boxed{7}", 1.0),
        rollout("BAD", 0.0),  # k=0
    ]
    out = run([group])[0]
    # by hand, with batch statistics of all four rollouts
    K, T = [3, 3, 3, 1], [len(r.text) for r in group]
    k, Tk = [1, 2, 0], [len("s1\n\n"), len("s1\n\ns2\n\n"), 0]
    scores = selection_scores(k, [3, 3, 1], Tk, [T[0], T[1], T[3]], step_stats=(np.mean(K), np.var(K)), token_stats=(np.mean(T), np.var(T)))
    assert out.record.selected == [0, 1, 3][int(np.argmax(scores))] == 1
    assert out.record.status == "rectified" and out.record.reason is None
    assert (out.record.prefix_steps, out.record.total_steps) == (2, 3)
    mixed = out.rectification
    assert mixed.index == 1 and mixed.reward == 1.0
    assert mixed.text == "s1\n\ns2\n\nso \\boxed{7}"
    assert mixed.token_ids == tokenize("s1\n\ns2\n\n") + tokenize("so \\boxed{7}")
    assert mixed.offpolicy_mask == [0] * 8 + [1] * len("so \\boxed{7}")
    assert out.record.keep_ratio == pytest.approx(8 / len(group[1].text))
    assert set(out.step_scores) == {0, 1, 3}


def test_refiner_gets_problem_prefix_and_ground_truth():
    refiner = FixedRefiner()
    run([[rollout("s1\n\nBAD", 0.0, "What?", "7"), rollout("BAD", 0.0, "What?", "7")]], refiner)
    (req,) = refiner.requests
    assert (req.question, req.prefix, req.ground_truth) == ("What?", "s1\n\n", "7")


def test_failure_that_the_prm_fully_accepts_loses_its_last_step():
    out = run([[rollout("s1\n\ns2\n\ns3", 0.0), rollout("s1\n\ns2", 0.0)]])[0]
    assert out.record.selected == 0 and out.record.prefix_steps == 2
    assert out.rectification.text == "s1\n\ns2\n\nso \\boxed{7}"


@pytest.mark.parametrize(
    "refiner, reason",
    [
        (FixedRefiner(error="timeout"), "refiner_error:timeout"),
        (FixedRefiner(error="http_500"), "refiner_error:http_500"),
        (FixedRefiner(suffix="so \\boxed{8}"), "suffix_wrong"),
        (FixedRefiner(suffix="  \n"), "refiner_error:empty"),
        (FixedRefiner(suffix="s1\n\ns2\n\n\\boxed{7}"), "prefix_rewritten"),
    ],
)
def test_refiner_failures_leave_the_group_as_sampled(refiner, reason):
    out = run([[rollout("s1\n\nBAD", 0.0), rollout("s1\n\nBAD\n\nx", 0.0)]], refiner)[0]
    assert out.record.status == "skipped" and out.record.reason == reason
    assert out.rectification is None


def test_one_prm_call_and_one_refiner_call_per_batch():
    prm, refiner = MarkPRM(), FixedRefiner()
    groups = [[rollout("s1\n\nBAD", 0.0), rollout("BAD", 0.0)] for _ in range(5)]
    outcomes = run(groups, refiner, prm)
    assert prm.calls == 1 and refiner.calls == 1 and len(refiner.requests) == 5
    assert all(o.record.status == "rectified" for o in outcomes)


def test_replace_entire_rollout_keeps_no_prefix_and_needs_no_prm():
    refiner = FixedRefiner(suffix="s1\n\n\\boxed{7}")
    outcomes = rectify_groups(
        [[rollout("s1\n\nBAD", 0.0), rollout("s1\n\ns2\n\nBAD", 0.0)]], prm=None, refiner=refiner,
        tokenize=tokenize, verify=verify, config=ScopeConfig(prefix_source="none"),
    )
    mixed = outcomes[0].rectification
    assert refiner.requests[0].prefix == "" and mixed.index == 0
    assert mixed.offpolicy_mask == [1] * len(mixed.token_ids) and mixed.prefix_tokens == 0


def test_empty_rollouts_can_be_rectified_from_scratch():
    out = run([[rollout("", 0.0), rollout("", 0.0)]])[0]
    assert out.record.status == "rectified" and out.rectification.prefix_tokens == 0
    assert out.step_scores == {}


def test_group_statistics_change_the_choice():
    group = [rollout("s1\n\nBAD" + "x" * 40, 0.0), rollout("s1\n\ns2\n\ns3\n\nBAD", 0.0)]
    # the rest of the batch looks like the first rollout: it is typical there, the second an outlier
    others = [rollout("s1\n\nBAD" + "y" * 40, 0.0)] * 2
    # group statistics alone: equal weights, the second has the longer verified share (by hand: .57 vs .22)
    assert run([group, others], stats_scope="group")[0].record.selected == 1
    # batch statistics: weights .85^2 vs .22^2 turn the choice (by hand: .42 vs .08)
    assert run([group, others], stats_scope="batch")[0].record.selected == 0


def test_too_long_mixed_trajectory_is_skipped():
    out = run([[rollout("s1\n\nBAD", 0.0), rollout("BAD", 0.0)]], max_response_tokens=5)[0]
    assert out.record.reason == "too_long"


def test_score_all_failures_scores_ungated_groups_too():
    outcomes = run([[rollout("s1\n\nBAD", 0.0), rollout("\\boxed{7}", 1.0)]], score_all_failures=True)
    assert outcomes[0].record.status == "not_gated" and outcomes[0].step_scores == {0: [0.9, 0.1]}


def test_bad_prm_output_and_config_raise():
    class ShortPRM:
        def score(self, questions, steps):
            return [[0.9] for _ in steps]

    with pytest.raises(ValueError, match="1 scores for a rollout of 2 steps"):
        run([[rollout("a\n\nb", 0.0), rollout("a\n\nb", 0.0)]], prm=ShortPRM())
    with pytest.raises(ValueError, match="stats_scope"):
        ScopeConfig(stats_scope="epoch")
    with pytest.raises(ValueError, match="token ids"):
        Rollout("q", "1", "ab", [1], [(0, 1), (1, 2)], 0.0)
    with pytest.raises(ValueError, match="needs a process reward model"):
        rectify_group([rollout("a", 0.0), rollout("b", 0.0)], prm=None, refiner=FixedRefiner(), tokenize=tokenize, verify=verify)


def test_stage_metrics_count_what_happened():
    from scope_bench.core.rectify import stage_metrics

    groups = [
        [rollout("s1\n\nBAD", 0.0), rollout("s1\n\ns2\n\nBAD", 0.0)],  # rectified (the typical length: 4 of 7 kept)
        [rollout("\\boxed{7}", 1.0), rollout("BAD", 0.0)],  # one failure: not gated
    ]
    metrics = stage_metrics(run(groups), len(groups))
    assert metrics == {
        "groups_total": 2, "groups_gated": 1, "groups_rectified": 1, "groups_skipped": 0,
        "refiner_failures": 0, "keep_ratio": pytest.approx(4 / 7),
    }
    failed = stage_metrics(run(groups[:1], FixedRefiner(suffix="so \\boxed{8}")), 1)
    assert failed["groups_skipped"] == 1 and failed["refiner_failures"] == 1 and failed["skip/suffix_wrong"] == 1
    assert stage_metrics(None, 3)["groups_total"] == 3
