"""The verified prefix of a rollout (eq. 1): how far the PRM trusts it."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .config import ScopeConfig, check_tau


def check_scores(step_scores: Sequence[float]) -> list[float]:
    """Step probabilities as floats; a non-finite or out-of-range score is a PRM bug, not a value."""
    scores = [float(s) for s in step_scores]
    for j, s in enumerate(scores):
        if not math.isfinite(s) or not 0.0 <= s <= 1.0:
            raise ValueError(f"step score {j} is {s!r}; PRM step scores must be finite probabilities in [0, 1]")
    return scores


def verified_prefix_length(step_scores: Sequence[float], tau: float = ScopeConfig.tau) -> int:
    """Eq. 1: `k` = number of leading steps with score >= tau; step k+1 is the first error."""
    check_tau(tau)
    k = 0
    for score in check_scores(step_scores):
        if score < tau:
            break
        k += 1
    return k


def error_prefix_length(step_scores: Sequence[float], tau: float = ScopeConfig.tau) -> int:
    """Verified prefix of a *failed* rollout: if the PRM passes every step, the last step is wrong
    (the answer is), so at most `K - 1` steps are kept."""
    k = verified_prefix_length(step_scores, tau)
    return min(k, max(len(step_scores) - 1, 0))
