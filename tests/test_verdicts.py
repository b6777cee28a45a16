"""The verdict code: fed per-problem runs with known effects where a claim holds, where it is reversed,
and where it is in noise; the interval's coverage and the detectable effect's power in simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scope_bench.analysis.verdicts import (
    FAILS,
    HOLDS,
    NOISE,
    UNMEASURED,
    Comparison,
    hierarchical_bootstrap,
    judge,
    minimum_detectable_effect,
    paired_matrix,
    paired_test,
    student_t_cdf,
    student_t_ppf,
)
from scope_bench.reports.demo_report import CLAIMS, POSITIVE_CONTROL

ID = "id/pass@1"
C = Comparison("scope", "grpo", ID)


def greedy_runs(rng, base: np.ndarray, shift: float, seed_sd: float, seeds=(0, 1, 2)) -> dict:
    """`{seed: {problem: 0 or 100}}`: greedy correctness with per-problem chance `base + shift + seed effect`."""
    out = {}
    for s in seeds:
        p = np.clip(base + shift + rng.normal(0, seed_sd), 0, 1)
        out[s] = {f"p{i}": 100.0 * (rng.random() < q) for i, q in enumerate(p)}
    return out


def world(rng, effect: float, n_problems: int = 200, seed_sd: float = 0.0, seeds=(0, 1, 2)):
    """Two methods on the same problems; the first is better by `effect` (a share) in expectation."""
    base = rng.uniform(0.2, 0.7, n_problems)
    return greedy_runs(rng, base, effect, seed_sd, seeds), greedy_runs(rng, base, 0.0, seed_sd, seeds)


@pytest.mark.parametrize("effect, expected", [(0.15, HOLDS), (-0.15, FAILS), (0.0, NOISE)])
def test_claim_one_is_judged_from_per_problem_runs(effect, expected):
    scope, grpo = world(np.random.default_rng(1), effect, n_problems=300)
    (verdict, *_) = judge(CLAIMS, {"scope": {ID: scope}, "grpo": {ID: grpo}})
    r = verdict.primary
    assert verdict.claim.name == "1" and verdict.outcome == expected
    assert r.n_seeds == 3 and r.n_problems == 300
    assert r.low < r.estimate < r.high and r.low < 100 * effect < r.high
    assert r.estimate == pytest.approx(np.mean([np.mean([scope[s][p] - grpo[s][p] for p in scope[s]]) for s in scope]))
    assert "95% CI" in r.describe() and f"detectable ≥ {r.mde:.2f}" in r.describe() and expected in r.describe()


def test_seeds_that_disagree_are_noise_however_many_problems():
    # two seeds +10 points, one -12: pooled over 3 x 2000 problems this would look certain; over seeds it is not
    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.6, 2000)
    scope = {s: greedy_runs(rng, base, shift, 0.0, (s,))[s] for s, shift in ((0, 0.10), (1, 0.10), (2, -0.12))}
    grpo = greedy_runs(rng, base, 0.0, 0.0)
    r = paired_test(scope, grpo, C)
    assert r.outcome == NOISE and r.low < 0 < r.high
    assert r.per_seed[0] > 5 and r.per_seed[2] < -5
    flat = paired_test({0: {f"{s}-{p}": v for s in scope for p, v in scope[s].items()}},
                       {0: {f"{s}-{p}": v for s in grpo for p, v in grpo[s].items()}}, C)
    assert flat.high - flat.low < (r.high - r.low) / 3  # the seed level is what widens it


def test_a_shared_warm_start_pairs_with_every_seed():
    start = {None: {"a": 0.0, "b": 100.0, "c": 0.0, "d": 0.0}}
    grpo = {0: {"a": 100.0, "b": 100.0, "c": 0.0, "d": 0.0}, 1: {"a": 100.0, "b": 0.0, "c": 100.0, "d": 100.0},
            2: {"a": 100.0, "b": 100.0, "c": 100.0, "d": 0.0}}
    seeds, problems, d = paired_matrix(grpo, start)
    assert seeds == [0, 1, 2] and problems == ["a", "b", "c", "d"]
    assert d.tolist() == [[100, 0, 0, 0], [100, -100, 100, 100], [100, 0, 100, 0]]
    r = paired_test(grpo, start, POSITIVE_CONTROL.primary)
    assert r.per_seed == [25.0, 50.0, 50.0] and r.estimate == pytest.approx(125 / 3)


def test_problems_are_paired_by_id_and_missing_ones_dropped():
    a = {0: {"x": 100.0, "y": 0.0, "z": 100.0}, 1: {"x": 100.0, "y": 100.0, "z": 0.0}}
    b = {0: {"y": 0.0, "x": 0.0}, 1: {"x": 0.0, "y": 0.0}, 7: {"x": 0.0}}
    seeds, problems, d = paired_matrix(a, b)
    assert seeds == [0, 1] and problems == ["x", "y"] and d.tolist() == [[100, 0], [100, 100]]
    with pytest.raises(ValueError, match="per-problem"):
        paired_matrix(a, {0: 1.0, 1: 2.0})


def test_bootstrap_is_deterministic_for_a_seed_and_draws_problems_across_seeds():
    d = np.random.default_rng(3).normal(size=(3, 50))
    assert np.array_equal(hierarchical_bootstrap(d, 500, rng_seed=7), hierarchical_bootstrap(d, 500, rng_seed=7))
    assert not np.array_equal(hierarchical_bootstrap(d, 500, rng_seed=7), hierarchical_bootstrap(d, 500, rng_seed=8))
    # a problem effect shared by every seed (no seed effect) is as uncertain as 50 problems, not 150
    shared = np.tile(np.random.default_rng(4).normal(size=50), (3, 1))
    assert hierarchical_bootstrap(shared).std() == pytest.approx(shared[0].std() / math.sqrt(50), rel=0.1)
    # with no problem effect the seed level is rescaled to the usual standard error of a mean of 3
    seeded = np.repeat(np.array([[1.0], [2.0], [4.0]]), 50, axis=1)
    assert hierarchical_bootstrap(seeded).std() == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3), rel=0.05)


def test_interval_covers_the_true_effect_and_the_detectable_effect_has_its_power():
    """Simulated demos (3 seeds, 120 greedy problems, seed effects): the 95% interval covers the true
    difference about 95% of the time, and a true effect equal to the reported MDE is called "holds"
    about 80% of the time."""
    rng = np.random.default_rng(5)
    effect, n = 0.05, 150
    covered, mdes = 0, []
    for _ in range(n):
        a, b = world(rng, effect, n_problems=120, seed_sd=0.03)
        r = paired_test(a, b, C, n_boot=1000)
        covered += r.low <= 100 * effect <= r.high
        mdes.append(r.mde)
    assert 0.89 <= covered / n <= 0.99, covered / n
    mde = float(np.mean(mdes)) / 100
    held = sum(paired_test(*world(rng, mde, n_problems=120, seed_sd=0.03), C, n_boot=1000).outcome == HOLDS
               for _ in range(n))
    assert 0.65 <= held / n <= 0.93, (mde, held / n)


def test_per_run_metrics_use_a_t_interval_over_seeds():
    c = Comparison("scope", "grpo", "train/near_miss@1", lower_is_better=True)
    r = paired_test({0: 10.0, 1: 12.0, 2: 11.0}, {0: 30.0, 1: 31.0, 2: 33.0}, c)
    assert r.outcome == HOLDS and r.n_problems == 0 and r.per_seed == [20.0, 19.0, 22.0]
    se = np.std([20, 19, 22], ddof=1) / math.sqrt(3)
    assert r.low == pytest.approx(r.estimate - student_t_ppf(0.975, 2) * se)
    assert r.mde == pytest.approx(minimum_detectable_effect(se, df=2))
    assert "paired t over seeds" in r.describe()
    assert paired_test({0: 30.0, 1: 31.0, 2: 33.0}, {0: 10.0, 1: 12.0, 2: 11.0}, c).outcome == FAILS
    assert paired_test({0: 10.0, 1: 5.0, 2: 11.0}, {0: 9.0, 1: 8.0, 2: 10.0}, C).outcome == NOISE


def test_one_seed_gives_no_verdict_and_missing_methods_are_not_measured():
    a, b = world(np.random.default_rng(6), 0.3, n_problems=200, seeds=(0,))
    r = paired_test(a, b, C)
    assert r.low > 0 and r.outcome == NOISE and "one seed" in r.describe()
    verdicts = judge(CLAIMS, {"scope": {ID: a}, "grpo": {ID: b}})
    assert verdicts[1].outcome == UNMEASURED  # no LUFFY run
    assert "not measured" in verdicts[1].primary.describe()


def test_t_distribution():
    assert student_t_cdf(0.0, 2) == pytest.approx(0.5)
    assert student_t_cdf(1.0, 1) == pytest.approx(0.75)  # Cauchy: 1/2 + atan(1)/pi
    assert student_t_cdf(2.919986, 2) == pytest.approx(0.95, abs=1e-6)  # the one-sided 5% point, df=2
    assert student_t_cdf(-1.812461, 10) == pytest.approx(0.05, abs=1e-6)
    assert student_t_cdf(math.inf, 3) == 1.0
    assert student_t_ppf(0.975, 2) == pytest.approx(4.302653, abs=1e-5)
    assert student_t_ppf(0.8, 5) == pytest.approx(0.919544, abs=1e-5)
    assert minimum_detectable_effect(1.0) == pytest.approx(1.959964 + 0.841621, abs=1e-5)


def demo_values(rng, grpo_gain: float) -> dict:
    """Per-problem runs of the warm start (one evaluation, shared) and GRPO/SCOPE (3 seeds each)."""
    base = rng.uniform(0.2, 0.6, 300)
    start = {None: {f"p{i}": 100.0 * (rng.random() < q) for i, q in enumerate(base)}}
    values = {"start": {ID: start}}
    for method, gain in (("grpo", grpo_gain), ("scope", grpo_gain + 0.1)):
        values[method] = {ID: greedy_runs(rng, base, gain, 0.01)}
    return values


@pytest.mark.parametrize("gain, first", [
    (0.15, "**RL learns here: holds.** On-policy RL (GRPO) vs Warm start on id/pass@1"),
    (0.0, "**RL learns here: within noise. The verdicts on the paper's claims below cannot be read**")])
def test_report_opens_with_the_positive_control(tmp_path, gain, first):
    from scope_bench.reports.demo_report import START_VARIANT, VARIANTS, changes_from_start, write_demo_report

    values = demo_values(np.random.default_rng(8), gain)
    written = write_demo_report(tmp_path, values, [VARIANTS["grpo"], VARIANTS["scope"]], START_VARIANT, 4, {},
                                "preamble")
    md = (tmp_path / "report.md").read_text()
    assert md.split("\n\n")[1].startswith(first)
    assert written["control"].outcome == (HOLDS if gain else NOISE)
    assert ("Not readable" in md) == (not gain)
    assert "SCOPE vs Warm start on id/pass@1" in md  # every method against its starting checkpoint
    # Table 1's "ID vs start": each seed's pass@1 minus the warm start's, mean over seeds
    row = next(line for line in (tmp_path / "tables" / "demo-table1.md").read_text().splitlines()
               if line.startswith("| On-policy RL (GRPO) |"))
    change = changes_from_start(values)["grpo"]["id/vs-start"]
    assert f"{np.mean(list(change.values())):.1f} ±" in row.split("|")[5]
    assert np.mean(list(change.values())) == pytest.approx(written["control"].primary.estimate)


def test_per_problem_grades_are_read_from_the_eval_store_and_gaps_named(tmp_path):
    import json

    from scope_bench.reports.demo_report import eval_grades, measure_greedy, measure_samples

    (tmp_path / "summary.json").write_text(json.dumps(
        {"checkpoint": "ck", "tasks": {"synthetic": {"samples_per_problem": 2, "score": 50.0}}}))
    rows = [{"checkpoint": "ck", "task": "synthetic", "problem_id": pid, "sample": j, "correct": c, "response": r}
            for pid, j, c, r in (("a", 0, 1, "x = 1"), ("a", 1, 0, "y = 2"), ("b", 1, 1, "z"), ("b", 0, 1, "z"),
                                 ("c", 0, 1, "w"), ("c", 1, 1, "w"))]
    rows.append({**rows[0], "checkpoint": "other", "correct": 0})  # another checkpoint's line: ignored
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    grades, responses = eval_grades(tmp_path, "synthetic", ["a", "b"])  # "c": evaluated earlier, not asked for
    assert grades == {"a": [1, 0], "b": [1, 1]} and responses["a"] == ["x = 1", "y = 2"]
    assert measure_greedy(grades, "id") == {"id/pass@1": {"a": 100.0, "b": 100.0}}
    sampled = measure_samples(grades, responses, "id")
    assert sampled["id/sampled@1"] == {"a": 50.0, "b": 100.0} and sampled["id/pass@k"] == {"a": 100.0, "b": 100.0}
    assert set(sampled["id/div-score"]) <= {"a", "b"}
    with pytest.raises(ValueError, match=r"results.jsonl: problem 'd' has 0 of 2 samples"):
        eval_grades(tmp_path, "synthetic", ["a", "d"])
