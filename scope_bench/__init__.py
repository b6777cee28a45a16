"""scope-bench: SCOPE (Step-wise Correction for On-Policy Exploration), its baselines, evaluation
and reports.

The public API is imported lazily, so `import scope_bench` stays cheap and `scope-bench grade` never
loads torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # method core (eqs. 1-6)
    **{name: "scope_bench.core" for name in (
        "split_steps", "step_char_spans", "step_token_spans", "prefix_token_count", "token_offsets",
        "verified_prefix_length", "error_prefix_length", "selection_scores", "shaped_weight",
        "grpo_advantages", "hybrid_loss", "hybrid_token_objective", "sft_loss", "prm_shaped_reward",
        "rectify_groups", "rectify_group", "Rollout", "Rectification", "GroupRecord", "GroupOutcome",
        "ScopeConfig", "LossConfig", "ProcessRewardModel", "Refiner", "RefineRequest", "RefineResult",
    )},
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'scope_bench' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
