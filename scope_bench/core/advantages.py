"""Group-normalised advantages (GRPO), computed after rectification so that the rectified
rollout (reward 1) lifts the group's baseline like any success would."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def grpo_advantages(rewards, group_ids: Sequence, eps: float = 1e-6, norm_by_std: bool = True):
    """`A_i = (R_i - mean_g) / (std_g + eps)` with the unbiased std of the rollout's group.

    Same numbers as verl's `compute_grpo_outcome_advantage` for outcome rewards (float32, a group of
    one gets mean 0 and std 1). Returns a tensor for a tensor input, else a numpy array.
    """
    as_tensor = isinstance(rewards, torch.Tensor)
    scores = torch.as_tensor(np.asarray(rewards.detach().cpu() if as_tensor else rewards), dtype=torch.float32)
    if scores.ndim != 1:
        raise ValueError(f"rewards must be one score per rollout, got shape {tuple(scores.shape)}")
    if len(group_ids) != len(scores):
        raise ValueError(f"{len(scores)} rewards but {len(group_ids)} group ids")
    if not torch.isfinite(scores).all():
        raise ValueError("rewards must be finite")
    members: dict = {}
    for i, gid in enumerate(group_ids):
        members.setdefault(gid, []).append(i)
    out = torch.empty_like(scores)
    for idx in members.values():
        group = scores[idx]
        mean, std = (torch.tensor(0.0), torch.tensor(1.0)) if len(idx) == 1 else (group.mean(), group.std())
        out[idx] = (group - mean) / (std + eps) if norm_by_std else group - mean
    return out if as_tensor else out.numpy()


def process_advantages(rewards, step_rewards: dict, group_ids: Sequence, lengths: Sequence[int],
                       eps: float = 1e-6) -> list[list[float]]:
    """Per-token advantages for dense step rewards (DeepSeekMath's process supervision, on top of the
    outcome): token t of rollout i gets the outcome's GRPO advantage plus the sum of its group's
    normalised step rewards `(r_j - mean_g) / (std_g + eps)` over the steps j that end at or after t.

    `step_rewards[i]` lists (token end, reward) per step of rollout i (rollouts without steps get only
    the outcome term); `lengths[i]` is rollout i's token count as trained. Why: a scalar PRM reward
    says nothing about where a solution went wrong; the per-step form credits each step's tokens."""
    outcome = grpo_advantages(np.asarray(rewards, dtype=np.float64), group_ids, eps=eps)
    members: dict = {}
    for i, gid in enumerate(group_ids):
        members.setdefault(gid, []).append(i)
    out = [[float(outcome[i])] * lengths[i] for i in range(len(lengths))]
    for idx in members.values():
        pooled = np.array([r for i in idx for _, r in step_rewards.get(i, [])], dtype=np.float64)
        if pooled.size == 0:
            continue
        mean, std = pooled.mean(), (pooled.std(ddof=1) if pooled.size > 1 else 1.0)
        for i in idx:
            for end, r in step_rewards.get(i, []):
                bonus = (r - mean) / (std + eps)
                for t in range(min(end, lengths[i])):
                    out[i][t] += bonus
    return out
