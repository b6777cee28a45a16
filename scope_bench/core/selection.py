"""Distribution-aware selection of the rollout to rectify (eqs. 2-4).

Prefer failures with a long verified prefix (relative to steps and to tokens) whose length is typical
of the batch: rectifying a length outlier teaches little and costs a long refiner call.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Stats = tuple[float, float]  # (mean, variance)


def population_stats(values: Sequence[float]) -> Stats:
    """Mean and population variance (ddof=0)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("cannot take statistics of no values")
    return float(arr.mean()), float(arr.var())


def gaussian_length_weight(lengths: Sequence[float], stats: Stats) -> np.ndarray:
    """Eq. 3: `w = exp(-(L - mu)^2 / (2 sigma^2))`; a zero variance gives weight 1."""
    mean, var = stats
    lengths = np.asarray(lengths, dtype=np.float64)
    if var < 0 or not np.isfinite(var) or not np.isfinite(mean):
        raise ValueError(f"invalid length statistics (mean={mean}, variance={var})")
    if var == 0:
        return np.ones_like(lengths)
    return np.exp(-((lengths - mean) ** 2) / (2.0 * var))


def prefix_ratio(prefix: Sequence[float], total: Sequence[float]) -> np.ndarray:
    """Eq. 2: verified share `prefix / total`, 0 for an empty rollout."""
    prefix = np.asarray(prefix, dtype=np.float64)
    total = np.asarray(total, dtype=np.float64)
    if np.any(prefix < 0) or np.any(prefix > total):
        raise ValueError("each prefix length must lie in [0, total]")
    return np.divide(prefix, total, out=np.zeros_like(prefix), where=total > 0)


def selection_scores(
    prefix_steps: Sequence[int],
    total_steps: Sequence[int],
    prefix_tokens: Sequence[int],
    total_tokens: Sequence[int],
    *,
    step_stats: Stats | None = None,
    token_stats: Stats | None = None,
) -> np.ndarray:
    """Eq. 4: `S = w_step * w_tok * (rho_step + rho_tok)`, one score per candidate.

    `step_stats`/`token_stats` are `(mean, variance)` of step and token counts over the reference
    population (the batch or the group); by default the population statistics of the given totals.
    """
    n = len(prefix_steps)
    if not (len(total_steps) == len(prefix_tokens) == len(total_tokens) == n):
        raise ValueError(
            "selection_scores needs equal lengths, got "
            f"{n}, {len(total_steps)}, {len(prefix_tokens)}, {len(total_tokens)}"
        )
    if n == 0:
        return np.zeros(0)
    step_stats = step_stats if step_stats is not None else population_stats(total_steps)
    token_stats = token_stats if token_stats is not None else population_stats(total_tokens)
    rho = prefix_ratio(prefix_steps, total_steps) + prefix_ratio(prefix_tokens, total_tokens)
    return gaussian_length_weight(total_steps, step_stats) * gaussian_length_weight(total_tokens, token_stats) * rho
