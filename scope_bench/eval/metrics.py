"""Metrics of Table 1: accuracy, Avg@k and the unbiased pass@k estimator (Chen et al., 2021)."""

from __future__ import annotations

from math import comb
from statistics import fmean


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n, c of them correct,
    is correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def task_metrics(correct: list[list[int]], metric: str) -> dict:
    """Scores (percent) of one task from per-problem lists of 0/1 grades, all of the same length n.

    `avg@K` scores the mean accuracy over all samples; `pass@K` the unbiased pass@K. Both report
    pass@k for every k up to n."""
    if not correct:
        raise ValueError("no graded problems")
    n = len(correct[0])
    if any(len(c) != n for c in correct):
        raise ValueError("every problem needs the same number of samples")
    accuracy = 100.0 * fmean(fmean(c) for c in correct)
    passes = {str(k): 100.0 * fmean(pass_at_k(n, sum(c), k) for c in correct) for k in range(1, n + 1)}
    kind, _, k = metric.partition("@")
    if kind == "avg":
        label, score = f"avg@{n}", accuracy
    else:
        k = min(int(k), n)
        label, score = f"pass@{k}", passes[str(k)]
    return {"metric": label, "score": score, "accuracy": accuracy, "n_problems": len(correct),
            "samples_per_problem": n, "pass@k": passes}


def group_scores(task_scores: dict[str, float], groups: dict[str, list[str]]) -> dict[str, dict]:
    """Unweighted mean of task scores per group, as Table 1 averages; groups with no task run are left
    out, and members that did not run are listed as missing."""
    out = {}
    for name, members in groups.items():
        ran = [t for t in members if t in task_scores]
        if ran:
            out[name] = {"score": fmean(task_scores[t] for t in ran), "tasks": ran,
                         "missing": [t for t in members if t not in task_scores]}
    return out
