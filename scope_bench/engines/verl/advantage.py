"""The dense PRM reward's advantages inside verl, registered with verl's own `register_adv_est`.

`prm-step-reward` gives `weight * p_j` at the last token of each step j on top of the outcome; a
token's advantage is the outcome's GRPO advantage plus its group's normalised step rewards from its
step on. The numbers come from `core.advantages.process_advantages`, the function the local trainer
calls, so the two engines compute the same advantages by construction.

How the step rewards reach the estimator: the stage (`engines/verl/stage.py`, on the driver) writes
them into the batch as a non-tensor column, `step_rewards`: per row a list of `(token end, reward)`,
the core function's own form. Why a column of lists and not a token tensor: a step whose reward is 0
is still a step (it moves its group's mean), which a zero-filled token tensor cannot say; and verl's
`DataProto` reorders, chunks and concatenates such columns with their rows, as it does `uid`.
verl's `compute_advantage` hands a registered estimator a fixed set of fields (token rewards,
response mask, `uid`, config), never another batch key, so `carry_step_rewards` also records which
batch it wrote (a weak reference; the stage runs before old log-probs, the advantages follow in the
same `fit` step on the driver) and the estimator reads the column from that batch, after checking
that the rewards it was given are that batch's own.

The estimator is registered in every process that imports this module. The one that needs it is the
driver, verl's task runner, where `compute_advantage` runs: it imports `engines/verl/trainer.py` (whose
`ScopeTaskRunner` it is, and which imports this module) before `fit` runs.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from scope_bench.core.advantages import process_advantages
from verl.trainer.ppo.core_algos import register_adv_est

ESTIMATOR = "scope_dense_prm"  # algorithm.adv_estimator of prm-step-reward (config/advantage/dense.yaml)
STEP_REWARDS = "step_rewards"  # non-tensor column: per row, [(token end, reward), ...] of its steps

# weak reference to the batch `carry_step_rewards` wrote last (driver side)
_CARRIED: contextvars.ContextVar = contextvars.ContextVar("scope_dense_batch", default=None)


def carry_step_rewards(batch, per_row: Mapping[int, Sequence[tuple[int, float]]]) -> None:
    """Write `per_row` (batch row -> its steps' `(token end, reward)`) into `batch` as the
    `step_rewards` column (rows without steps get `[]`), for the estimator of this step."""
    column = np.empty(len(batch), dtype=object)
    for i in range(len(batch)):
        column[i] = [(int(end), float(reward)) for end, reward in per_row.get(i, ())]
    batch.non_tensor_batch[STEP_REWARDS] = column
    _CARRIED.set(weakref.ref(batch))


def dense_advantages(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index, step_rewards,
                     eps: float = 1e-6) -> torch.Tensor:
    """`(B, R)` advantages of `core.advantages.process_advantages`: the outcome is the row's summed
    token rewards (verl's GRPO score), the group is its `uid`, the length its valid response tokens."""
    outcome = token_level_rewards.sum(dim=-1).tolist()
    lengths = [int(n) for n in response_mask.sum(dim=-1).tolist()]
    steps = {i: list(rows) for i, rows in enumerate(step_rewards) if len(rows)}
    per_token = process_advantages(outcome, steps, list(index), lengths, eps=eps)
    out = torch.zeros_like(token_level_rewards, dtype=torch.float32)
    for i, values in enumerate(per_token):
        out[i, : len(values)] = torch.tensor(values, dtype=torch.float32)
    return out * response_mask


@register_adv_est(ESTIMATOR)
def dense_prm_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None, config=None,
                        **unused) -> tuple[torch.Tensor, torch.Tensor]:
    """verl estimator signature; returns `(advantages, returns)`, both the advantages (as GRPO's)."""
    if index is None:
        raise ValueError(f"{ESTIMATOR} needs the batch's uid (the group of each rollout)")
    if config is not None and not config.get("norm_adv_by_std_in_grpo", True):
        raise ValueError(f"{ESTIMATOR} normalises by the group's std (as the local trainer): "
                         "leave algorithm.norm_adv_by_std_in_grpo=true")
    ref = _CARRIED.get()
    batch = ref() if ref is not None else None
    if batch is None or STEP_REWARDS not in batch.non_tensor_batch:
        raise RuntimeError(f"algorithm.adv_estimator={ESTIMATOR} needs the per-step rewards the stage carries in "
                           "the batch (a prm_reward stage with prm_reward.form=step, MethodStage); none were carried")
    own = batch.batch["token_level_rewards"] if "token_level_rewards" in batch.batch.keys() else None  # noqa: SIM118
    if own is None or own.data_ptr() != token_level_rewards.data_ptr() or len(batch) != len(token_level_rewards):
        raise RuntimeError(f"{ESTIMATOR}: the rewards given are not those of the batch the stage carried step "
                           "rewards in (a copied or reordered batch would mislay them)")
    advantages = dense_advantages(token_level_rewards, response_mask, index, batch.non_tensor_batch[STEP_REWARDS])
    return advantages, advantages
