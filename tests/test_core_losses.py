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
from scope_bench.core.losses import clipped_surrogate

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
