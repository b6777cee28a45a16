"""GRPO advantages and the hybrid objective (eq. 6): values and gradients computed by hand."""

import math

import numpy as np
import pytest
import torch

from scope_bench.core import (
    LossConfig,
    grpo_advantages,
    hybrid_loss,
    prm_shaped_reward,
    sft_loss,
    shaped_weight,
)
from scope_bench.core.losses import clipped_surrogate, hybrid_token_objective

torch.set_num_threads(1)


def test_shaped_weight():
    assert shaped_weight(0.1) == pytest.approx(0.5)
    assert shaped_weight(0.9, gamma=0.1) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        shaped_weight(0.5, gamma=0.0)


def test_grpo_advantages_by_hand():
    rewards = [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    groups = ["a", "a", "a", "b", "b", "c"]
    std_a = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased
    adv = grpo_advantages(rewards, groups)
    np.testing.assert_allclose(adv[:3], [(2 / 3) / (std_a + 1e-6), -(1 / 3) / (std_a + 1e-6), -(1 / 3) / (std_a + 1e-6)], rtol=1e-6)
    np.testing.assert_allclose(adv[3:5], [0.0, 0.0])  # no variance: no signal
    np.testing.assert_allclose(adv[5], 1.0 / (1 + 1e-6), rtol=1e-6)  # a group of one: mean 0, std 1
    assert isinstance(adv, np.ndarray)
    assert isinstance(grpo_advantages(torch.tensor(rewards), groups), torch.Tensor)


def test_grpo_advantages_bad_input():
    with pytest.raises(ValueError, match="group ids"):
        grpo_advantages([1.0, 0.0], ["a"])
    with pytest.raises(ValueError, match="finite"):
        grpo_advantages([float("nan"), 0.0], ["a", "a"])


def test_grpo_advantages_match_verl():
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is not installed")
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (24,), generator=gen).float()
    index = np.array([f"q{i // 8}" for i in range(24)] + [])
    index[-1] = "alone"
    mask = torch.ones(24, 5)
    token_rewards = torch.zeros(24, 5)
    token_rewards[:, -1] = rewards
    verl_adv, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, index)
    ours = grpo_advantages(rewards, list(index))
    torch.testing.assert_close(verl_adv[:, 0], ours, rtol=0, atol=0)


def _batch():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.9], [0.4, 0.6, 0.3]], dtype=torch.float64)).requires_grad_()
    old_logp = torch.log(torch.tensor([[0.4, 0.2, 0.9], [0.5, 0.3, 0.3]], dtype=torch.float64))
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    off = torch.tensor([[0, 0, 1], [0, 0, 0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.float64)
    return logp, old_logp, adv, off, mask


def test_hybrid_loss_value_by_hand():
    logp, old_logp, adv, off, mask = _batch()
    loss = hybrid_loss(logp, old_logp, adv, off, mask, clip_eps=0.2, lam=1.0, gamma=0.1)
    # row 0: r = 1.25 -> clipped 1.2 (A=+1): 1.2; r = 1: 1.0; suffix token: f(0.9) = 0.9
    # row 1: r = 0.8 (A=-1): min(-0.8, -0.8) = -0.8; r = 2: min(-2, -1.2) = -2.0; third token masked
    expected = -(1.2 + 1.0 + 0.9 - 0.8 - 2.0) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-12)


def test_hybrid_loss_gradient_by_hand():
    logp, old_logp, adv, off, mask = _batch()
    hybrid_loss(logp, old_logp, adv, off, mask, lam=2.0, gamma=0.1).backward()
    grad = logp.grad
    # clipped tokens carry no gradient; unclipped: d(r A)/dlogp = r A (also r = 2 with A < 0, where the
    # unclipped term is the minimum); suffix: d(lam f(p))/dlogp = lam * gamma p / (p + gamma)^2
    expected = -torch.tensor(
        [[0.0, 1.0, 2.0 * 0.1 * 0.9 / (0.9 + 0.1) ** 2], [-0.8, -2.0, 0.0]], dtype=torch.float64
    ) / 5
    torch.testing.assert_close(grad, expected)
    assert old_logp.grad is None


def test_clipped_surrogate_every_branch_by_hand():
    """min(rA, clip(r, 1-eps, 1+eps) A), then max(., c A) for A < 0 (dual-clip), token by token."""
    ratios = torch.tensor([4.0, 1.1, 0.5, 4.0, 2.0, 1.1, 0.5, 0.9], dtype=torch.float64)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0], dtype=torch.float64)
    logp = torch.log(ratios).requires_grad_()
    old = torch.zeros_like(ratios)
    got = clipped_surrogate(logp, old, adv, clip_eps=0.2, clip_ratio_c=3.0)
    expected = [1.2,   # A>0, r above 1+eps: clipped at 1.2
                1.1,   # A>0, inside the range
                0.5,   # A>0, r below 1-eps: the unclipped rA is the minimum
                -3.0,  # A<0, r=4: min(-4, -1.2) = -4, dual-clip lifts it to c*A = -3
                -2.0,  # A<0, r=2 < c: -2 stays
                -1.1,  # A<0, r=1.1 inside the range: -1.1
                -0.8,  # A<0, r=0.5 below 1-eps: min(-0.5, -0.8) = -0.8, the 1-eps bound (no gradient)
                -0.9]  # A<0, inside the range
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    got.sum().backward()
    # d(rA)/dlogp = rA where the unclipped term is chosen; 0 where clipped or dual-clipped
    torch.testing.assert_close(logp.grad, torch.tensor([0, 1.1, 0.5, 0, -2.0, -1.1, 0, -0.9], dtype=torch.float64))
    plain = clipped_surrogate(torch.log(ratios), old, adv, clip_eps=0.2)
    assert plain[3].item() == pytest.approx(-4.0)  # no dual-clip without clip_ratio_c
    with pytest.raises(ValueError, match="clip_ratio_c"):
        clipped_surrogate(logp, old, adv, clip_ratio_c=1.0)


def test_offpolicy_advantage_form_multiplies_by_advantage():
    logp, old_logp, adv, off, mask = _batch()
    luffy = hybrid_loss(logp, old_logp, adv * 3, off, mask, offpolicy_advantage=True)
    paper = hybrid_loss(logp, old_logp, adv * 3, off, mask, offpolicy_advantage=False)
    # only the suffix token differs: 3 * f(0.9) vs f(0.9)
    assert (paper - luffy).item() == pytest.approx((3 * 0.9 - 0.9) / 5)


def test_zero_mask_is_grpo_and_advantage_may_be_per_token():
    logp, old_logp, adv, _, mask = _batch()
    zero = torch.zeros_like(mask)
    a = hybrid_loss(logp, old_logp, adv, zero, mask)
    b = hybrid_loss(logp, old_logp, adv.unsqueeze(1).expand(2, 3), zero, mask)
    assert a.item() == pytest.approx(b.item())


def test_hybrid_loss_bad_shapes():
    logp, old_logp, adv, off, mask = _batch()
    with pytest.raises(ValueError, match="response_mask"):
        hybrid_loss(logp, old_logp, adv, off, mask[:, :2])
    with pytest.raises(ValueError, match="advantages"):
        hybrid_loss(logp, old_logp, torch.ones(3), off, mask)


def test_sft_loss_and_prm_reward():
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    assert sft_loss(logp, torch.ones(1, 2)).item() == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert prm_shaped_reward(0.0, [0.9, 0.2, 0.8]) == pytest.approx(0.1)
    assert prm_shaped_reward(1.0, [0.9, 0.5], aggregate="mean", weight=1.0) == pytest.approx(1.7)
    assert prm_shaped_reward(1.0, []) == 1.0


def test_loss_config_validates():
    with pytest.raises(ValueError, match="clip_eps"):
        LossConfig(clip_eps=1.5)


# --- eq. 6 pinned branch by branch (hand-computed; docs/mutation.md) --------------------------------
# eps = 0.1 so that a bound moved to 1 - 2 eps (0.8) or 1 + 2 eps (1.2) changes a value: the ratios
# 0.85 and 1.15 sit between the true bound and the moved one.
_EQ6_RATIOS = [0.5, 0.85, 1.05, 1.15, 1.5, 5.0]


def _eq6(ratios, adv, **kwargs):
    r = torch.tensor(ratios, dtype=torch.float64)
    logp = torch.log(r).requires_grad_()
    got = clipped_surrogate(logp, torch.zeros_like(r), torch.full_like(r, adv), clip_eps=0.1, **kwargs)
    got.sum().backward()
    return got.detach(), logp.grad


@pytest.mark.parametrize("dual", [None, 3.0])
def test_eq6_positive_advantage_every_ratio_region(dual):
    # A = +2: min(rA, clip(r, 0.9, 1.1) A); dual-clip never touches A > 0 (c A = 6 would exceed every value)
    got, grad = _eq6(_EQ6_RATIOS, 2.0, clip_ratio_c=dual)
    expected = [1.0,   # r = 0.5 below 1-eps: min(1.0, 1.8) = 1.0, unclipped
                1.7,   # r = 0.85 below 1-eps: min(1.7, 1.8) = 1.7
                2.1,   # inside: 2.1
                2.2,   # r = 1.15 above 1+eps: min(2.3, 2.2) = 2.2 (clipped)
                2.2,   # r = 1.5: min(3.0, 2.2)
                2.2]   # r = 5: min(10, 2.2)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # the gradient d(rA)/dlogp = rA where the unclipped term is the minimum, 0 where clipped
    torch.testing.assert_close(grad, torch.tensor([1.0, 1.7, 2.1, 0, 0, 0], dtype=torch.float64))


def test_eq6_negative_advantage_every_ratio_region_without_dual_clip():
    got, grad = _eq6(_EQ6_RATIOS, -2.0)
    expected = [-1.8,   # r = 0.5: min(-1.0, 0.9 * -2 = -1.8) = -1.8, the 1-eps bound
                -1.8,   # r = 0.85: min(-1.7, -1.8) = -1.8 (a bound at 1 - 2 eps = 0.8 would give -1.7)
                -2.1,   # inside
                -2.3,   # r = 1.15: min(-2.3, -2.2) = -2.3, unclipped
                -3.0,   # r = 1.5: min(-3.0, -2.2)
                -10.0]  # r = 5: min(-10, -2.2); no floor without dual-clip
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([0, 0, -2.1, -2.3, -3.0, -10.0], dtype=torch.float64))


def test_eq6_negative_advantage_with_dual_clip():
    # c = 3, A = -2: floor c A = -6 lifts only r = 5 (-10 -> -6, no gradient); r = 2.5 gives -5, kept
    got, grad = _eq6(_EQ6_RATIOS + [2.5], -2.0, clip_ratio_c=3.0)
    expected = [-1.8, -1.8, -2.1, -2.3, -3.0, -6.0, -5.0]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(grad, torch.tensor([0, 0, -2.1, -2.3, -3.0, 0, -5.0], dtype=torch.float64))


def test_eq6_dual_clip_bound_just_above_one_is_valid():
    # c = 1.5 is legal (only c <= 1 is refused); A = -2: r = 1.2 -> min(-2.4, -2.2) = -2.4 > -3 kept,
    # r = 2 -> min(-4, -2.2) = -4, lifted to c A = -3
    got, _ = _eq6([1.2, 2.0], -2.0, clip_ratio_c=1.5)
    torch.testing.assert_close(got, torch.tensor([-2.4, -3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="clip_ratio_c"):
        _eq6([1.0], -1.0, clip_ratio_c=0.5)


def test_eq6_zero_advantage_is_zero_with_and_without_dual_clip():
    for dual in (None, 3.0):
        got, grad = _eq6(_EQ6_RATIOS, 0.0, clip_ratio_c=dual)
        torch.testing.assert_close(got, torch.zeros(6, dtype=torch.float64))
        torch.testing.assert_close(grad, torch.zeros(6, dtype=torch.float64))


def test_eq6_log_ratio_is_clamped_to_plus_minus_20():
    # as verl: |logp - old_logp| is clamped at 20 before exp. A = -1, no dual-clip: min(-e^20, -1.2) = -e^20;
    # A = +1 at log ratio -25: min(e^-20, 0.8) = e^-20
    logp = torch.tensor([25.0, -25.0], dtype=torch.float64)
    got = clipped_surrogate(logp, torch.zeros(2, dtype=torch.float64), torch.tensor([-1.0, 1.0], dtype=torch.float64))
    assert got[0].item() == pytest.approx(-math.exp(20), rel=1e-12)
    assert got[1].item() == pytest.approx(math.exp(-20), rel=1e-12)


def test_eq6_old_logp_gets_no_gradient():
    logp = torch.log(torch.tensor([1.05], dtype=torch.float64)).requires_grad_()
    old = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    clipped_surrogate(logp, old, torch.ones(1, dtype=torch.float64), clip_eps=0.1).sum().backward()
    assert old.grad is None
    assert logp.grad.item() == pytest.approx(1.05)


def _mixed_tokens():
    # tokens 0-1 on-policy (prefix), 2-3 off-policy (refiner suffix); the old log-probs of the suffix
    # tokens are nonsense on purpose: the off-policy term must not use the ratio
    p = torch.tensor([[1.05, 0.5, 0.6, 0.3]], dtype=torch.float64)  # token 0: logp = log 1.05, old 0 -> r = 1.05
    logp = torch.log(p).requires_grad_()
    old = torch.log(torch.tensor([[1.0, 0.25, 0.01, 0.9]], dtype=torch.float64))
    off = torch.tensor([[0, 0, 1, 1]], dtype=torch.float64)
    return logp, old, off


def test_eq6_mixed_tokens_lam_gamma_paper_form():
    # lam = 0.5, gamma = 0.3: f(0.6) = 0.6 / 0.9 = 2/3 -> 1/3; f(0.3) = 0.3 / 0.6 = 1/2 -> 1/4
    # on-policy, A = -2, eps = 0.1: r = 1.05 -> -2.1; r = 0.5 / 0.25 = 2 -> min(-4, -2.2) = -4, dual c = 3 -> -4 kept
    logp, old, off = _mixed_tokens()
    got = hybrid_token_objective(logp, old, torch.tensor([-2.0], dtype=torch.float64), off,
                                 clip_eps=0.1, clip_ratio_c=3.0, lam=0.5, gamma=0.3, offpolicy_advantage=False)
    torch.testing.assert_close(got, torch.tensor([[-2.1, -4.0, 1 / 3, 0.25]], dtype=torch.float64))
    got.sum().backward()
    # off-policy: d(lam p / (p + gamma))/dlogp = lam gamma p / (p + gamma)^2 = 0.09 / 0.81 = 1/9 and 0.045 / 0.36 = 1/8
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.1, -4.0, 1 / 9, 1 / 8]], dtype=torch.float64))


def test_eq6_mixed_tokens_lam_gamma_luffy_form_multiplies_by_advantage():
    logp, old, off = _mixed_tokens()
    got = hybrid_token_objective(logp, old, torch.tensor([-2.0], dtype=torch.float64), off,
                                 clip_eps=0.1, clip_ratio_c=3.0, lam=0.5, gamma=0.3, offpolicy_advantage=True)
    # the off-policy terms times A = -2; the on-policy ones unchanged
    torch.testing.assert_close(got, torch.tensor([[-2.1, -4.0, -2 / 3, -0.5]], dtype=torch.float64))
    got.sum().backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-2.1, -4.0, -2 / 9, -1 / 4]], dtype=torch.float64))


def test_eq6_lam_zero_drops_the_offpolicy_term():
    logp, old, off = _mixed_tokens()
    got = hybrid_token_objective(logp, old, torch.tensor([-2.0], dtype=torch.float64), off,
                                 clip_eps=0.1, clip_ratio_c=None, lam=0.0, gamma=0.3)
    torch.testing.assert_close(got, torch.tensor([[-2.1, -4.0, 0.0, 0.0]], dtype=torch.float64))


def test_eq6_hybrid_loss_is_minus_the_token_mean_over_response_tokens():
    # the objective of _mixed_tokens (paper form) is [-2.1, -4, 1/3, 1/4]; response mask drops token 1
    logp, old, off = _mixed_tokens()
    rmask = torch.tensor([[1, 0, 1, 1]], dtype=torch.float64)
    loss = hybrid_loss(logp, old, torch.tensor([-2.0], dtype=torch.float64), off, rmask,
                       clip_eps=0.1, clip_ratio_c=3.0, lam=0.5, gamma=0.3)
    assert loss.item() == pytest.approx(-(-2.1 + 1 / 3 + 0.25) / 3, abs=1e-12)
    # one response token: the mean is that token (no floor of the denominator above 1)
    one = torch.tensor([[0, 0, 1, 0]], dtype=torch.float64)
    loss = hybrid_loss(logp, old, torch.tensor([-2.0], dtype=torch.float64), off, one,
                       clip_eps=0.1, clip_ratio_c=3.0, lam=0.5, gamma=0.3)
    assert loss.item() == pytest.approx(-1 / 3, abs=1e-12)
    # no response token at all: 0, not 0/0
    none = hybrid_loss(logp, old, torch.tensor([-2.0], dtype=torch.float64), off, torch.zeros_like(rmask),
                       clip_eps=0.1, clip_ratio_c=3.0, lam=0.5, gamma=0.3)
    assert none.item() == 0.0


def test_eq6_hybrid_loss_refuses_non_finite_logp():
    logp, old, off = _mixed_tokens()
    bad = logp.detach().clone()
    bad[0, 1] = -math.inf
    with pytest.raises(ValueError, match="non-finite"):
        hybrid_loss(bad, old, torch.tensor([1.0], dtype=torch.float64), off, torch.ones_like(off))
    with pytest.raises(ValueError, match="old_logp"):
        hybrid_loss(logp, old[:, :3], torch.tensor([1.0], dtype=torch.float64), off, torch.ones_like(off))


def test_eq6_defaults_that_remain_are_loss_config_defaults():
    """Engines pass `LossConfig.objective_kwargs()`; a default left in a signature must be the same number."""
    import inspect

    from scope_bench.core.losses import hybrid_token_objective as token_objective

    config = LossConfig().objective_kwargs()
    config["clip_ratio_c"] = None  # the functions' own default: dual-clip off unless asked
    for fn in (clipped_surrogate, token_objective, hybrid_loss, shaped_weight):
        for name, param in inspect.signature(fn).parameters.items():
            if name in config and param.default is not inspect.Parameter.empty:
                assert param.default == config[name], (fn.__name__, name)
