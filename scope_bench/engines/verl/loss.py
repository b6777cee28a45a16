"""SCOPE's hybrid objective (eq. 6) inside verl, built on the core's per-token function.

Two pieces, because verl's worker-side `ppo_loss` hands a registered policy loss only a fixed set of
tensors (old/new log-probs, advantages, response mask), never an extra batch key:

- `scope_hybrid`, registered with `core_algos.register_policy_loss`: the per-token objective is
  `core.losses.hybrid_token_objective` (the very function under `core.losses.hybrid_loss`), negated
  and aggregated by verl's own `agg_loss`. Under `token-mean` the sum over micro-batches equals
  `hybrid_loss` on the whole mini-batch, so the two engines compute the same numbers by construction.
- `scope_actor_loss`, installed on the actor workers with `set_loss_fn` (as verl installs its critic
  loss): reads the per-token `offpolicy_mask` of the micro-batch, holds it in a context variable for
  the duration of verl's unchanged `ppo_loss` (entropy, KL and metrics stay verl's), where
  `scope_hybrid` picks it up. A batch without the key (GRPO) gets an all-zero mask, which makes
  eq. 6 exactly GRPO's clipped objective.

Importing this module registers the loss; worker processes import it when they unpickle
`scope_actor_loss`, and `VERL_USE_EXTERNAL_MODULES=scope_bench.engines.verl.loss` covers the rest.
"""

from __future__ import annotations

import contextvars

import torch

from scope_bench.core.config import LossConfig
from scope_bench.core.losses import hybrid_token_objective
from scope_bench.engines.verl.rewrite import MASK_KEY
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.workers.utils.losses import ppo_loss

LOSS_NAME = "scope_hybrid"

# (off-policy mask of the current micro-batch, LossConfig); set only inside `scope_actor_loss`
_CURRENT: contextvars.ContextVar = contextvars.ContextVar("scope_offpolicy", default=None)


@register_policy_loss(LOSS_NAME)
def scope_hybrid_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                             config=None, rollout_is_weights=None):
    """verl policy-loss signature; returns `(loss, metrics)` with `loss = agg(-eq.6 per token)`."""
    current = _CURRENT.get()
    if current is None:
        raise RuntimeError(f"policy_loss.loss_mode={LOSS_NAME} needs the off-policy mask: install "
                           "scope_bench.engines.verl.loss.scope_actor_loss with actor_rollout_wg.set_loss_fn "
                           "(ScopeRayPPOTrainer does)")
    if rollout_is_weights is not None:
        raise ValueError(f"{LOSS_NAME} does not support rollout correction weights: refiner tokens have "
                         "no rollout log-probs (leave algorithm.rollout_correction disabled)")
    offpolicy, loss_cfg = current
    offpolicy = offpolicy.to(device=log_prob.device, dtype=log_prob.dtype)
    objective = hybrid_token_objective(log_prob, old_log_prob, advantages, offpolicy, **loss_cfg.objective_kwargs())
    global_batch_info = getattr(config, "global_batch_info", None) or {}
    loss = agg_loss(loss_mat=-objective, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **global_batch_info)
    return loss, _metrics(log_prob, old_log_prob, advantages, offpolicy, response_mask, loss_cfg.clip_eps)


def _metrics(log_prob, old_log_prob, advantages, offpolicy, response_mask, clip_eps) -> dict:
    """verl's PPO diagnostics on the on-policy tokens, plus the off-policy token share."""
    with torch.no_grad():
        valid = response_mask.bool()
        onpolicy = valid & (offpolicy < 0.5)
        ratio = torch.exp(torch.clamp(log_prob - old_log_prob, -20.0, 20.0))
        clipped = ((ratio - 1).abs() > clip_eps) & onpolicy
        n_on = onpolicy.sum().clamp(min=1)
        return {
            "actor/pg_clipfrac": (clipped.sum() / n_on).item(),
            "actor/ppo_kl": ((old_log_prob - log_prob) * onpolicy).sum().div(n_on).item(),
            "actor/offpolicy_token_frac": ((offpolicy > 0.5) & valid).sum().div(valid.sum().clamp(min=1)).item(),
            # counts, so the step's exact share is mean(offpolicy) / mean(response) over micro-batches
            "actor/offpolicy_tokens": float(((offpolicy > 0.5) & valid).sum()),
            "actor/response_tokens": float(valid.sum()),
        }


def scope_actor_loss(config, model_output, data, dp_group=None, *, loss_config: LossConfig | None = None):
    """Worker loss function: verl's `ppo_loss` with this micro-batch's off-policy mask in scope.

    Install with `partial(scope_actor_loss, config=<ActorConfig>, loss_config=<LossConfig>)`.
    """
    loss_config = loss_config or LossConfig()
    if MASK_KEY in data.keys():  # noqa: SIM118 - TensorDict has no `in`
        mask = data.select(MASK_KEY).to_padded_tensor()[MASK_KEY]
    else:
        mask = torch.zeros_like(data.select("response_mask").to_padded_tensor()["response_mask"])
    token = _CURRENT.set((mask, loss_config))
    try:
        return ppo_loss(config, model_output, data, dp_group)
    finally:
        _CURRENT.reset(token)
