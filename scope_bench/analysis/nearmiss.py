"""Near-miss@k (paper appendix A.3): how many failures were almost right.

Among the zero-reward samples, near-miss@k is the fraction with ``K - k_correct <= k``: ``K`` steps in
the response, the first ``k_correct`` of them verified by the PRM (eq. 1's verified prefix). It is
conditioned on failure, so a method cannot lower it just by solving more problems.

Choices the paper leaves open: a response with no step at all (``K = 0``) is a failure but never a
near miss (there is no chain of reasoning to be close with); ``k_correct`` is the plain verified
prefix (``verified_prefix_length``), so a failure whose every step the PRM accepts has ``K - k = 0``
and counts for every k. With no zero-reward sample the value is NaN (undefined), not 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scope_bench.core.config import ScopeConfig

DEFAULT_KS = (1, 2, 3)


def near_miss_at_k(
    prefix_lengths: Sequence[int],
    step_counts: Sequence[int],
    rewards: Sequence[float],
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[int, float]:
    """``{k: fraction of zero-reward samples with K - k_correct <= k}`` (NaN if none failed)."""
    if not len(prefix_lengths) == len(step_counts) == len(rewards):
        raise ValueError(
            f"near_miss_at_k: prefix_lengths ({len(prefix_lengths)}), step_counts ({len(step_counts)}) "
            f"and rewards ({len(rewards)}) must have the same length"
        )
    gaps = []
    for i, (k_correct, n_steps, reward) in enumerate(zip(prefix_lengths, step_counts, rewards)):
        if not 0 <= k_correct <= n_steps:
            raise ValueError(f"sample {i}: verified prefix {k_correct} is not within 0..{n_steps} steps")
        if reward == 0:
            gaps.append(n_steps - k_correct if n_steps > 0 else math.inf)
    if not gaps:
        return {k: math.nan for k in ks}
    return {k: sum(g <= k for g in gaps) / len(gaps) for k in ks}


def near_miss_from_prm(
    prm,
    questions: Sequence[str],
    responses: Sequence[str],
    rewards: Sequence[float],
    ks: Sequence[int] = DEFAULT_KS,
    tau: float = ScopeConfig.tau,
) -> dict[int, float]:
    """Near-miss@k of an evaluation or training batch, scoring the failed responses with any
    ``ProcessRewardModel``. Only zero-reward responses with at least one step go to the PRM."""
    from scope_bench.core.prefix import verified_prefix_length
    from scope_bench.core.steps import split_steps

    if not len(questions) == len(responses) == len(rewards):
        raise ValueError(
            f"near_miss_from_prm: questions ({len(questions)}), responses ({len(responses)}) and "
            f"rewards ({len(rewards)}) must have the same length"
        )
    steps = [split_steps(r) for r in responses]
    todo = [i for i, (s, r) in enumerate(zip(steps, rewards)) if r == 0 and s]
    scores = prm.score([questions[i] for i in todo], [steps[i] for i in todo]) if todo else []
    prefix = [0] * len(responses)
    for i, step_scores in zip(todo, scores):
        if len(step_scores) != len(steps[i]):
            raise ValueError(f"PRM returned {len(step_scores)} scores for response {i} with {len(steps[i])} steps")
        prefix[i] = verified_prefix_length(step_scores, tau)
    return near_miss_at_k(prefix, [len(s) for s in steps], rewards, ks)


def near_miss_of_rollouts(rollouts, prm, tau: float = ScopeConfig.tau, scores: dict | None = None,
                          ks: Sequence[int] = DEFAULT_KS) -> dict[str, float | None]:
    """Training-batch form: ``{"near_miss@k": value}`` over the failed ``core.Rollout``s of a batch
    (None when nothing failed, so the metric stays valid JSON). ``scores`` maps a rollout's index in
    ``rollouts`` to PRM step scores already computed (by the SCOPE stage); only the rest are scored."""
    from scope_bench.core.steps import split_steps

    scores = dict(scores or {})
    steps = [split_steps(r.text) if r.failed else [] for r in rollouts]
    todo = [i for i, r in enumerate(rollouts) if r.failed and steps[i] and i not in scores]
    if todo:
        scores.update(zip(todo, prm.score([rollouts[i].question for i in todo], [steps[i] for i in todo])))
    prefix = []
    for i, s in enumerate(steps):
        if s and len(scores.get(i, ())) != len(s):
            raise ValueError(f"PRM returned {len(scores.get(i, ()))} scores for rollout {i} with {len(s)} steps")
        prefix.append(_verified(scores[i], tau) if s else 0)
    values = near_miss_at_k(prefix, [len(s) for s in steps], [0.0 if r.failed else 1.0 for r in rollouts], ks)
    return {f"near_miss@{k}": None if math.isnan(v) else v for k, v in values.items()}


def _verified(step_scores, tau: float) -> int:
    from scope_bench.core.prefix import verified_prefix_length

    return verified_prefix_length(step_scores, tau)
