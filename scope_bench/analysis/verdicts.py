"""Verdicts on the paper's claims, computed from measured runs, with power over seeds and problems.

Each comparison is paired: the two methods' results for the same training seed (same warm start,
prompt order, evaluation set) and the same evaluation problem are subtracted, giving a matrix of
differences `d[seed, problem]`, oriented so that positive supports the claim. The estimate is its
mean. Its standard error comes from a hierarchical bootstrap over seeds and problems
(`hierarchical_bootstrap`: the two levels are crossed, every seed is evaluated on the same problems,
so seed effects, problem effects and residuals are each resampled at their estimated size). From it:

- the 95% interval, estimate ± t x SE, Student's t with Satterthwaite's degrees of freedom
  (`effective_df`: about S - 1 when the seeds dominate the noise, many when the problems do);
- the minimum detectable effect (`minimum_detectable_effect`): the smallest true difference that
  this budget would call "holds" with 80% power, (t_0.975 + t_0.80) x SE (2.80 x SE for many df);
- the outcome: "holds" when the interval lies above 0, "does not hold" when it lies below 0 (the
  claim is reversed here), "within noise" otherwise, or with fewer than two seeds (then seed-to-seed
  variation is unmeasured and a run could be a lucky seed).

A starting checkpoint evaluated once (seed `None`) is shared by every seed: its per-problem results
are paired with each seed of the other side, so the seed level only varies on that side.

Metrics measured once per run (training metrics) have no problem level: for them the interval is a
paired t-interval over seeds. docs/verdicts.md has the derivations and the measured coverage.
A claim is judged by its primary comparison; the others are shown beside it, never mixed in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

HOLDS, FAILS, NOISE, UNMEASURED = "holds", "does not hold", "within noise", "not measured"
LEVEL = 0.95  # two-sided interval; each direction is tested at (1 - LEVEL) / 2
POWER = 0.80
N_BOOT = 4000
RNG_SEED = 0
SHARED = None  # the seed key of a checkpoint shared by every seed (the warm start)


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
    per_seed: list[float]  # mean difference per seed, oriented so that positive supports the claim
    estimate: float = math.nan
    low: float = math.nan  # the 95% interval
    high: float = math.nan
    se: float = math.nan
    mde: float = math.nan  # minimum detectable effect at 80% power
    n_problems: int = 0  # 0: a metric measured once per run (t-interval over seeds)
    outcome: str = UNMEASURED
    df: float = math.nan  # degrees of freedom of the t quantiles

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    def describe(self, names: dict[str, str] | None = None) -> str:
        """One sentence with the numbers; `names` maps method keys to the names shown."""
        names = names or {}
        c = self.comparison
        head = f"{names.get(c.better, c.better)} vs {names.get(c.worse, c.worse)} on {c.metric}"
        if self.outcome == UNMEASURED and math.isnan(self.estimate):
            return f"{head}: not measured"
        sign = "lower" if c.lower_is_better else "higher"
        unit = f"{self.n_seeds} seed{'s' if self.n_seeds != 1 else ''}"
        unit += f" x {self.n_problems} problems, hierarchical bootstrap" if self.n_problems else ", paired t over seeds"
        if math.isnan(self.low):
            return f"{head} ({sign} is better): difference {self.estimate:+.2f} ({unit}): no interval, {self.outcome}"
        text = (f"{head} ({sign} is better): difference {self.estimate:+.2f}, 95% CI [{self.low:+.2f}, "
                f"{self.high:+.2f}], detectable ≥ {self.mde:.2f} ({unit}")
        text += f"; per seed {', '.join(f'{d:+.2f}' for d in self.per_seed)})" if self.n_seeds > 1 else ")"
        if self.n_seeds < 2:
            text += "; one seed: seed-to-seed variation unmeasured, so no verdict beyond noise"
        return f"{text}: {self.outcome}"


@dataclass
class Verdict:
    claim: Claim
    primary: PairedResult
    others: list[PairedResult] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.primary.outcome


# ------------------------------------------------------------------------------------- the data


def seed_mean(value) -> float:
    """One seed's score: the mean over problems of per-problem scores, or a per-run number as is."""
    if isinstance(value, Mapping):
        return float(np.mean(list(value.values()))) if value else math.nan
    return float(value)


def paired_matrix(a: Mapping, b: Mapping, lower_is_better: bool = False) -> tuple[list, list, np.ndarray]:
    """`a[seed]`, `b[seed]` (per-problem mappings, or numbers per run) -> (seeds, problems, d[seed, problem]).

    Seeds: those both sides measured; a side measured only at seed `SHARED` (None) pairs with every
    seed of the other. Problems: those every paired entry has; numbers per run give one column and
    problems == []. Positive entries of `d` support `a` beating `b`."""
    a_seeds, b_seeds = set(a) - {SHARED}, set(b) - {SHARED}
    if SHARED in a and SHARED in b and not (a_seeds & b_seeds):
        seeds = [SHARED]
    elif SHARED in a and not a_seeds:
        seeds = sorted(b_seeds, key=str)
    elif SHARED in b and not b_seeds:
        seeds = sorted(a_seeds, key=str)
    else:
        seeds = sorted(a_seeds & b_seeds, key=str)
    if not seeds:
        return [], [], np.zeros((0, 0))
    left = [a[s] if s in a else a[SHARED] for s in seeds]
    right = [b[s] if s in b else b[SHARED] for s in seeds]
    entries = left + right
    kinds = {isinstance(e, Mapping) for e in entries}
    if len(kinds) > 1:
        raise ValueError("cannot pair per-problem scores with one number per run")
    sign = -1.0 if lower_is_better else 1.0
    if kinds == {False}:
        return seeds, [], sign * (np.array(left, float) - np.array(right, float))[:, None]
    problems = sorted(set.intersection(*(set(e) for e in entries)), key=str)
    if not problems:
        return seeds, [], np.zeros((len(seeds), 0))
    d = np.array([[float(x[p]) - float(y[p]) for p in problems] for x, y in zip(left, right)])
    return seeds, problems, sign * d


# ------------------------------------------------------------------------------------ the tests


def mean_squares(d: np.ndarray) -> list[tuple[float, int]]:
    """Two-way ANOVA of d[s, p] = mean + a_s + b_p + e_sp: (mean square, degrees of freedom) of the
    seeds, the problems and the residual (a single seed: the problems only)."""
    n_seeds, n_problems = d.shape
    m, rows, cols = d.mean(), d.mean(axis=1), d.mean(axis=0)
    problems = (n_seeds * float(((cols - m) ** 2).sum()) / max(n_problems - 1, 1), n_problems - 1)
    if n_seeds == 1:
        return [(0.0, 0), problems, (0.0, 0)]
    resid = d - rows[:, None] - cols[None, :] + m
    df_res = (n_seeds - 1) * (n_problems - 1)
    return [(n_problems * float(((rows - m) ** 2).sum()) / (n_seeds - 1), n_seeds - 1), problems,
            (float((resid ** 2).sum()) / df_res if df_res else 0.0, df_res)]


def variance_components(d: np.ndarray) -> tuple[float, float, float]:
    """Seed, problem and residual variances of d[s, p] = mean + a_s + b_p + e_sp by the method of
    moments (E[MS_seeds] = P var_a + var_e, E[MS_problems] = S var_b + var_e, E[MS_res] = var_e); a
    negative estimate is set to 0."""
    n_seeds, n_problems = d.shape
    (ms_a, _), (ms_b, _), (ms_e, _) = mean_squares(d)
    if n_seeds == 1:
        return 0.0, ms_b, 0.0
    return max(0.0, (ms_a - ms_e) / n_problems), max(0.0, (ms_b - ms_e) / n_seeds), ms_e


def effective_df(d: np.ndarray) -> float:
    """Satterthwaite's degrees of freedom of the variance of the mean, S*P*V = sum of c_i MS_i (MS_seeds
    and MS_problems where their component is positive, MS_res with what is left): few when the seed
    level dominates (S - 1 at most from it), many when the problems do."""
    n_seeds = d.shape[0]
    (ms_a, df_a), (ms_b, df_b), (ms_e, df_e) = mean_squares(d)
    if n_seeds == 1:
        return float(max(df_b, 1))
    var_a, var_b, _ = variance_components(d)
    terms = [(ms_a, df_a)] * (var_a > 0) + [(ms_b, df_b)] * (var_b > 0)
    terms.append(((1 - len(terms)) * ms_e, df_e))
    total = sum(ms for ms, _ in terms)
    spread = sum(ms ** 2 / df for ms, df in terms if df)
    return float(max(n_seeds - 1, total ** 2 / spread)) if spread > 0 else float(n_seeds - 1)


def hierarchical_bootstrap(d: np.ndarray, n_boot: int = N_BOOT, rng_seed: int = RNG_SEED) -> np.ndarray:
    """Bootstrap estimates of `d.mean()` for a seeds x problems matrix of paired differences.

    Problems are crossed with seeds, not nested in them: every seed is evaluated on the same problems,
    and a problem where one method is better tends to be so for every seed. So `d` is split into seed
    effects, problem effects and residuals (`variance_components`); each replicate draws seeds with
    replacement (their effects), problems with replacement (theirs), and residuals, each set scaled
    so that its draws have the estimated variance of its level. Resampling rows then columns of `d`
    itself would count the residual twice (once in each level) and, with three seeds, the seed level
    at 2/3 of its size. The replicates' variance is var_a/S + var_b/P + var_e/(SP), the unbiased
    variance of the mean. Deterministic for a given `rng_seed`."""
    n_seeds = d.shape[0]
    var_a, var_b, var_e = variance_components(d)
    m = d.mean()
    rows, cols = d.mean(axis=1), d.mean(axis=0)
    levels = [(cols - m, var_b)]
    if n_seeds > 1:
        levels += [(rows - m, var_a), ((d - rows[:, None] - cols[None, :] + m).ravel(), var_e)]
    rng = np.random.default_rng(rng_seed)
    boot = np.full(n_boot, m)
    for effects, var in levels:
        size = float(np.mean(effects ** 2))
        scaled = effects * math.sqrt(var / size) if size > 0 else effects
        chunk = max(1, 2_000_000 // len(scaled))  # replicates per draw, to bound the memory of the indices
        for start in range(0, n_boot, chunk):
            rows = min(chunk, n_boot - start)
            boot[start:start + rows] += scaled[rng.integers(0, len(scaled), size=(rows, len(scaled)))].mean(axis=1)
    return boot


def minimum_detectable_effect(se: float, level: float = LEVEL, power: float = POWER, df: int | None = None) -> float:
    """The smallest true difference whose estimate clears the interval's edge with probability `power`:
    (q_{(1+level)/2} + q_power) x SE, normal quantiles, or Student's t with `df` degrees of freedom."""
    if df is None:
        q = NormalDist().inv_cdf
        return (q((1 + level) / 2) + q(power)) * se
    return (student_t_ppf((1 + level) / 2, df) + student_t_ppf(power, df)) * se


def paired_test(a: Mapping, b: Mapping, comparison: Comparison, *, n_boot: int = N_BOOT,
                rng_seed: int = RNG_SEED) -> PairedResult:
    """`a` (the method claimed better) vs `b`, each `{seed: per-problem mapping or number}`."""
    seeds, problems, d = paired_matrix(a, b, comparison.lower_is_better)
    if d.size == 0:
        return PairedResult(comparison, [])
    per_seed = [float(x) for x in d.mean(axis=1)]
    estimate = float(d.mean())
    df = math.nan
    if problems:
        se = float(hierarchical_bootstrap(d, n_boot, rng_seed).std(ddof=1))
        df = effective_df(d)
        half = student_t_ppf((1 + LEVEL) / 2, df) * se
        low, high, mde = estimate - half, estimate + half, minimum_detectable_effect(se, df=df)
    elif len(seeds) > 1:  # one number per run: Student's t over seeds
        df = len(seeds) - 1
        se = float(d[:, 0].std(ddof=1) / math.sqrt(len(seeds)))
        half = student_t_ppf((1 + LEVEL) / 2, df) * se
        low, high, mde = estimate - half, estimate + half, minimum_detectable_effect(se, df=df)
    else:
        low = high = se = mde = math.nan
    if len(seeds) < 2 or math.isnan(low):
        outcome = NOISE
    else:
        outcome = HOLDS if low > 0 else FAILS if high < 0 else NOISE
    return PairedResult(comparison, per_seed, estimate, low, high, se, mde, len(problems), outcome, df)


def judge(claims, values: dict, **kwargs) -> list[Verdict]:
    """`values[method][metric][seed]` -> one verdict per claim (a method or metric not run: not measured)."""
    def one(c: Comparison) -> PairedResult:
        a = values.get(c.better, {}).get(c.metric, {})
        b = values.get(c.worse, {}).get(c.metric, {})
        return paired_test(a, b, c, **kwargs)

    return [Verdict(claim, one(claim.primary), [one(c) for c in claim.others]) for claim in claims]


# ------------------------------------------------------------------------- Student's t, no scipy


def student_t_cdf(t: float, df: int) -> float:
    """CDF of Student's t with `df` degrees of freedom (the project does not depend on scipy).

    With x = sqrt(df) tan(theta) the density becomes c sqrt(df) cos(theta)^(df-1) on a bounded
    interval, smooth enough for Simpson's rule to reach ~1e-10 with a few hundred panels."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) * math.sqrt(df)
    end = math.atan(abs(t) / math.sqrt(df))
    n = 512
    weights = np.where(np.arange(n + 1) % 2, 4.0, 2.0)
    weights[[0, n]] = 1.0
    half = c * end / n / 3 * float(weights @ np.cos(np.linspace(0.0, end, n + 1)) ** (df - 1))
    return 0.5 + half if t >= 0 else 0.5 - half


def student_t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: Newton's method from the normal quantile on `student_t_cdf`. Above the
    median the CDF is concave, so the steps rise monotonically to the root."""
    if not 0 < q < 1:
        raise ValueError(f"quantile level must be in (0, 1), got {q}")
    if q < 0.5:
        return -student_t_ppf(1 - q, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = NormalDist().inv_cdf(q)
    for _ in range(100):
        step = (student_t_cdf(x, df) - q) / math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))
        x -= step
        if abs(step) < 1e-10 * max(1.0, abs(x)):
            break
    return x
