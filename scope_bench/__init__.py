"""scope-bench: SCOPE (Step-wise Correction for On-Policy Exploration), its baselines, evaluation
and reports.

The public API is imported lazily, so `import scope_bench` stays cheap and `scope-bench grade` never
loads torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it: the method's functions and the few entry points. Everything
# else stays importable from its module (`scope_bench.eval.load_task`, `scope_bench.grading.math_rewards`,
# `scope_bench.engines.prm.QwenMathPRM`, ...).
_EXPORTS = {
    # the method core, one function per equation (docs/method.md), and its settings
    **{name: "scope_bench.core" for name in (
        "split_steps", "step_token_spans", "verified_prefix_length", "selection_scores", "shaped_weight",
        "grpo_advantages", "hybrid_loss", "rectify_groups", "ScopeConfig",
    )},
    # the reward (eq. 7), also the grader of every accuracy in the tables
    "math_reward": "scope_bench.grading",
    "choice_reward": "scope_bench.grading",
    # entry points: train, evaluate, report
    "load_train_config": "scope_bench.engines.local",
    "train": "scope_bench.engines.local",
    "evaluate": "scope_bench.eval",
    "write_report": "scope_bench.reports.report",
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
