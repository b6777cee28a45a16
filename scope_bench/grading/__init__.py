"""Grading and rewards: final-answer extraction, math equivalence, multiple choice, batch rewards.

    math_reward(response, ground_truth) -> 1.0 | 0.0
    math_rewards(responses, ground_truths, *, timeout_s, workers) -> list[float]   (never hangs)
    choice_reward(response, gold_letter) -> 1.0 | 0.0
    compute_score(data_source, solution_str, ground_truth, extra_info=None)   (verl custom reward)
"""

from scope_bench.grading.batch import (
    STATS,
    Grade,
    grade_math_batch,
    math_reward,
    math_rewards,
    shutdown_pool,
)
from scope_bench.grading.choice import choice_reward, extract_choice
from scope_bench.grading.equivalence import answers_match, fast_match
from scope_bench.grading.extract import extract_answer
from scope_bench.grading.verl_reward import compute_score

__all__ = [
    "STATS",
    "Grade",
    "answers_match",
    "choice_reward",
    "compute_score",
    "extract_answer",
    "extract_choice",
    "fast_match",
    "grade_math_batch",
    "math_reward",
    "math_rewards",
    "shutdown_pool",
]
