"""verl custom reward function: `custom_reward_function.path=<this file>`, `name=compute_score`.

verl calls `compute_score(data_source=, solution_str=, ground_truth=, extra_info=)` once per
rollout, from a thread pool in verl 0.9's reward loop; multiple-choice sources (ARC-c, GPQA,
MMLU-Pro) get `choice_reward`, every other source `math_reward`, which is time-bounded on any
thread (see `batch`). `custom_reward_function.reward_kwargs.timeout_s` sets the math time limit, and
`reward_kwargs.grading` a grading policy (docs/grading.md; default: eval's, so rewards and accuracies
follow the same rules).
"""

from __future__ import annotations

from scope_bench.grading.batch import DEFAULT_TIMEOUT_S, math_reward
from scope_bench.grading.choice import choice_reward
from scope_bench.grading.policy import GradingPolicy

# data_source names (LUFFY's parquet, the eval task names, Hugging Face ids) graded as a letter
CHOICE_SOURCES = ("arc", "gpqa", "mmlu")


def is_choice_source(data_source: str) -> bool:
    name = str(data_source).lower()
    return any(key in name for key in CHOICE_SOURCES)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, *, timeout_s=None,
                  grading: dict | None = None, **kwargs) -> float:
    """1.0/0.0 for one rollout; extra keyword arguments verl passes (reward router...) are ignored."""
    if is_choice_source(data_source):
        return choice_reward(solution_str, ground_truth)
    timeout_s = timeout_s or DEFAULT_TIMEOUT_S
    if grading:  # else the default policy, eval's
        return math_reward(solution_str, ground_truth, timeout_s=timeout_s, policy=GradingPolicy.from_dict(grading))
    return math_reward(solution_str, ground_truth, timeout_s=timeout_s)
