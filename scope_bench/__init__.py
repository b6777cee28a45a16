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
        "split_steps", "step_char_spans", "step_token_spans", "prefix_token_count", "encode_with_offsets",
        "decode_with_offsets",
        "verified_prefix_length", "error_prefix_length", "selection_scores", "shaped_weight",
        "grpo_advantages", "hybrid_loss", "hybrid_token_objective", "sft_loss", "prm_shaped_reward",
        "rectify_groups", "rectify_group", "Rollout", "Rectification", "GroupRecord", "GroupOutcome",
        "ScopeConfig", "LossConfig", "PRMRewardConfig", "ProcessRewardModel", "Refiner", "RefineRequest", "RefineResult",
    )},
    # grading and rewards (eq. 7)
    **{name: "scope_bench.grading" for name in (
        "math_reward", "math_rewards", "choice_reward", "compute_score", "extract_answer", "extract_choice",
        "grade_math_batch",
    )},
    # evaluation
    **{name: "scope_bench.eval" for name in (
        "evaluate", "load_task", "available_tasks", "resolve_task_names", "load_problems", "pass_at_k",
        "task_metrics", "export_lm_eval", "ResultStore", "make_backend", "HFBackend", "VLLMBackend",
        "OpenAIBackend",
    )},
    # analysis and reports
    "diversity_metrics": "scope_bench.analysis.diversity",
    "near_miss_at_k": "scope_bench.analysis.nearmiss",
    "near_miss_from_prm": "scope_bench.analysis.nearmiss",
    "write_report": "scope_bench.reports.report",
    # engines: PRM and refiner clients, the local trainer
    "OpenAIRefiner": "scope_bench.engines.refiner",
    "QwenMathPRM": "scope_bench.engines.prm",
    "VLLMPoolingPRM": "scope_bench.engines.prm",
    "load_train_config": "scope_bench.engines.local",
    "train": "scope_bench.engines.local",
    "run_demo": "scope_bench.demo",
    "Budget": "scope_bench.demo",
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


__all__ = sorted(_EXPORTS)  # noqa: PLE0605 (built from the lazy export table)
