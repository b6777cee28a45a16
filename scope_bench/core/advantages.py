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
