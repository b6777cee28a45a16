"""Verdicts on the paper's claims, computed from measured runs: paired comparisons over seeds.

Runs of two methods with the same seed share the warm start, the training prompts' order and the
evaluation set, so the per-seed difference removes much of what the seeds share; the test is a
one-sided paired t-test of that difference in the direction the paper claims, and its mirror:

- "holds": the claimed direction is significant (p < alpha);
- "does not hold": the opposite direction is significant (the claim is reversed here);
- "within noise": neither (too few seeds, or differences of both signs).

A claim is judged by its primary comparison; the others are shown beside it, never mixed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

HOLDS, FAILS, NOISE, UNMEASURED = "holds", "does not hold", "within noise", "not measured"
ALPHA = 0.05


@dataclass(frozen=True)
class Comparison:
    """`better` should beat `worse` on `metric` (lower values win when `lower_is_better`)."""

    better: str
    worse: str
    metric: str
    lower_is_better: bool = False


@dataclass(frozen=True)
class Claim:
    name: str
    text: str
    primary: Comparison
    others: tuple[Comparison, ...] = ()


@dataclass
class PairedResult:
    comparison: Comparison
    diffs: list[float]  # per common seed, oriented so that positive supports the claim
    mean: float
    sd: float
    p_claimed: float  # one-sided p-value of the claimed direction
    p_reversed: float
    outcome: str

    def describe(self, names: dict[str, str] | None = None) -> str:
        """One sentence with the numbers; `names` maps method keys to the names shown."""
        c = self.comparison
        names = names or {}
        c = Comparison(names.get(c.better, c.better), names.get(c.worse, c.worse), c.metric, c.lower_is_better)
        if self.outcome == UNMEASURED:
            return f"{c.better} vs {c.worse} on {c.metric}: not measured"
        if len(self.diffs) < 2:
            return (f"{c.better} vs {c.worse} on {c.metric}: difference {self.diffs[0]:+.2f} on one seed, too few "
                    f"seeds for a test: {self.outcome}")
        sign = "lower" if c.lower_is_better else "higher"
        return (f"{c.better} vs {c.worse} on {c.metric} ({sign} is better): difference {self.mean:+.2f} ± "
                f"{self.sd:.2f} over {len(self.diffs)} seeds ({', '.join(f'{d:+.2f}' for d in self.diffs)}), "
                f"one-sided paired t-test p = {self.p_claimed:.3f}: {self.outcome}")


@dataclass
class Verdict:
    claim: Claim
    primary: PairedResult
    others: list[PairedResult] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.primary.outcome


def paired_test(a: dict, b: dict, comparison: Comparison, alpha: float = ALPHA) -> PairedResult:
    """Paired one-sided t-tests of `a[seed] - b[seed]` over the seeds both measured (values by seed)."""
    seeds = sorted(set(a) & set(b), key=str)
    sign = -1.0 if comparison.lower_is_better else 1.0
    diffs = [sign * (float(a[s]) - float(b[s])) for s in seeds]
    if len(diffs) < 2:
        return PairedResult(comparison, diffs, math.nan, math.nan, math.nan, math.nan, UNMEASURED if not diffs else NOISE)
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        p_claimed = 0.0 if mean > 0 else 1.0 if mean < 0 else 0.5
    else:
        p_claimed = 1.0 - student_t_cdf(mean / (sd / math.sqrt(n)), n - 1)
    p_reversed = 1.0 - p_claimed if sd else (0.0 if mean < 0 else 1.0 if mean > 0 else 0.5)
    outcome = HOLDS if p_claimed < alpha else FAILS if p_reversed < alpha else NOISE
    return PairedResult(comparison, diffs, mean, sd, p_claimed, p_reversed, outcome)


def judge(claims, values: dict, alpha: float = ALPHA) -> list[Verdict]:
    """`values[method][metric][seed]` -> one verdict per claim (a method or metric not run: not measured)."""
    def one(c: Comparison) -> PairedResult:
        a = values.get(c.better, {}).get(c.metric, {})
        b = values.get(c.worse, {}).get(c.metric, {})
        return paired_test(a, b, c, alpha)

    return [Verdict(claim, one(claim.primary), [one(c) for c in claim.others]) for claim in claims]


def student_t_cdf(t: float, df: int) -> float:
    """CDF of Student's t with `df` degrees of freedom (the project does not depend on scipy).

    With x = sqrt(df) tan(theta) the density becomes c sqrt(df) cos(theta)^(df-1) on a bounded
    interval, smooth enough for Simpson's rule to reach ~1e-10 with a few hundred panels."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) * math.sqrt(df)
    end = math.atan(abs(t) / math.sqrt(df))
    n = 512
    h = end / n
    weights = (1 if i in (0, n) else 4 if i % 2 else 2 for i in range(n + 1))
    half = c * h / 3 * sum(w * math.cos(i * h) ** (df - 1) for i, w in enumerate(weights))
    return 0.5 + half if t >= 0 else 0.5 - half
