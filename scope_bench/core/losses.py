"""The training objectives: SCOPE's hybrid objective (eq. 6), SFT, and the PRM-reward baseline.

Each function returns a loss to minimise. Per-token objectives are separate functions so that an
engine (verl) can aggregate them its own way and still compute exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import LossConfig, PRMRewardConfig


def shaped_weight(p, gamma: float = LossConfig.gamma):
    """`f(p) = p / (p + gamma)` (LUFFY's policy shaping): boosts the gradient of low-probability
    tokens of the off-policy suffix, where plain likelihood would be dominated by confident ones."""
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    return p / (p + gamma)


def clipped_surrogate(logp, old_logp, advantages, clip_eps: float = LossConfig.clip_eps,
                      clip_ratio_c: float | None = None):
    """Per-token PPO objective `min(r A, clip(r, 1-eps, 1+eps) A)`, `r = pi_theta / pi_old`.

    `clip_ratio_c` adds dual-clip (Ye et al. 2020, verl's stock `vanilla` loss): for `A < 0` the
    objective is at least `c * A`, so a token whose ratio ran far above 1 cannot dominate the step.
    """
    log_ratio = torch.clamp(logp - old_logp.detach(), -20.0, 20.0)  # as verl, to avoid exp overflow
    ratio = torch.exp(log_ratio)
    objective = torch.minimum(ratio * advantages, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * advantages)
    if clip_ratio_c is None:
        return objective
    if clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be greater than 1, got {clip_ratio_c}")
    return torch.where(advantages < 0, torch.maximum(objective, clip_ratio_c * advantages), objective)


def hybrid_token_objective(
    logp, old_logp, advantages, offpolicy_mask, *, clip_eps=LossConfig.clip_eps, clip_ratio_c=None,
    lam=LossConfig.lam, gamma=LossConfig.gamma, offpolicy_advantage=LossConfig.offpolicy_advantage,
):
    """Eq. 6 per token: the clipped surrogate on on-policy (prefix) tokens, `lam * f(pi_theta)` on
    off-policy (suffix) tokens, times the advantage in LUFFY's form. Shape of `logp`."""
    advantages = _per_token(advantages, logp)
    mask = offpolicy_mask.to(logp.dtype)
    offpolicy = lam * shaped_weight(torch.exp(logp), gamma)
    if offpolicy_advantage:
        offpolicy = offpolicy * advantages
    onpolicy = clipped_surrogate(logp, old_logp, advantages, clip_eps, clip_ratio_c)
    return (1 - mask) * onpolicy + mask * offpolicy


def hybrid_loss(
    logp,
    old_logp,
    advantages,
    offpolicy_mask,
    response_mask,
    *,
    clip_eps: float = LossConfig.clip_eps,
    clip_ratio_c: float | None = None,
    lam: float = LossConfig.lam,
    gamma: float = LossConfig.gamma,
    offpolicy_advantage: bool = LossConfig.offpolicy_advantage,
):
    """Eq. 6 as a loss, `-J`: token-mean over all response tokens of the batch (`1 / sum_i |o_i|`).

    With an all-zero `offpolicy_mask` this is exactly GRPO's clipped objective. Gradients flow only
    through `logp`. Shapes: `(batch, tokens)`; `advantages` may be `(batch,)`.
    """
    _check_shapes(logp, old_logp=old_logp, offpolicy_mask=offpolicy_mask, response_mask=response_mask)
    objective = hybrid_token_objective(
        logp, old_logp, advantages, offpolicy_mask,
        clip_eps=clip_eps, clip_ratio_c=clip_ratio_c, lam=lam, gamma=gamma, offpolicy_advantage=offpolicy_advantage,
    )
    return -masked_token_mean(objective, response_mask)


def sft_loss(logp, response_mask):
    """Negative log-likelihood, token-mean over the batch's response tokens (SFT baseline)."""
    _check_shapes(logp, response_mask=response_mask)
    return -masked_token_mean(logp, response_mask)


def masked_token_mean(values, mask):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def prm_shaped_reward(outcome: float, step_scores: Sequence[float], *, weight: float = PRMRewardConfig.weight,
                      aggregate: str = PRMRewardConfig.aggregate):
    """RL w/ PRM reward baseline: `R + weight * agg_j p_j` (agg = min or mean over steps; 0 without steps).

    `min` is the aggregation the Qwen2.5-Math-PRM authors recommend (a chain is as good as its worst
    step); the outcome term keeps a correct answer above any wrong one when weight < 1.
    """
    if aggregate not in ("min", "mean"):
        raise ValueError(f"aggregate must be 'min' or 'mean', got {aggregate!r}")
    if not step_scores:
        return float(outcome)
    scores = [float(s) for s in step_scores]
    agg = min(scores) if aggregate == "min" else sum(scores) / len(scores)
    return float(outcome) + weight * agg


def _per_token(advantages, like):
    advantages = torch.as_tensor(advantages, dtype=like.dtype, device=like.device)
    if advantages.ndim == 1 and advantages.shape[0] == like.shape[0]:
        advantages = advantages.unsqueeze(-1).expand_as(like)
    if advantages.shape != like.shape:
        raise ValueError(f"advantages of shape {tuple(advantages.shape)} do not match logp {tuple(like.shape)}")
    return advantages.detach()


def _check_shapes(logp, **others):
    for name, tensor in others.items():
        if tuple(tensor.shape) != tuple(logp.shape):
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logp has {tuple(logp.shape)}")
    if not torch.isfinite(logp).all():
        raise ValueError("logp contains non-finite values")
