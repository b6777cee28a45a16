"""The SCOPE method, engine-free: steps, verified prefix, selection, rectification, losses."""

from .advantages import grpo_advantages
from .config import LossConfig, PRMRewardConfig, ScopeConfig
from .interfaces import ProcessRewardModel, Refiner, RefineRequest, RefineResult
from .losses import hybrid_loss, hybrid_token_objective, prm_shaped_reward, sft_loss, shaped_weight
from .prefix import error_prefix_length, verified_prefix_length
from .rectify import GroupOutcome, GroupRecord, Rectification, Rollout, rectify_group, rectify_groups
from .selection import selection_scores
from .steps import (
    decode_with_offsets,
    encode_with_offsets,
    prefix_token_count,
    split_steps,
    step_char_spans,
    step_token_spans,
)

__all__ = [
    "GroupOutcome",
    "GroupRecord",
    "LossConfig",
    "PRMRewardConfig",
    "ProcessRewardModel",
    "Rectification",
    "RefineRequest",
    "RefineResult",
    "Refiner",
    "Rollout",
    "ScopeConfig",
    "decode_with_offsets",
    "encode_with_offsets",
    "error_prefix_length",
    "grpo_advantages",
    "hybrid_loss",
    "hybrid_token_objective",
    "prefix_token_count",
    "prm_shaped_reward",
    "rectify_group",
    "rectify_groups",
    "selection_scores",
    "sft_loss",
    "shaped_weight",
    "split_steps",
    "step_char_spans",
    "step_token_spans",
    "verified_prefix_length",
]
